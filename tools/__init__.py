"""Stand-alone micro-benchmarks (``python -m tools.<name>`` from the repository root) whose printed output is
committed under docs/results/. Not part of the installed package; a tool loads a backend through the plugin
registry, never from the backend's own modules (tests/test_import_graph.py)."""
from __future__ import annotations


def print_and_save(rows: list[dict], out: str | None) -> None:
    """Print the rows as a table and, with ``out``, write them as CSV."""
    import pandas as pd

    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if out:
        table.to_csv(out, index=False)


def load_preset(name: str):
    """The ``conf/model/<name>.yaml`` preset as a ModelSource (seed 0), for tools run from the repository root."""
    import yaml

    from harness.model.sources import ModelSource

    with open(f"conf/model/{name}.yaml") as f:
        return ModelSource.from_config(yaml.safe_load(f), seed=0)
