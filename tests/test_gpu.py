"""GPU checks (``pytest -m gpu`` on a CUDA machine): every backend that runs on CUDA validates and benchmarks the
tiny model there; skipped with the reason elsewhere."""
import pandas as pd
import pytest
import torch

from conftest import FAST, open_backend, run_cli
from harness.inputs import left_pad, random_prompt_ids

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("extra", [
    ["backend=hf-flashattn-staticcache"],
    ["backend=hf-flashattn-staticcache", "backend.compile=reduce-overhead"],
    ["backend=onnxruntime"],
    ["backend=onnxruntime", "backend.attention=gqa"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.cuda_graph=true"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.fused_ops=true", "backend.cuda_graph=true"],
])
def test_backend_on_cuda(extra, tmp_path):
    proc = run_cli(*extra, *FAST, "device=cuda", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}, tidy[["status", "error"]]
    assert "gpu_device_used_peak_mib" in set(tidy.metric) and "torch_allocated_peak_mib" in set(tidy.metric)


@pytest.mark.parametrize("fused_ops", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])  # ORT's CUDA GroupQueryAttention: no float32
def test_ort_cuda_graph_replays_match_plain_runs(registry, dtype, fused_ops, tmp_path):
    """Replayed decode graphs must compute what uncaptured runs compute, step after step, ragged rows, two batch
    sizes (one graph each) and a reset in between: a stale per-step input would show up as a divergence."""
    logits = {}
    for graph in (False, True):
        handle, source, info = open_backend(registry, "onnxruntime", options={"attention": "gqa", "cuda_graph": graph,
                                                                           "fused_ops": fused_ops},
                                            dtype=dtype, device="cuda", max_seq=48, tmp_cache=tmp_path)
        try:
            assert info["cuda_graph"] is graph
            for lens in ((9, 4, 6), (5, 5), (9, 4, 6)):
                handle.reset_kv()
                rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in lens]
                ids, plens = left_pad(rows)
                out = handle.prefill(input_ids=ids.cuda(), prompt_lens=plens.cuda())
                steps = []
                for _ in range(12):
                    steps.append(out.float().cpu())
                    out = handle.decode_step(tokens=out.argmax(-1, keepdim=True))
                logits.setdefault(graph, []).append(torch.stack(steps))
        finally:
            handle.close()
    for replayed, plain in zip(logits[True], logits[False]):
        per_step = (replayed - plain).abs().amax(dim=(1, 2)).tolist()  # [steps]
        assert max(per_step) < 1e-3, f"replayed vs plain max |diff| per step: {per_step}"
