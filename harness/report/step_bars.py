"""The stacked bars of the report's "Where the time goes" section: per configuration, one decode step.

Where the profile has a timeline (harness/profile/timeline.py), a bar is the *profiled* step: per category its busy
time (solid) and the waiting time before its kernels (the same colour, lighter and hatched), then the step tail, so
that the bar adds up to busy + waiting + tail − overlap, the profiled step's wall time. Without one (a run from
before the timeline split, or a backend whose own profiler gives kernel times only) a bar is the *timed* step: the
busy time by category plus the host gap (the timed step's p50 minus the busy time, drawn as 0 when negative). The
profiled step is longer than the timed one (the profiler's records cost host time), so each bar's tick label says
which of the two it shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure  # the object API selects no backend (a notebook keeps its inline display)
from matplotlib.patches import Patch

from harness.profile import cell as profile
from harness.profile.categories import CATEGORIES

# no category is grey: the greys are the step's idle parts (a lighter grey "other" would read as the host gap)
COLORS = {"gemm": "C0", "attention": "C3", "norm_elementwise": "C2", "copy": "C1", "sampling": "C4", "other": "C5",
          "tail": "0.35", "host gap": "0.85"}
TIMELINE_METRICS = [profile.PROFILED_STEP, profile.TAIL, profile.OVERLAP, *(profile.wait_metric(c) for c in CATEGORIES)]
IDLE_HATCH = "////"  # every idle part of a step is hatched: waiting, tail, host gap


@dataclass(frozen=True)
class Segment:
    """One stacked part of a bar (ms)."""

    label: str  # a category, "<category> waiting", "tail" or "host gap"
    ms: float
    color: str
    waiting: bool = False  # drawn lighter and hatched


def has_timeline(row: pd.Series) -> bool:
    """True when the row carries every timeline metric (a run and backend with the timeline split)."""
    return all(pd.notna(row.get(m)) for m in TIMELINE_METRICS)


def segments(row: pd.Series) -> list[Segment]:
    """A configuration's bar, bottom up: the profiled step split (busy, waiting per category, tail) where the row
    has a timeline, else busy by category and the host gap (negative parts drawn as 0, as "none")."""
    def ms(metric: str) -> float:
        value = row.get(metric)
        return float(value) if pd.notna(value) else 0.0

    if not has_timeline(row):
        parts = [Segment(c, max(ms(profile.category_metric(c)), 0.0), COLORS[c]) for c in CATEGORIES]
        return parts + [Segment("host gap", max(ms(profile.GAP), 0.0), COLORS["host gap"])]
    parts = []
    for c in CATEGORIES:
        parts += [Segment(c, ms(profile.category_metric(c)), COLORS[c]),
                  Segment(f"{c} waiting", ms(profile.wait_metric(c)), COLORS[c], waiting=True)]
    # overlap is time counted twice (kernels on two streams): taken off the tail, so the bar is the profiled step
    return parts + [Segment("tail", ms(profile.TAIL) - ms(profile.OVERLAP), COLORS["tail"])]


def _lighter(color: str, by: float = 0.55) -> tuple[float, float, float]:
    return tuple(c + (1 - c) * by for c in to_rgb(color))


def draw_panel(ax, part: pd.DataFrame, configs: list[str]) -> None:
    """One panel: a bar per configuration (``part`` indexed by backend; a configuration not in it has no bar)."""
    top = 0.0
    for x, config in enumerate(configs):
        if config not in part.index:
            continue
        bottom = 0.0
        for seg in segments(part.loc[config]):
            idle = seg.waiting or seg.label in ("tail", "host gap")
            ax.bar(x, seg.ms, bottom=bottom, color=_lighter(seg.color) if seg.waiting else seg.color,
                   hatch=IDLE_HATCH if idle else None, edgecolor=seg.color if seg.waiting else "0.4",
                   linewidth=0 if seg.waiting else (0.5 if idle else 0), label=seg.label)
            bottom += seg.ms
        ax.annotate(f"{bottom:.3g} ms", (x, bottom), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
        top = max(top, bottom)
    kinds = ["profiled step" if c in part.index and has_timeline(part.loc[c]) else "busy + host gap" for c in configs]
    ticks = [f"{_wrapped(c)}\n({kind})" for c, kind in zip(configs, kinds)]
    ax.set_xticks(range(len(configs)), ticks, fontsize=7)
    ax.set_ylabel("decode step (ms)")
    ax.set_ylim(0, top * 1.08 or 1.0)  # room for the totals above the bars


def legend_handles(group: pd.DataFrame) -> list[Patch]:
    """Top down as the bars stack: the tail / host gap (each where some bar has it), hatched = waiting, one colour
    per category."""
    timeline = [has_timeline(r) for _, r in group.iterrows()]
    handles = []
    if any(timeline):
        handles += [Patch(facecolor="white", edgecolor="0.3", hatch=IDLE_HATCH, linewidth=0,
                          label="hatched, lighter: waiting\n(idle before the category's kernels)"),
                    Patch(facecolor=COLORS["tail"], edgecolor="0.4", hatch=IDLE_HATCH, linewidth=0.5,
                          label="step tail (after the last kernel)")]
    if not all(timeline):
        handles.append(Patch(facecolor=COLORS["host gap"], edgecolor="0.4", hatch=IDLE_HATCH, linewidth=0.5,
                             label="host gap (timed step − busy)"))
    return handles + [Patch(facecolor=COLORS[c], label=c) for c in reversed(CATEGORIES)]


def figures(table: pd.DataFrame) -> list[tuple[str, Figure]]:
    """(file tag, figure) per (model, dtype, device): a panel at the smallest and one at the largest batch (the
    smallest prompt length)."""
    found = []
    for (model, dtype, device), group in table.groupby(["model", "dtype", "device"]):
        prompt = group.prompt_len.min()
        group = group[group.prompt_len == prompt]
        batches = sorted({group.batch_size.min(), group.batch_size.max()})
        configs = sorted(group.backend.unique())
        fig = Figure(figsize=(4.5 + 1.6 * len(configs) * len(batches), 5.2))
        axes = fig.subplots(1, len(batches), squeeze=False)
        for ax, batch in zip(axes[0], batches):
            draw_panel(ax, group[group.batch_size == batch].set_index("backend"), configs)
            ax.set_title(f"batch {batch}, prompt {prompt}")
        fig.legend(handles=legend_handles(group), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(f"Where a decode step's time goes: {model}, {dtype}, {device}", fontsize=10)
        fig.tight_layout()
        found.append(("_".join(str(k).replace(" ", "-").replace("/", "-") for k in (model, dtype, device)), fig))
    return found


def stacked_bars(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (model, dtype, device) of :func:`figures`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for tag, fig in figures(table):
        path = out_dir / f"where_time_goes_{tag}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
    return written


def _wrapped(label: str, width: int = 30) -> str:
    """A configuration label in full, on lines of about ``width`` characters: the backend's name, then its options
    (``name[a=1,b=2]``) broken after a comma. Truncating would make configurations that differ in a late option
    look alike."""
    name, _, options = label.partition("[")
    if not options:
        return label
    lines, line = [name + "["], ""
    for option in options.rstrip("]").split(","):
        piece = option + ","
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line.rstrip(",") + "]")
    return "\n".join(lines)
