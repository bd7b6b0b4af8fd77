"""Every timed sample of a cell, kept beside results.csv so that any statistic can be recomputed and two runs can
be compared by a test on their samples (``enginebench-report compare``), not by their summaries.

One NumPy ``.npz`` file per cell in ``<run dir>/samples/``, written atomically when the cell finishes:

- ``prefill_ms`` [iterations], ``e2e_ms`` [iterations]: one value per timed iteration;
- ``decode_ms`` [iterations, new_tokens]: every decode step, one row per iteration;
- ``prefill_device_ms`` [iterations], ``decode_device_ms`` [iterations, new_tokens]: the same calls on the device
  clock (harness/measure/instrument.py), where the first three are the sustained time the host sees;
- ``meta``: JSON text with the cell's identity, the machine state while it was timed and ``timing``.

``timing`` says what ``prefill_ms`` / ``decode_ms`` hold: ``sustained`` (this layout), or ``device-unsynced`` for
files written before the two clocks: CUDA events around hook calls with the host free to run ahead, no device
series. Such files still read (``read_cell_samples`` gives ``timing`` and no device arrays).

The units a test compares (independent samples: prefill and e2e per iteration, decode as the median step time of
each iteration) are taken from these arrays by harness/measure/sample_units.py.
"""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.measure import metrics
from harness.measure.sample_units import DEVICE_SERIES
from harness.record.results import atomic_write_bytes

SAMPLES_DIR = "samples"
SUSTAINED = "sustained"
OLD_TIMING = "device-unsynced"  # files without a ``timing`` entry in their meta


def samples_path(run_dir: Path, batch: int, prompt_len: int, new_tokens: int, repeat: int = 0) -> Path:
    """``b1_p32_n32.npz``; a later repeat of the cell (measure.repeats) adds ``_r<repeat>``."""
    suffix = f"_r{repeat}" if repeat else ""
    return Path(run_dir) / SAMPLES_DIR / f"b{batch}_p{prompt_len}_n{new_tokens}{suffix}.npz"


def write_cell_samples(run_dir: Path, identity: dict[str, Any], prefill_ms, decode_ms, e2e_ms,
                       machine_state: dict[str, Any] | None = None, prefill_device_ms=(),
                       decode_device_ms=()) -> Path:
    """Atomically write one cell's samples (decode series: one list of step times per iteration)."""
    path = samples_path(run_dir, identity["batch_size"], identity["prompt_len"], identity["new_tokens"],
                        int(identity.get("repeat") or 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    meta = json.dumps({"identity": identity, "machine_state": machine_state or {}, "timing": SUSTAINED},
                      default=str)
    arrays = {"prefill_ms": prefill_ms, "decode_ms": decode_ms, "e2e_ms": e2e_ms,
              DEVICE_SERIES[metrics.PREFILL_DEVICE]: prefill_device_ms,
              DEVICE_SERIES[metrics.DECODE_DEVICE]: decode_device_ms}
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()},
                        meta=np.array(meta))
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_cell_samples(run_dir: Path, batch: int, prompt_len: int, new_tokens: int,
                      repeat: int = 0) -> dict[str, Any] | None:
    """The arrays and meta of one cell (``timing``: see the module docstring), or None when the run kept no
    samples for it (older runs) or its file is damaged (said once on stderr: a torn or foreign file costs that
    cell's samples, not the report).

    ``allow_pickle=False``: a ``.npz`` holding pickled objects is refused, never unpickled."""
    path = samples_path(run_dir, batch, prompt_len, new_tokens, repeat)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: np.asarray(data[k], dtype=np.float64)
                   for k in ("prefill_ms", "decode_ms", "e2e_ms", *DEVICE_SERIES.values()) if k in data}
            out["meta"] = json.loads(str(data["meta"]))
        if not {"prefill_ms", "decode_ms", "e2e_ms"} <= set(out) or not isinstance(out["meta"], dict):
            raise ValueError("not an enginebench samples file (arrays or meta missing)")
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        _say_damaged(path, exc)
        return None
    out["timing"] = out["meta"].get("timing", OLD_TIMING)
    return out


_told: set[Path] = set()


def _say_damaged(path: Path, exc: Exception) -> None:
    if path not in _told:
        _told.add(path)
        print(f"enginebench: skipped the damaged samples file {path} ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}); that cell is reported without its samples",
              file=sys.stderr, flush=True)
