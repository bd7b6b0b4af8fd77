"""Hydra callback: at the end of a multirun, aggregate every job's results into <sweep dir>/report/ and take the
sweep's exit status from the jobs' run.json (jobs of parallel launchers ran in other processes); print one table
over every job (harness/report/summary.py)."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback


class AggregateOnMultirunEnd(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        from harness import progress
        from harness.errors import UserError
        from harness.report.cli import build_report
        from harness.run import multirun

        sweep_dir = Path(config.hydra.sweep.dir)
        multirun.outcome["exit_code"] = multirun.sweep_exit_code(sweep_dir)
        from harness.report.summary import print_multirun_summary

        print_multirun_summary(sweep_dir)  # one table over every job, each named in full
        try:
            written = build_report([str(sweep_dir)], sweep_dir / "report", config.report.baseline,
                                   config.report.plots)
            progress.say(f"multirun report: {written['report']} (comparison: {written['comparison']})")
        except UserError as err:  # e.g. every job was task=validate: nothing to aggregate
            progress.say(f"multirun report skipped: {err.problem}")
