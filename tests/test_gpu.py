"""GPU checks (``pytest -m gpu`` on a CUDA machine): every backend that runs on CUDA validates and benchmarks the
tiny model there; skipped with the reason elsewhere."""
import pandas as pd
import pytest
import torch

from conftest import FAST, run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("extra", [
    ["backend=hf-flashattn-staticcache"],
    ["backend=hf-flashattn-staticcache", "backend.compile=reduce-overhead"],
    ["backend=onnxruntime"],
])
def test_backend_on_cuda(extra, tmp_path):
    proc = run_cli(*extra, *FAST, "device=cuda", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}, tidy[["status", "error"]]
    assert "gpu_device_used_peak_mib" in set(tidy.metric) and "torch_allocated_peak_mib" in set(tidy.metric)
