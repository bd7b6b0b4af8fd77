"""The Python API runs jobs through the same composition, checks and job runner as the command line."""
from __future__ import annotations

import json

import pytest

from helpers import FAST


def test_bad_key_is_a_user_error_with_did_you_mean(tmp_path):
    from harness.api import benchmark
    from harness.errors import UserError

    with pytest.raises(UserError) as err:
        benchmark(["grid.batch_size=[1]"], output_dir=tmp_path)
    assert "unknown config key 'grid.batch_size'" in err.value.one_line()
    assert "did you mean grid.batch_sizes" in err.value.one_line()


def test_bad_value_is_a_user_error(tmp_path):
    from harness.api import compose_config
    from harness.errors import UserError

    with pytest.raises(UserError, match="grid.batch_sizes has values below 1"):
        compose_config(["grid.batch_sizes=[0]"])


@pytest.mark.slow
def test_isolation_process_is_honoured(tmp_path):
    from harness.api import benchmark

    out = benchmark(["backend=hf-flashattn-staticcache", "device=cpu", "isolation=process",
                     "validation.enabled=false", *FAST], output_dir=tmp_path / "run")
    run = json.loads((out / "run.json").read_text())
    assert run["isolation"]["mode"] == "process" and run["isolation"]["restarts"] == 0
    assert len(run["isolation"]["worker_pids"]) == 1  # the cells ran in a child process
    assert (out / "results.csv").read_text().count("\n") > 2
