"""What runs after a cell's timed iterations, never inside them: the profile of the step that was timed, the
attention-kernel label read from it, and the energy per phase.

- ``measure.profile=true``: one prefill and ``measure.profile_steps`` decode steps are profiled, each step marked
  as the timed loop measures it (the prefill with its first token on the host; a decode step with its greedy token
  taken to the host and fed back); ``<run dir>/profile/b{B}_p{P}_n{N}/`` gets ``summary.json`` (per phase:
  kernels, busy time, host gap and time per category per step, the timeline split of the profiled steps into
  busy, waiting and tail (harness/profile/timeline.py), the attention kernel, every kernel), ``kernels.csv`` and a
  gzipped Chrome/Perfetto trace per phase; results.csv gets the ``profile_*`` metrics.
- otherwise one prefill and one decode step are profiled for the label only (nothing written but the label).

Either way the cell's ``backend_info`` says which attention kernel the profiled steps ran
(``attention_kernel_decode`` / ``attention_kernel_prefill``), whatever the backend's load-time probe claimed (kept
as ``*_probe``). The profiled steps follow the timed ones with the same compiled function, captured graph or
session, so the label is that of the timed step.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import progress
from harness.accuracy.inputs import random_prompt_ids
from harness.measure.instrument import take_token
from harness.profile import capture
from harness.profile.capture import PhaseProfile, profile_phase
from harness.profile.categories import CATEGORIES, categorizer
from harness.profile.energy import UNITS as ENERGY_UNITS
from harness.profile.energy import phase_energy
from harness.record.results import atomic_write_text

PROFILE_DIR = "profile"


def phase_metric(phase: str, stem: str) -> str:
    """A profile metric's name: a decode metric is a mean per step (``_per_step``); a prefill is one step."""
    return f"profile_{phase}_{stem}" + ("_per_step" if phase == "decode" else "")


KERNELS = phase_metric("decode", "kernels")
BUSY = phase_metric("decode", "busy_ms")
GAP = phase_metric("decode", "host_gap_ms")
PREFILL_KERNELS = phase_metric("prefill", "kernels")
PREFILL_BUSY = phase_metric("prefill", "busy_ms")
# The timeline split of the profiled steps (harness/profile/timeline.py): per step, the profiled wall time is the
# categories' busy and waiting time plus the tail, less the overlap. Absent where the phase has no timeline.
PROFILED_STEP = phase_metric("decode", "step_ms")
TAIL = phase_metric("decode", "step_tail_ms")
OVERLAP = phase_metric("decode", "overlap_ms")
PREFILL_PROFILED_STEP = phase_metric("prefill", "step_ms")
PREFILL_TAIL = phase_metric("prefill", "step_tail_ms")
PREFILL_OVERLAP = phase_metric("prefill", "overlap_ms")


def category_metric(category: str, phase: str = "decode") -> str:
    """The busy time of a category's kernels per decode step (or in the prefill)."""
    return phase_metric(phase, f"{category}_ms")


def wait_metric(category: str, phase: str = "decode") -> str:
    """The idle time before a category's kernels per decode step, or in the prefill (the timeline split's waiting
    time)."""
    return phase_metric(phase, f"{category}_wait_ms")


UNITS = {KERNELS: "kernels/step", BUSY: "ms/step", GAP: "ms/step", PREFILL_KERNELS: "kernels",
         PREFILL_BUSY: "ms", PROFILED_STEP: "ms/step", TAIL: "ms/step", OVERLAP: "ms/step",
         PREFILL_PROFILED_STEP: "ms", PREFILL_TAIL: "ms", PREFILL_OVERLAP: "ms",
         **{category_metric(c): "ms/step" for c in CATEGORIES}, **{wait_metric(c): "ms/step" for c in CATEGORIES},
         **{category_metric(c, "prefill"): "ms" for c in CATEGORIES},
         **{wait_metric(c, "prefill"): "ms" for c in CATEGORIES},
         **ENERGY_UNITS}


def profile_path(run_dir: Path, batch: int, prompt_len: int, new_tokens: int) -> Path:
    return Path(run_dir) / PROFILE_DIR / f"b{batch}_p{prompt_len}_n{new_tokens}"


@dataclass
class AfterTiming:
    """What :func:`after_timing` found: extra metrics for the cell's rows and the labels for its backend_info."""

    metrics: dict[str, float] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)

    def metric_rows(self) -> list[tuple]:
        from harness.measure.stats import summarize

        return [(name, UNITS[name], summarize([value])) for name, value in self.metrics.items()]

    def relabel(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The cell's row context with the profiled labels in its backend_info (the probe's kept as *_probe)."""
        if not self.labels:
            return extra
        info = json.loads(extra.get("backend_info") or "{}")
        with_labels(info, self.labels)
        return {**extra, "backend_info": json.dumps(info)}


LABEL_KEYS = ("attention_kernel_prefill", "attention_kernel_decode", "profile_source", "profile_error")


def adopt_labels(info: dict[str, Any], rows: list[dict]) -> None:
    """The labels of a cell measured in another process (its rows' backend_info) into this process's backend_info
    (run.json's, with isolation=process)."""
    try:
        cell = json.loads(rows[0].get("backend_info") or "{}")
    except (TypeError, ValueError):
        return
    with_labels(info, {key: cell[key] for key in LABEL_KEYS if key in cell})


def with_labels(info: dict[str, Any], labels: dict[str, Any]) -> None:
    """Put the profiled labels into a backend_info dict, keeping what the backend's probe said as ``*_probe``."""
    for key, value in labels.items():
        if key in info and info[key] != value and f"{key}_probe" not in info:
            info[f"{key}_probe"] = info[key]
        info[key] = value


def after_timing(job, handle, batch: int, prompt_len: int, samples) -> AfterTiming:
    """Profile (full, or label only) and energy per phase of a cell whose timed iterations are over. A profile
    that fails is reported and recorded (``profile_error``), not fatal: the timed samples stand."""
    result = AfterTiming()
    try:
        prefill, decode = profile_cell(job, handle, batch, prompt_len, samples)
        result.labels = {"attention_kernel_prefill": prefill.attention_kernel or "none seen",
                         "attention_kernel_decode": decode.attention_kernel or "none seen",
                         "profile_source": decode.source}
        with_labels(job.info, result.labels)  # run.json's backend_info: the labels of the last cell profiled
        if job.cfg.measure.profile:
            result.metrics.update(profile_metrics(prefill, decode, samples))
    except Exception as exc:  # noqa: BLE001 - the profile explains the timing; it must not discard it
        progress.say(f"b={batch} p={prompt_len}: profile failed: {type(exc).__name__}: {exc}")
        result.labels = {"profile_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    result.metrics.update(phase_energy(job, handle, batch, prompt_len, samples))
    return result


def profile_cell(job, handle, batch: int, prompt_len: int, samples) -> tuple[PhaseProfile, PhaseProfile]:
    """Profile one prefill and the decode steps after it; with measure.profile, write the cell's profile dir."""
    measure, n = job.cfg.measure, job.cfg.grid.new_tokens
    full = bool(measure.profile)
    steps = min(measure.profile_steps if full else 1, n)  # the cache has room for n steps after the prompt
    out = profile_path(job.out_dir, batch, prompt_len, n) if full else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ids = random_prompt_ids(job.hf_config, batch, prompt_len, job.cfg.seed).to(job.device)  # [B, P]
    category_of = categorizer(lambda name: handle.kernel_category(name=name))
    state: dict[str, Any] = {}

    # Each marked step is what the timed loop times (harness/measure/instrument.py): the prefill up to its first token
    # on the host, a decode step up to its token on the host; the token's trip ends each step in a synchronisation, so
    # no step's kernels run into the next one's marks.
    def run_prefill():
        with capture.step():
            _, state["tokens"] = take_token(handle.prefill(input_ids=ids, prompt_lens=None), job.device)

    def run_decode():
        tokens = state["tokens"]
        for _ in range(steps):
            with capture.step():
                _, tokens = take_token(handle.decode_step(tokens=tokens), job.device)  # [B, 1] through the host

    handle.reset_kv()
    prefill = profile_phase("prefill", run_prefill, 1, job.device, handle, category_of,
                            out / "prefill.trace.json.gz" if out else None)
    decode = profile_phase("decode", run_decode, steps, job.device, handle, category_of,
                           out / "decode.trace.json.gz" if out else None)
    if out is not None:
        write_profile(out, job.identity(batch, prompt_len), prefill, decode, samples)
    return prefill, decode


def phase_summary(phase: PhaseProfile, wall_ms: float) -> dict[str, Any]:
    """The machine-readable summary of one phase, per step (a prefill is one step)."""
    return {"steps_profiled": phase.steps, "source": phase.source, "kernels_per_step": phase.kernels_per_step,
            "busy_ms_per_step": phase.busy_ms_per_step, "wall_ms_per_step": wall_ms,
            "host_gap_ms_per_step": wall_ms - phase.busy_ms_per_step,
            "category_ms_per_step": phase.category_ms_per_step(), "attention_kernel": phase.attention_kernel,
            "timeline": phase.timeline.as_dict() if phase.timeline is not None else None,
            "timeline_note": phase.timeline_note, "kernels": phase.table()}


def write_profile(out: Path, identity: dict, prefill: PhaseProfile, decode: PhaseProfile, samples) -> None:
    import pandas as pd

    summary = {"identity": identity,
               "wall_from": "the p50 of the cell's prefill_latency_ms and decode_latency_ms (timed samples)",
               "prefill": phase_summary(prefill, statistics.median(samples.prefill_ms)),
               "decode": phase_summary(decode, timed_decode_step_ms(samples))}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    rows = [{"phase": p.phase, **row} for p in (prefill, decode) for row in p.table()]
    atomic_write_text(out / "kernels.csv", pd.DataFrame(rows).to_csv(index=False))


def timed_decode_step_ms(samples) -> float:
    """The timed decode step as ``decode_latency_ms`` reports it (its p50: the median over iterations of each
    iteration's median step), so that the host gap and the report's step column are one number."""
    from harness.measure.stats import summarize_steps

    steps = len(samples.decode_ms) // max(samples.iterations, 1)
    return summarize_steps(samples.decode_per_iteration(steps), ci=False)["p50"]


def profile_metrics(prefill: PhaseProfile, decode: PhaseProfile, samples) -> dict[str, float]:
    wall = timed_decode_step_ms(samples)
    metrics = {KERNELS: decode.kernels_per_step, BUSY: decode.busy_ms_per_step, GAP: wall - decode.busy_ms_per_step,
               PREFILL_KERNELS: prefill.kernels_per_step, PREFILL_BUSY: prefill.busy_ms_per_step}
    for phase in (decode, prefill):
        metrics.update({category_metric(c, phase.phase): ms for c, ms in phase.category_ms_per_step().items()})
        metrics.update(timeline_metrics(phase))
    return metrics


def timeline_metrics(phase: PhaseProfile) -> dict[str, float]:
    """A phase's timeline split per step: profiled step, tail, overlap and each category's waiting time (none
    without a timeline: absent, not 0)."""
    split = phase.timeline
    if split is None:
        return {}
    name = phase.phase
    return {phase_metric(name, "step_ms"): split.wall_ms, phase_metric(name, "step_tail_ms"): split.tail_ms,
            phase_metric(name, "overlap_ms"): split.overlap_ms,
            **{wait_metric(c, name): split.wait_ms[c] for c in CATEGORIES}}
