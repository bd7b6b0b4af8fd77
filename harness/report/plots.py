"""The standard plots (PNG): one line per backend, units on the axes, model and device in the title."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# (file stem, metric, statistic, x axis, panel axis, y label, log-x)
PLOTS = [
    ("decode_latency_vs_batch", "decode_latency_ms", "p50", "batch_size", "prompt_len",
     "decode step latency, p50 (ms)", True),
    ("prefill_latency_vs_prompt", "prefill_latency_ms", "p50", "prompt_len", "batch_size",
     "prefill latency, p50 (ms)", True),
    ("throughput_vs_batch", "decode_throughput_tok_s", "p50", "batch_size", "prompt_len",
     "decode throughput, p50 (tokens/s)", True),
    ("peak_memory_vs_batch", "gpu_process_used_peak_mib", "mean", "batch_size", "prompt_len",
     "peak GPU memory of the process (MiB)", True),
    ("roofline_fraction_vs_batch", "decode_bandwidth_frac", "p50", "batch_size", "prompt_len",
     "decode: achieved / measured copy bandwidth", True),
]
HOST_MEMORY = ("host_rss_peak_mib", "peak host RSS (MiB)")


def _title(group: dict) -> str:
    return f"{group['model']} ({group['weights']} weights), {group['dtype']}, {group['device']}"


def make_plots(tidy: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    ok = tidy[tidy.status == "ok"]
    for keys, group in ok.groupby(["model", "weights", "dtype", "device"]):
        label = dict(zip(["model", "weights", "dtype", "device"], keys))
        tag = "_".join(str(k).replace(" ", "-") for k in (label["model"], label["dtype"], label["device"]))
        for stem, metric, stat, x, panel, ylabel, logx in PLOTS:
            data = group[group.metric == metric]
            if data.empty and metric == "gpu_process_used_peak_mib":  # CPU runs: host memory instead
                metric, ylabel = HOST_MEMORY
                data = group[group.metric == metric]
            if data.empty:
                continue
            panels = sorted(data[panel].unique())
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 3.8), squeeze=False)
            for ax, value in zip(axes[0], panels):
                part = data[data[panel] == value]
                for backend, line in part.groupby("backend"):
                    line = line.sort_values(x)
                    ax.plot(line[x], line[stat], marker="o", label=backend)
                    if stat == "p50" and {"p10", "p90"} <= set(line.columns):
                        ax.fill_between(line[x], line["p10"], line["p90"], alpha=0.2)
                ax.set_xlabel({"batch_size": "batch size", "prompt_len": "prompt length (tokens)"}[x])
                ax.set_ylabel(ylabel)
                ax.set_title(f"{panel.replace('_', ' ')} = {value}", fontsize=9)
                if logx and part[x].nunique() > 1:
                    ax.set_xscale("log", base=2)
                ticks = sorted(part[x].unique())
                ax.set_xticks(ticks)
                ax.set_xticklabels([str(t) for t in ticks])
                ax.minorticks_off()
                ax.grid(True, alpha=0.3)
            axes[0][0].legend(fontsize=8)
            fig.suptitle(_title(label), fontsize=10)
            fig.tight_layout()
            path = out_dir / f"{stem}__{tag}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written
