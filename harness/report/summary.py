"""The table a multirun prints at its end: every job's end-of-job table (harness/record/summary.py) combined into
one, each job numbered and named in full (its directory) in a legend. The multirun callback prints it
(harness/report/callback.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.record.results import read_results_frame
from harness.record.summary import print_table, summary_table
from harness.run.multirun import job_dirs


def print_multirun_summary(sweep_dir: Path) -> None:
    """One combined table over every job of a multirun; each job named in full (its directory) in a legend."""
    frames = []
    for d in job_dirs(sweep_dir):
        if (d / "results.csv").exists():
            tidy, _ = read_results_frame(d / "results.csv")
            frames.append(tidy.assign(backend=d.name))
    if not frames:
        return
    tidy = pd.concat(frames, ignore_index=True)
    labels = list(dict.fromkeys(tidy.backend))
    number = {label: f"#{i + 1}" for i, label in enumerate(labels)}
    print(f"\nall {len(labels)} jobs of this multirun ({sweep_dir}):", flush=True)
    for label in labels:
        print(f"  {number[label]} = {label}", flush=True)
    print_table(summary_table(tidy.assign(backend=tidy.backend.map(number)), label_column="job"), "")
