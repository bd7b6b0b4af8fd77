"""The suite's own memory report: the peak resident memory of every process the run used, printed at its end.

Each pytest process reads ``ru_maxrss`` (kB on Linux) for itself (RUSAGE_SELF: the models, sessions and networks
that tests build in-process) and for its children (RUSAGE_CHILDREN: the largest process it started and waited for,
that process's own waited-for descendants included: the command lines tests start, their isolation workers, the
notebook's kernel; a forked child counts the pages it still shares with its parent). After every test it notes
which test raised either peak, so a regression names its test. Under pytest-xdist each worker measures itself and
hands its numbers to the controller (``workeroutput``), which prints one line per worker.
A peak above the per-process budget is flagged in the summary."""
from __future__ import annotations

import resource
import sys

import pytest

BUDGET_MB = 8 * 1024  # what one test process may hold: the README's test command runs on 8 GB per process


def _peaks_mb() -> tuple[float, float]:
    """(this process, its largest finished child) peak RSS in MB; Linux reports ru_maxrss in kB. The command
    lines forked by the warm interpreter (warm_python.py) are its children, not ours: it reports their peaks."""
    warm = sys.modules.get("warm_python")
    served_kb = warm.CHILD_PEAK_KB[0] if warm is not None else 0
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, served_kb) / 1024)


class PeakMemory:
    """Registered by conftest.py in every pytest process (the controller and each xdist worker)."""

    def __init__(self, config):
        self.config = config
        self.self_mb, self.children_mb = _peaks_mb()
        self.self_test = self.children_test = "start-up"  # what raised the peak: before the first test, collection
        self.workers: list[dict] = []  # the records xdist workers hand back

    def record(self) -> dict:
        self.note("the end of the session")
        worker = getattr(self.config, "workerinput", {}).get("workerid", "pytest")
        warm = sys.modules.get("warm_python")
        return {"process": worker, "self_mb": round(self.self_mb), "self_test": self.self_test,
                "children_mb": round(self.children_mb), "children_test": self.children_test,
                "runs": dict(warm.RUNS) if warm is not None else {}}

    def note(self, nodeid: str) -> None:
        now_self, now_children = _peaks_mb()
        if now_self > self.self_mb:
            self.self_mb, self.self_test = now_self, nodeid
        if now_children > self.children_mb:
            self.children_mb, self.children_test = now_children, nodeid

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid, location):
        self.note(nodeid)

    @pytest.hookimpl
    def pytest_sessionfinish(self, session):
        if hasattr(session.config, "workeroutput"):  # an xdist worker: the controller prints
            session.config.workeroutput["peak_memory"] = self.record()

    @pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without the plugin
    def pytest_testnodedown(self, node, error):
        record = getattr(node, "workeroutput", {}).get("peak_memory")
        if record:
            self.workers.append(record)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter):
        if hasattr(self.config, "workerinput"):
            return
        distributed = self.config.pluginmanager.getplugin("dsession") is not None
        # under xdist the controller runs no test: its children are the workers themselves, already listed
        rows = sorted(self.workers, key=lambda r: r["process"]) if distributed else [self.record()]
        terminalreporter.section(f"peak memory per process (RSS, budget {BUDGET_MB} MB each)")
        over = []
        for r in rows:
            child = (f"largest child {r['children_mb']} MB (started by {r['children_test']})" if r["children_mb"]
                     else "no child process")
            runs = ", ".join(f"{n} {what}" for what, n in r.get("runs", {}).items())  # warm_python.py's
            terminalreporter.write_line(
                f"{r['process']}: itself {r['self_mb']} MB (peak reached in {r['self_test']}); {child}"
                + (f"; command lines: {runs}" if runs else ""))
            over += [f"{r['process']} {what} {r[what + '_mb']} MB ({r[what + '_test']})"
                     for what in ("self", "children") if r[what + "_mb"] > BUDGET_MB]
        if distributed:
            terminalreporter.write_line(f"controller: itself {round(_peaks_mb()[0])} MB")
        for line in over:
            terminalreporter.write_line(f"OVER THE {BUDGET_MB} MB BUDGET: {line}", red=True, bold=True)
