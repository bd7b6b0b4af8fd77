"""The difference between two configurations' profiles of one cell, by category and by kernel (pure functions over
the ``summary.json`` of harness/profile/cell.py).

Two accounts of the timed step-time difference (B - A, ms per decode step):

- busy only: the step's wall time is its kernels' busy time (per category) plus its host gap, so the difference
  splits exactly into the categories' busy differences and the gap's;
- busy + waiting: the profiled steps' timeline split (harness/profile/timeline.py) charges the device's idle time
  before each kernel to the kernel's category, so each category has busy + waiting time and only the step's tail
  is left over. Its residual against the *timed* difference is the tail's difference plus the difference in what
  the profiler added to each step (profiled wall minus timed wall) minus the overlap's.

The explained share of either account is ``max(0, 1 - |residual| / |step difference|)``: the categories explain
the difference to the extent that what they leave over is small against it. A signed share (the categories'
differences summed, over the step's) exceeds 100 % when the residual runs the other way (the categories
over-explain) and says nothing bounded; a sum of absolute differences exceeds 100 % whenever categories move in
opposite directions, which is no failure to explain. ``1 - |residual| / |difference|`` is at most 100 %, reaches
it only when the residual is zero, and is at least 90 % exactly when the residual is at most a tenth of the
difference. The signed shares are kept beside it (``*_signed``) so an over-explanation stays visible.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.profile.categories import CATEGORIES

CELL_FIELDS = ("model", "weights", "dtype", "quant", "device", "batch_size", "prompt_len", "new_tokens")


def read_summaries(root: Path) -> dict[tuple, dict]:
    """Every profile summary under ``root`` (a run or multirun directory), by cell; each summary gets ``_run_dir``."""
    found = {}
    for path in sorted(Path(root).rglob("profile/*/summary.json")):
        if "report" in path.parts:
            continue
        summary = json.loads(path.read_text())
        summary["_run_dir"] = str(path.parents[2])
        found[cell_of(summary["identity"])] = summary
    return found


def cell_of(identity: dict) -> tuple:
    return tuple(str(identity.get(k, "")) for k in CELL_FIELDS)


def diff_phase(a: dict, b: dict, top: int = 5) -> dict[str, Any]:
    """B minus A for one phase's summaries (ms per step), with the ``top`` kernels whose time differs most."""
    categories = {c: b["category_ms_per_step"].get(c, 0.0) - a["category_ms_per_step"].get(c, 0.0)
                  for c in CATEGORIES}
    wall = b["wall_ms_per_step"] - a["wall_ms_per_step"]
    kernels_a = _by_name(a["kernels"])
    kernels_b = _by_name(b["kernels"])
    changes = []
    for name in set(kernels_a) | set(kernels_b):
        us_a, us_b = kernels_a.get(name, (0.0, 0.0, "")), kernels_b.get(name, (0.0, 0.0, ""))
        changes.append({"name": name, "category": us_a[2] or us_b[2], "us_a": us_a[0], "us_b": us_b[0],
                        "calls_a": us_a[1], "calls_b": us_b[1], "delta_us": us_b[0] - us_a[0]})
    changes.sort(key=lambda c: -abs(c["delta_us"]))
    result = {"wall_a": a["wall_ms_per_step"], "wall_b": b["wall_ms_per_step"], "wall_delta": wall,
              "busy_delta": b["busy_ms_per_step"] - a["busy_ms_per_step"],
              "gap_delta": b["host_gap_ms_per_step"] - a["host_gap_ms_per_step"],
              "kernels_a": a["kernels_per_step"], "kernels_b": b["kernels_per_step"],
              "categories_a": a["category_ms_per_step"], "categories_b": b["category_ms_per_step"],
              "category_delta": categories,
              "explained_by_busy": explained_share(wall, wall - sum(categories.values())),
              "explained_by_busy_signed": signed_share(wall, sum(categories.values())),
              "top_kernels": changes[:top]}
    result["gap_share_signed"] = signed_share(wall, result["gap_delta"])
    result.update(diff_timelines(a.get("timeline"), b.get("timeline"), wall,
                                 (a["wall_ms_per_step"], b["wall_ms_per_step"])))
    return result


def diff_timelines(a: dict | None, b: dict | None, wall_delta: float,
                   timed_walls: tuple[float, float] | None = None) -> dict[str, Any]:
    """The busy + waiting account of ``wall_delta`` (the timed step difference) from two phases' timeline splits;
    ``{"timeline_a": None, ...}`` where either side has none (a profile without step marks, or one from before
    them). With ``timed_walls`` (A's and B's timed steps), what the profiler added to each side's step; when the
    two additions differ by more than a tenth of the difference, the waiting split is marked indicative only: the
    profiler's added time lands as waiting, so it no longer says where the *timed* steps wait."""
    if not a or not b:
        return {"timeline_a": a or None, "timeline_b": b or None, "explained_by_busy_and_wait": None}
    busy_wait = {c: (b["busy_ms_per_step"][c] + b["wait_ms_per_step"][c])
                 - (a["busy_ms_per_step"][c] + a["wait_ms_per_step"][c]) for c in CATEGORIES}
    added = None if timed_walls is None else (a["wall_ms_per_step"] - timed_walls[0],
                                              b["wall_ms_per_step"] - timed_walls[1])
    return {"timeline_a": a, "timeline_b": b, "busy_wait_delta": busy_wait, "profiler_added": added,
            "waiting_split_reliable": added is None or abs(added[1] - added[0]) <= 0.1 * abs(wall_delta),
            "profiled_delta": b["wall_ms_per_step"] - a["wall_ms_per_step"],
            "tail_delta": b["tail_ms_per_step"] - a["tail_ms_per_step"],
            "overlap_delta": b["overlap_ms_per_step"] - a["overlap_ms_per_step"],
            "explained_by_busy_and_wait": explained_share(wall_delta, wall_delta - sum(busy_wait.values())),
            "explained_by_busy_and_wait_signed": signed_share(wall_delta, sum(busy_wait.values()))}


def explained_share(difference: float, residual: float) -> float:
    """``max(0, 1 - |residual| / |difference|)`` (module docstring); NaN when there is no difference."""
    return max(0.0, 1.0 - abs(residual) / abs(difference)) if difference else float("nan")


def signed_share(difference: float, accounted: float) -> float:
    """The categories' summed differences over the step difference (above 1: they over-explain it)."""
    return accounted / difference if difference else float("nan")

def _by_name(kernels: list[dict]) -> dict[str, tuple[float, float, str]]:
    return {k["name"]: (k["us_per_step"], k["calls_per_step"], k["category"]) for k in kernels}


def format_diff(label_a: str, label_b: str, cell: tuple, d: dict[str, Any]) -> str:
    """The terminal text of one cell's decode diff."""
    ident = dict(zip(CELL_FIELDS, cell))
    ta, tb = d.get("timeline_a"), d.get("timeline_b")
    lines = [f"{ident['model']} {ident['dtype']} b={ident['batch_size']} p={ident['prompt_len']} "
             f"n={ident['new_tokens']}  (decode, ms per step; B - A)",
             f"  A = {label_a}", f"  B = {label_b}",
             f"  {'':<20}{'A':>9}{'B':>9}{'B - A':>9}" + (f"{'wait A':>9}{'wait B':>9}{'B - A':>9}"
                                                          f"{'Δ busy+wait':>12}" if ta and tb else ""),
             f"  {'step (timed p50)':<20}{d['wall_a']:>9.3f}{d['wall_b']:>9.3f}{d['wall_delta']:>+9.3f}"]
    if ta and tb:
        lines.append(f"  {'step (profiled)':<20}{ta['wall_ms_per_step']:>9.3f}{tb['wall_ms_per_step']:>9.3f}"
                     f"{d['profiled_delta']:>+9.3f}")
    lines.append(f"  {'kernels/step':<20}{d['kernels_a']:>9.1f}{d['kernels_b']:>9.1f}"
                 f"{d['kernels_b'] - d['kernels_a']:>+9.1f}")
    for c in CATEGORIES:
        a, b = d["categories_a"].get(c, 0.0), d["categories_b"].get(c, 0.0)
        line = f"  {c:<20}{a:>9.3f}{b:>9.3f}{b - a:>+9.3f}"
        if ta and tb:
            wa, wb = ta["wait_ms_per_step"][c], tb["wait_ms_per_step"][c]
            line += f"{wa:>9.3f}{wb:>9.3f}{wb - wa:>+9.3f}{d['busy_wait_delta'][c]:>+12.3f}"
        lines.append(line)
    if ta and tb:
        lines.append(f"  {'step tail':<20}{ta['tail_ms_per_step']:>9.3f}{tb['tail_ms_per_step']:>9.3f}"
                     f"{d['tail_delta']:>+9.3f}")
        if max(abs(ta["overlap_ms_per_step"]), abs(tb["overlap_ms_per_step"])) > 1e-6:  # not float noise
            lines.append(f"  {'overlap (twice)':<20}{ta['overlap_ms_per_step']:>9.3f}"
                         f"{tb['overlap_ms_per_step']:>9.3f}{d['overlap_delta']:>+9.3f}")
    gap_a = d["wall_a"] - sum(d["categories_a"].values())
    gap_b = d["wall_b"] - sum(d["categories_b"].values())
    lines.append(f"  {'host gap':<20}{gap_a:>9.3f}{gap_b:>9.3f}{d['gap_delta']:>+9.3f}")
    lines.append(f"  busy time explains {percent(d['explained_by_busy'])} of the timed step difference; by category "
                 f"and host gap: the kernel categories' changes {percent(d['explained_by_busy_signed'])}, the host "
                 f"gap's (timed step - busy: the GPU idle, waiting for the host) {percent(d.get('gap_share_signed'))}")
    if ta and tb:
        caveat = "" if d.get("waiting_split_reliable", True) else (
            f"; indicative only: the profiler added {d['profiler_added'][0]:.2f} ms to A's step and "
            f"{d['profiler_added'][1]:.2f} ms to B's")
        lines.append(f"  busy + waiting explains {percent(d['explained_by_busy_and_wait'])} (their changes sum to "
                     f"{percent(d['explained_by_busy_and_wait_signed'])}; the rest is the step tail and the "
                     f"profiler's added time{caveat})")
    else:
        lines.append("  busy + waiting: no timeline split on both sides (a profile without step marks)")
    lines.append("  kernels that differ most (us per step, A -> B):")
    for k in d["top_kernels"]:
        lines.append(f"    {k['delta_us']:>+9.1f}  {k['us_a']:>8.1f} -> {k['us_b']:<8.1f} [{k['category']}] "
                     f"{k['name'][:90]}")
    return "\n".join(lines)


def percent(value: float | None) -> str:
    """A share as ``71 %``; ``n/a`` for none (no timeline) or NaN (no difference to explain)."""
    return "n/a" if value is None or value != value else f"{value * 100:.0f} %"
