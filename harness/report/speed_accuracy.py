"""Speed against accuracy: one point per backend configuration (quantization scheme included in its label).

Speed is the decode step's p50 at each model's smallest grid cell (smallest batch, then shortest prompt: where
decode is most bound by reading the weights, so where weight quantization should pay); accuracy is what validation
measured against the float32 HF model (harness/accuracy/numerics.py), carried on every result row.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.measure import metrics
from harness.record.results import ACCURACY_COLUMNS

GROUP = ["model", "weights", "dtype", "device"]
MARKERS = "osD^vP*Xh<>"
SHORT = {"accuracy_max_abs_diff": "max |Δlogit|", "accuracy_mean_abs_diff": "mean |Δlogit|",
         "accuracy_kl": "KL (nats)", "accuracy_top1": "top-1", "accuracy_greedy": "greedy",
         "accuracy_perplexity": "perplexity", "reference_perplexity": "fp32 perplexity",
         "accuracy_from": "accuracy from"}


def separate_accuracy(validation: pd.DataFrame | None, model, dtype, device, label: str) -> dict | None:
    """Accuracy of one configuration from a run that validated it apart from the speed run (the last one given),
    with ``accuracy_from`` naming that run's directory; None when there is none."""
    if validation is None or validation.empty or "configuration" not in validation:
        return None
    match = validation[(validation.configuration == label) & (validation.model == model) &
                       (validation.dtype == dtype) & (validation.device == device)]
    cols = [c for c in ACCURACY_COLUMNS if c in match]
    if match.empty or not cols or match[cols].isna().all().all():
        return None
    last = match.iloc[-1]
    return {**{c: last[c] for c in cols}, "accuracy_from": Path(last.source).parent.name}


def speed_accuracy_table(tidy: pd.DataFrame, validation: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (model, dtype, device, backend label) with its decode p50 at the smallest cell and accuracy.

    A speed run made without validation takes its accuracy from a validation of the same configuration among the
    inputs (``validation``, :func:`harness.report.aggregate.validations`); ``accuracy_from`` names that run."""
    decode = tidy[(tidy.status == "ok") & (tidy.metric == metrics.DECODE_LATENCY)]
    if decode.empty or "quant" not in decode:
        return pd.DataFrame()
    rows = []
    for keys, group in decode.groupby(GROUP, dropna=False):
        smallest = group.sort_values(["batch_size", "prompt_len"]).iloc[0]
        cell = group[(group.batch_size == smallest.batch_size) & (group.prompt_len == smallest.prompt_len)]
        for backend, part in cell.groupby("backend"):
            last = part.iloc[-1]
            row = {**dict(zip(GROUP, keys)), "backend": backend, "quant": last.get("quant", "none"),
                   "batch_size": int(last.batch_size), "prompt_len": int(last.prompt_len),
                   "decode_ms_p50": float(last.p50)}
            row.update({c: last.get(c) for c in ACCURACY_COLUMNS if c in part})
            if all(pd.isna(row.get(c)) for c in ACCURACY_COLUMNS):
                row.update(separate_accuracy(validation, keys[0], keys[2], keys[3], backend) or {})
            rows.append(row)
    return pd.DataFrame(rows).sort_values(GROUP + ["decode_ms_p50"]).reset_index(drop=True)


def markdown_section(table: pd.DataFrame, markdown_table) -> list[str]:
    if table.empty:
        return []
    parts = ["## Speed vs accuracy", "",
             "Decode p50 at each model's smallest cell against the drift from the float32 HF model (validation "
             "inputs; worst of the equal-length and left-padded cases; perplexity of harness/data/perplexity.txt "
             "on checkpoints).", ""]
    cols = ["backend", "quant", "batch_size", "prompt_len", "decode_ms_p50",
            *[c for c in (*ACCURACY_COLUMNS, "accuracy_from") if c in table and table[c].notna().any()]]
    if "accuracy_from" in cols:
        parts += ["Accuracy from: the speed run itself where empty, else the named run, which validated the same "
                  "configuration (the speed run skipped validation).", ""]
    for keys, group in table.groupby(GROUP, dropna=False):
        parts += [f"### {keys[0]}, {keys[2]}, {keys[3]}", "",
                  markdown_table(group[cols].rename(columns=SHORT)), ""]
    return parts


def label_log_x(ax, values: pd.Series) -> float:
    """A log x axis over ``values`` with labelled ticks wherever the points fall; a zero (exact) value sits at the
    left edge, on a tick labelled "0 (exact)". Returns where to draw a zero. Call it before plotting: the limits it
    sets stop the points from rescaling the axis."""
    from matplotlib.ticker import NullLocator

    from harness.report.plots import log_ticks, plain_number

    floor, exact = _zero_floor(values), bool((values == 0).any())
    positive = values[values > 0]
    low = float(positive.min()) if len(positive) else floor
    high = float(positive.max()) if len(positive) else floor
    ax.set_xscale("log")
    ax.set_xlim((floor if exact else low) / 2, high * 2)
    ticks = log_ticks(low / 1.9, high * 2)  # from just left of the lowest point: inside the limits
    labels = [plain_number(t) for t in ticks]
    if exact:
        kept = [(t, lab) for t, lab in zip(ticks, labels) if t > floor * 15]
        ticks, labels = [floor, *(t for t, _ in kept)], ["0 (exact)", *(lab for _, lab in kept)]
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    return floor


def _zero_floor(values: pd.Series) -> float:
    """Where an exact (zero) drift is drawn on a log axis: 1.5 decades below the smallest non-zero value, so that
    its "0 (exact)" label keeps clear of the next tick's."""
    positive = values[values > 0]
    return float(positive.min()) / 30 if len(positive) else 1e-9


def speed_accuracy_plot(table: pd.DataFrame, out_dir: Path, colors: dict[str, str] | None = None) -> list[Path]:
    """decode latency against KL and against max |Δlogit| (log x), one labelled point per backend configuration,
    each in its colour from the report's other plots; an exact result (zero drift) sits at the left edge on a tick
    labelled "0 (exact)"."""
    from matplotlib.figure import Figure

    from harness.report.plots import config_colors, label_log_y, wide_span

    written = []
    if table.empty or "accuracy_kl" not in table or table.accuracy_kl.isna().all():
        return written
    colors = colors or config_colors(table.backend.unique())
    out_dir.mkdir(parents=True, exist_ok=True)
    for keys, group in table.groupby(GROUP, dropna=False):
        group = group.dropna(subset=["accuracy_kl"])
        if group.empty:
            continue
        # Configuration labels are long: one marker per configuration, named once in a legend under the axes.
        legend_in = 0.2 * (len(group) + 1)
        fig = Figure(figsize=(11, 4.2 + legend_in))
        axes = fig.subplots(1, 2)
        for ax, col, label in ((axes[0], "accuracy_kl", "KL(fp32 || backend), nats"),
                               (axes[1], "accuracy_max_abs_diff", "max |Δlogit| vs fp32")):
            values = group[col].astype(float)
            x = values.where(values > 0, label_log_x(ax, values))
            for i, (xi, yi, name) in enumerate(zip(x, group.decode_ms_p50, group.backend)):
                ax.scatter([xi], [yi], marker=MARKERS[i % len(MARKERS)], color=colors.get(name, f"C{i % 10}"),
                           s=45, label=name if ax is axes[0] else None)
            if wide_span(group.decode_ms_p50):
                label_log_y(ax)
            ax.set_xlabel(label)
            ax.set_ylabel(f"decode step p50 (ms), batch {group.batch_size.iloc[0]}, "
                          f"prompt {group.prompt_len.iloc[0]}")
            ax.grid(True, alpha=0.3)
        fig.legend(loc="lower center", fontsize=7, frameon=False)
        fig.suptitle(f"speed vs accuracy: {keys[0]} ({keys[1]} weights), {keys[2]}, {keys[3]}", fontsize=10)
        fig.tight_layout(rect=(0, legend_in / (4.2 + legend_in), 1, 1))
        tag = "_".join(str(k).replace(" ", "-") for k in (keys[0], keys[2], keys[3]))
        path = out_dir / f"speed_vs_accuracy__{tag}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
