"""Checks of a composed config that go beyond ranges: numbers that are NaN (every comparison with NaN is false, so
``measure.cell_timeout_s=nan`` silently turned the timeout off), a sampling period that would busy-loop, a GGUF
model given together with a checkpoint directory, and disks that are already full before anything runs.

Each refusal is a :class:`UserError`: one line with the fix, exit 2, nothing written. Called from
:func:`harness.config.schema.check_config`.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from harness.errors import UserError

MIN_FREE_BYTES = 1 << 20  # below 1 MiB free a run cannot write its first cell: refuse up front, not mid-way
_NUMBERS = ("measure.min_seconds", "measure.max_seconds", "measure.cell_timeout_s", "measure.load_timeout_s",
            "measure.target_rel_ci", "measure.memory_interval_ms", "pin.wait_s")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None) if node is not None else None
    return node


def check_numbers(cfg) -> None:
    for key in _NUMBERS:
        value = _get(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}={value} is not a finite number", f"give {key} a number (or null where allowed)")
    interval = _get(cfg, "measure.memory_interval_ms")
    if interval is not None and interval <= 0:
        raise UserError(f"measure.memory_interval_ms={interval} is not positive (the sampler would spin)",
                        "use measure.memory_interval_ms=10 (any number of milliseconds > 0)")


def check_model_source(model_cfg) -> None:
    if model_cfg.gguf and model_cfg.path:
        raise UserError(f"both model.gguf={model_cfg.gguf} and model.path={model_cfg.path} are given",
                        "give one model source: model.gguf=FILE or model.path=DIR")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (where a directory to be created will live)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(cfg) -> None:
    """Refuse a run whose output or artifact-cache disk is already full."""
    from harness.model.artifacts import default_cache_dir

    places = {"output directory": Path(getattr(cfg, "output_dir", None) or "outputs"),
              "artifact cache (cache_dir)": Path(getattr(cfg, "cache_dir", None) or default_cache_dir())}
    for what, place in places.items():
        try:
            usage = shutil.disk_usage(_existing(place))
        except OSError:
            continue  # unreadable: the write itself will say why
        free = usage.free
        if usage.total == 0:  # a pseudo filesystem (/proc, /sys) has no size: the write check says why it fails
            continue
        if free < MIN_FREE_BYTES:
            raise UserError(f"the disk of the {what} {place} is full ({free / 2**20:.2f} MiB free)",
                            "free some space there, or point it at another disk")


def check_inputs(cfg) -> None:
    check_numbers(cfg)
    check_model_source(cfg.model)
    check_free_space(cfg)


def check_repeats(measure) -> None:
    repeats = measure.repeats
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"measure.repeats={repeats} is below 1",
                        "use measure.repeats=1 (one run) or more, e.g. measure.repeats=3 for verdicts between runs")
    repeat = measure.repeat
    if repeat is not None and not 0 <= repeat < repeats:
        raise UserError(f"measure.repeat={repeat} is not one of the {repeats} repeats (0..{repeats - 1})",
                        "leave measure.repeat unset: measure.repeats=K runs them all")
