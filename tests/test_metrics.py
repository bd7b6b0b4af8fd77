"""Metric names are defined once (harness/measure/metrics.py) and every other module refers to them."""
from __future__ import annotations

import ast
from dataclasses import fields

from harness.measure import metrics
from harness.measure.memory import MemoryPeaks
from helpers import ROOT


def test_memory_metrics_are_the_sampler_fields():
    assert set(metrics.MEMORY) == {f.name for f in fields(MemoryPeaks)}
    assert set(metrics.UNITS) >= {*metrics.LATENCIES, *metrics.MEMORY}


def test_no_module_spells_a_metric_name():
    offenders = []
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name == "metrics.py":
            continue
        literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in metrics.UNITS if name in literals]
    assert offenders == []
