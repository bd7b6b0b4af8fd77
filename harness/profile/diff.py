"""The difference between two configurations' profiles of one cell, by category and by kernel (pure functions over
the ``summary.json`` of harness/profile/cell.py).

A decode step's wall time is its busy time (the sum of its kernels, per category) plus its host gap, so the
step-time difference splits exactly into the categories' differences and the gap's: ``explained_by_categories``
is the share of the wall-time difference that the categories account for (1.0: all of it is kernel time; what is
left is launch and host time).
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
    return {"wall_a": a["wall_ms_per_step"], "wall_b": b["wall_ms_per_step"], "wall_delta": wall,
            "busy_delta": b["busy_ms_per_step"] - a["busy_ms_per_step"],
            "gap_delta": b["host_gap_ms_per_step"] - a["host_gap_ms_per_step"],
            "kernels_a": a["kernels_per_step"], "kernels_b": b["kernels_per_step"],
            "categories_a": a["category_ms_per_step"], "categories_b": b["category_ms_per_step"],
            "category_delta": categories,
            "explained_by_categories": sum(categories.values()) / wall if wall else float("nan"),
            "top_kernels": changes[:top]}


def _by_name(kernels: list[dict]) -> dict[str, tuple[float, float, str]]:
    return {k["name"]: (k["us_per_step"], k["calls_per_step"], k["category"]) for k in kernels}


def format_diff(label_a: str, label_b: str, cell: tuple, d: dict[str, Any]) -> str:
    """The terminal text of one cell's decode diff."""
    ident = dict(zip(CELL_FIELDS, cell))
    lines = [f"{ident['model']} {ident['dtype']} b={ident['batch_size']} p={ident['prompt_len']} "
             f"n={ident['new_tokens']}  (decode, ms per step; B - A)",
             f"  A = {label_a}", f"  B = {label_b}",
             f"  {'':<18}{'A':>10}{'B':>10}{'B - A':>10}",
             f"  {'step (wall)':<18}{d['wall_a']:>10.3f}{d['wall_b']:>10.3f}{d['wall_delta']:>+10.3f}",
             f"  {'kernels/step':<18}{d['kernels_a']:>10.1f}{d['kernels_b']:>10.1f}"
             f"{d['kernels_b'] - d['kernels_a']:>+10.1f}"]
    for c in CATEGORIES:
        a, b = d["categories_a"].get(c, 0.0), d["categories_b"].get(c, 0.0)
        lines.append(f"  {c:<18}{a:>10.3f}{b:>10.3f}{b - a:>+10.3f}")
    gap_a = d["wall_a"] - sum(d["categories_a"].values())
    gap_b = d["wall_b"] - sum(d["categories_b"].values())
    lines.append(f"  {'host gap':<18}{gap_a:>10.3f}{gap_b:>10.3f}{d['gap_delta']:>+10.3f}")
    lines.append(f"  categories explain {d['explained_by_categories']:.0%} of the step-time difference "
                 f"(the rest is host gap)")
    lines.append("  kernels that differ most (us per step, A -> B):")
    for k in d["top_kernels"]:
        lines.append(f"    {k['delta_us']:>+9.1f}  {k['us_a']:>8.1f} -> {k['us_b']:<8.1f} [{k['category']}] "
                     f"{k['name'][:90]}")
    return "\n".join(lines)
