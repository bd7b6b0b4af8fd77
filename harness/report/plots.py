"""The standard plots (PNG): one line per configuration (backend + non-default options), units on the axes, model
and device in the title.

Each line is the median with a shaded p10-p90 band (named in the legend); the legend sits outside the axes so it
never covers data; y axes start at 0 so that heights compare honestly, unless the values span more than
``LOG_SPAN`` (a 0.3 ms engine beside a 300 ms one would be a flat line on the floor): then the y axis is
logarithmic and says so. A configuration whose cell failed or was not run is marked with a red x on the x axis at
that cell and named in the legend with its status, instead of vanishing from the plot. Each configuration keeps
one colour in every plot of a report (:func:`config_colors`).

Figures are made with matplotlib's object API (``Figure``, not pyplot), so nothing here selects a backend: a
notebook that imports this module keeps its inline display.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.measure import metrics

# (file stem, metric, statistic, x axis, panel axis, y label, log-x)
PLOTS = [
    ("decode_latency_vs_batch", metrics.DECODE_LATENCY, "p50", "batch_size", "prompt_len",
     "decode step latency, p50 (ms)", True),
    ("prefill_latency_vs_prompt", metrics.PREFILL_LATENCY, "p50", "prompt_len", "batch_size",
     "prefill latency, p50 (ms)", True),
    ("throughput_vs_batch", metrics.DECODE_THROUGHPUT, "p50", "batch_size", "prompt_len",
     "decode throughput, p50 (tokens/s)", True),
    ("peak_memory_vs_batch", metrics.GPU_PROCESS_PEAK, "mean", "batch_size", "prompt_len",
     "peak GPU memory of the process (MiB)", True),
    ("roofline_fraction_vs_batch", metrics.DECODE_BANDWIDTH_FRAC, "p50", "batch_size", "prompt_len",
     "decode: achieved / measured copy bandwidth", True),
]
HOST_MEMORY = (metrics.HOST_RSS_PEAK, "peak host RSS (MiB)")
LOG_SPAN = 10.0  # largest / smallest plotted value above which the y axis is logarithmic


def config_colors(configurations) -> dict[str, str]:
    """One colour per configuration, the same in every plot of a report (sorted labels -> matplotlib's cycle)."""
    return {c: f"C{i % 10}" for i, c in enumerate(sorted(set(configurations)))}


def wide_span(values) -> bool:
    values = pd.Series(values).dropna()
    values = values[values > 0]
    return len(values) > 1 and values.max() / values.min() > LOG_SPAN


def log_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Tick positions for a log axis from ``low`` to ``high`` (both > 0): whole decades where at least two fall
    inside, else 1-2-5 steps, else 1-1.5-2-3-5-7, else the two ends; at most ``most`` of them. matplotlib's own
    locator labels decades only (its minor labels read "6x10^1"), so a span inside one decade got no label."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in mantissas if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 2:
            return ticks[::math.ceil(len(ticks) / most)]
    return [low, high] if high > low else [low]


def plain_number(value: float) -> str:
    """A tick label: 0.15, 20, 1000, 1e-07 (not 1.5x10^-1)."""
    return f"{value:g}"


def label_log_y(ax) -> None:
    """A logarithmic y axis over what is drawn so far, its ticks from :func:`log_ticks`, labelled as plain numbers."""
    from matplotlib.ticker import NullLocator

    ax.set_yscale("log")
    ax.autoscale_view()
    low, high = ax.get_ylim()
    ticks = log_ticks(low, high)
    ax.set_yticks(ticks, [plain_number(t) for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylim(low, high)


def _title(group: dict) -> str:
    return f"{group['model']} ({group['weights']} weights), {group['dtype']}, {group['device']}"


def _failed_marks(group: pd.DataFrame, panel: str, value, x: str) -> dict[str, list]:
    """Configuration -> [(x, status)] of cells in this panel that produced no measurement."""
    part = group[(group[panel] == value) & (group.status != "ok")].drop_duplicates(["backend", x])
    marks: dict[str, list] = {}
    for row in part.itertuples(index=False):
        marks.setdefault(row.backend, []).append((getattr(row, x), row.status))
    return marks


BAND = "shaded band: p10-p90 of the samples"  # the legend entry of every p10-p90 band
X_LABELS = {"batch_size": "batch size", "prompt_len": "prompt length (tokens)"}


def make_plots(tidy: pd.DataFrame, out_dir: Path, colors: dict[str, str] | None = None) -> list[Path]:
    """Every standard plot (:data:`PLOTS`) for each model, weights, dtype and device in ``tidy``; returns the PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = colors or config_colors(tidy.backend.unique())
    written = []
    for keys, group in tidy.groupby(["model", "weights", "dtype", "device"]):
        label = dict(zip(["model", "weights", "dtype", "device"], keys))
        tag = "_".join(str(k).replace(" ", "-") for k in (label["model"], label["dtype"], label["device"]))
        ok = group[group.status == "ok"]
        for stem, metric, stat, x, panel, ylabel, logx in PLOTS:
            data = ok[ok.metric == metric]
            if data.empty and metric == metrics.GPU_PROCESS_PEAK:  # CPU runs: host memory instead
                metric, ylabel = HOST_MEMORY
                data = ok[ok.metric == metric]
            if data.empty:
                continue
            fig = plot_metric(group, data, stat, x, panel, ylabel, logx, colors, _title(label))
            path = out_dir / f"{stem}__{tag}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")  # 'tight' grows the canvas to hold the legend
            written.append(path)
    return written


def plot_metric(group: pd.DataFrame, data: pd.DataFrame, stat: str, x: str, panel: str, ylabel: str, logx: bool,
                colors: dict[str, str], title: str) -> Figure:
    """One figure: a panel per value of ``panel``, ``stat`` of ``data`` against ``x``, one line per configuration of
    ``group`` (its cells without a measurement marked), the legend outside the axes."""
    panels = sorted(group[panel].unique())
    fig = Figure(figsize=(4.2 * len(panels) + 1, 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)
    log_y = wide_span(pd.concat([data[stat]] + ([data["p10"], data["p90"]] if stat == "p50" else [])))
    legend: dict[str, object] = {}
    for ax, value in zip(axes[0], panels):
        _draw_lines(ax, data[data[panel] == value], stat, x, colors, legend)
        _mark_failed(ax, _failed_marks(group, panel, value, x), legend)
        _format_axes(ax, group, x, ylabel, f"{panel.replace('_', ' ')} = {value}", logx, log_y)
    configs = sorted(group.backend.unique())
    for backend in configs:  # a configuration with nothing at all in this plot is still named
        if not any(k == backend or k.startswith(f"{backend}: ") for k in legend):
            statuses = "/".join(sorted(set(group[group.backend == backend].status)))
            legend[f"{backend}: no measurement ({statuses})"] = Line2D([], [], linestyle="none")
    fig.suptitle(title + (f"; log y axis: values span more than {LOG_SPAN:.0f}x" if log_y else ""), fontsize=10)
    fig.tight_layout()
    order = sorted(legend, key=lambda k: (k == BAND, k not in configs))  # lines, failures, the band last
    fig.legend([legend[k] for k in order], order, loc="upper left", bbox_to_anchor=(1.0, 0.95),
               fontsize=8, frameon=False)
    return fig


def _draw_lines(ax, part: pd.DataFrame, stat: str, x: str, colors: dict[str, str], legend: dict) -> None:
    """One line per configuration, with its p10-p90 band when the statistic is the median."""
    for backend, line in part.groupby("backend"):
        line = line.sort_values(x)
        (handle,) = ax.plot(line[x], line[stat], marker="o", color=colors[backend])
        legend.setdefault(backend, handle)
        if stat == "p50" and {"p10", "p90"} <= set(line.columns):
            band = ax.fill_between(line[x], line["p10"], line["p90"], alpha=0.2, color=colors[backend])
            legend.setdefault(BAND, band)


def _mark_failed(ax, marks: dict[str, list], legend: dict) -> None:
    """A red x on the x axis at each cell without a measurement, named with its status in the legend."""
    for backend, cells in marks.items():
        xs = [c[0] for c in cells]
        # on the x axis (y=0 in axes coordinates), drawn over the frame so it stays visible
        handle = ax.scatter(xs, [0] * len(xs), marker="x", s=60, color="red", zorder=5, clip_on=False,
                            transform=ax.get_xaxis_transform())
        statuses = "/".join(sorted({c[1] for c in cells}))
        legend.setdefault(f"{backend}: {statuses} (x on the axis)", handle)


def _format_axes(ax, group: pd.DataFrame, x: str, ylabel: str, title: str, logx: bool, log_y: bool) -> None:
    """Labels, a tick at every x of the group, log-2 x where asked, and a y axis from zero unless ``log_y``."""
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if logx and group[x].nunique() > 1:
        ax.set_xscale("log", base=2)
    ticks = sorted(group[x].unique())
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    if log_y:  # values spanning orders of magnitude: equal ratios, equal distances
        label_log_y(ax)
    else:
        ax.set_ylim(bottom=0)  # heights compare honestly only from zero
    ax.grid(True, alpha=0.3)
