"""The HF backend at its best: ``attention=auto`` decides by timing the candidates that run (here SDPA and eager,
the CPU's two), a cell switches to the winner at its fill, ``compile`` keeps Inductor's caches in the artifact
cache, and slow work is announced with the time it took last time."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from backends.hf_staticcache.auto_attention import Measured, grid_extremes
from backends.hf_staticcache.compile_step import compile_options, use_inductor_cache
from harness.accuracy.inputs import random_prompt_ids
from harness.model.durations import last_seconds, slow_work
from harness.model.sources import ModelSource
from harness.plugin.loadspec import LoadSpec
from helpers import tiny_model_cfg

HF = "hf-flashattn-staticcache"


def grid_spec(registry, **options):
    return LoadSpec(model=ModelSource.from_config(tiny_model_cfg(), 0), dtype=torch.float32, device="cpu",
                    options={**registry.defaults(HF), **options}, max_batch=2, max_seq=32,
                    batch_sizes=(1, 2), prompt_lens=(4, 16), new_tokens=3)


def full_forward_last_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[:, -1]


def test_auto_times_sdpa_and_eager_and_keeps_the_fastest(registry):
    handle = registry.open(HF)
    try:
        info = handle.load(spec=grid_spec(registry))
        auto = info["attention_auto"]
        assert auto["batch"] == 2 and auto["fills"] == [4, 18]  # largest batch; shortest fill, last step's fill
        times = auto["decode_step_ms"]
        assert set(times) == {"sdpa", "eager"}
        assert all(t > 0 for by_fill in times.values() for t in by_fill.values())
        for fill, chosen in auto["chosen"].items():
            assert chosen == min(times, key=lambda c: times[c][fill])  # the fastest at that fill, as recorded
        assert info["attn_implementation"] == auto["chosen"]["4"]  # the shortest fill's winner serves first
    finally:
        handle.close()


def test_a_cell_uses_the_winner_at_its_fill_and_stays_exact(registry):
    """When the winners differ by fill, the backend switches attention (and cache layout) between cells; each
    cell's logits still equal a full forward pass."""
    handle = registry.open(HF)
    try:
        handle.load(spec=grid_spec(registry, attention="sdpa"))
        backend = handle.instance
        backend.measured = Measured(2, (4, 18), {"sdpa": {4: 1.0, 18: 3.0}, "eager": {4: 2.0, 18: 2.5}})
        model = ModelSource.from_config(tiny_model_cfg(), 0).build_fp32_cpu()
        for plen, impl in ((4, "sdpa"), (16, "eager"), (5, "sdpa")):
            ids = random_prompt_ids(backend.config, 2, plen, seed=plen)
            handle.reset_kv()
            got = handle.prefill(input_ids=ids, prompt_lens=None)
            assert backend.model.config._attn_implementation == impl
            torch.testing.assert_close(got, full_forward_last_logits(model, ids), atol=1e-5, rtol=1e-5)
            tok = got.argmax(-1, keepdim=True)
            step = handle.decode_step(tokens=tok)
            torch.testing.assert_close(step, full_forward_last_logits(model, torch.cat([ids, tok], 1)),
                                       atol=1e-5, rtol=1e-5)
    finally:
        handle.close()


def test_measured_choice_per_fill_is_the_nearer_fill_on_a_log_scale():
    m = Measured(8, (128, 8255), {"fa4": {128: 1.6, 8255: 3.1}, "torch_flash": {128: 1.7, 8255: 2.0}})
    assert m.winners() == {128: "fa4", 8255: "torch_flash"}
    # the boundary is sqrt(128 * 8255) ~ 1028
    assert [m.choice_for(p) for p in (16, 128, 1000, 1100, 8192)] == ["fa4", "fa4", "fa4", "torch_flash",
                                                                     "torch_flash"]
    assert m.facts()["attention_auto"]["per_cell"] is True


def test_grid_extremes_come_from_the_grid_or_the_preallocation():
    model = ModelSource.from_config(tiny_model_cfg(), 0)
    spec = LoadSpec(model=model, dtype=torch.float32, device="cpu", options={}, max_batch=8, max_seq=8192 + 64,
                    batch_sizes=(1, 8), prompt_lens=(128, 8192), new_tokens=64)
    assert grid_extremes(spec) == (8, (128, 8255))
    bare = LoadSpec(model=model, dtype=torch.float32, device="cpu", options={}, max_batch=4, max_seq=64)
    assert grid_extremes(bare) == (4, (63,))  # no grid: opt_prompt_len (128) capped by what is preallocated


def test_compile_modes_and_the_inductor_cache_dir(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    assert compile_options("max-autotune") == {"mode": "max-autotune", "fullgraph": True}
    assert compile_options("reduce-overhead")["fullgraph"] is False
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch writes itself: not a choice
    assert use_inductor_cache(tmp_path) == str(tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/chosen")
    assert use_inductor_cache(tmp_path) == "/somewhere/chosen"


def test_slow_work_says_the_last_time_and_records_this_one(tmp_path, capsys):
    with slow_work(tmp_path, "exporting", "onnx:tiny") as timed:
        assert timed.estimate is None
    first = capsys.readouterr().err
    assert "exporting (no earlier time on record) ..." in first and "exporting: done in" in first
    assert last_seconds(tmp_path, "onnx:tiny") == round(timed.seconds, 2)
    with slow_work(tmp_path, "exporting", "onnx:tiny") as again:
        assert again.estimate == round(timed.seconds, 2)
    assert "(last time 0 s)" in capsys.readouterr().err
    (tmp_path / "durations.json").write_text("{not json")  # a damaged file costs only the estimate
    assert last_seconds(tmp_path, "onnx:tiny") is None


@pytest.mark.slow
def test_compiled_step_fills_the_inductor_cache_in_the_artifact_cache(registry, tmp_path, monkeypatch):
    """compile=default on the CPU (the quickest mode to compile): the FX graph cache lands in cache_dir, the
    compile time is recorded, and the compiled step's logits equal the eager ones."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    spec = grid_spec(registry, attention="sdpa", compile="default")
    spec.cache_dir = tmp_path
    handle = registry.open(HF)
    try:
        info = handle.load(spec=spec)
        ids = random_prompt_ids(handle.instance.config, 2, 6, seed=1)
        handle.reset_kv()
        logits = handle.prefill(input_ids=ids, prompt_lens=None)
        got = handle.decode_step(tokens=logits.argmax(-1, keepdim=True))
        model = ModelSource.from_config(tiny_model_cfg(), 0).build_fp32_cpu()
        want = full_forward_last_logits(model, torch.cat([ids, logits.argmax(-1, keepdim=True)], 1))
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert info["inductor_cache_dir"] == str(tmp_path / "inductor")
        assert list(Path(info["inductor_cache_dir"]).rglob("*")), "Inductor wrote nothing into the cache"
        assert info["compile_seconds"][2] > 0  # batch 2's first step: the compile, announced and timed
        assert (tmp_path / "durations.json").is_file()
    finally:
        handle.close()


def _write_then_attend(keep_layout: bool):
    """Compile what a flash choice's layer does to its cache: write a slot through the head-major view of the
    token-major storage (a static-address attribute, as in the backend), hand the storage to the attention op.
    Returns (compiled output, eager output, storage, new slot, Inductor's code); Inductor's caches are off, so the
    code is compiled here with the decomposition in force."""
    from torch._inductor.utils import run_and_get_code

    from backends.hf_staticcache.compile_step import keep_index_copy_layout
    from backends.hf_staticcache.flash_ops import OPS

    batch, slots, heads, d = 2, 64, 3, 8

    class Layer:
        def __init__(self):
            self.storage = torch.zeros(batch, slots, heads, d)
            with torch.enable_grad():
                self.keys = self.storage.transpose(1, 2)  # [B, H, L, D] view of [B, L, H, D]
            torch._dynamo.mark_static_address(self.keys)

    new, pos, q = torch.randn(batch, heads, 1, d), torch.tensor([5]), torch.randn(batch, 1, heads, d)
    kv_start, kv_used = torch.tensor([0, slots], dtype=torch.int32), torch.tensor([6, 6], dtype=torch.int32)
    eager, compiled = Layer(), Layer()

    def step(layer):
        def run(new, pos):
            layer.keys.index_copy_(2, pos, new)
            k = layer.keys.transpose(1, 2).reshape(batch * slots, heads, d)
            return OPS["reference"](q, k, k, kv_start, kv_used, slots, False, 0.5)
        return run

    if keep_layout:
        assert keep_index_copy_layout()
    torch._dynamo.reset()
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        want = step(eager)(new, pos)
        got, code = run_and_get_code(torch.compile(step(compiled)), new, pos)
    torch._dynamo.reset()
    return got, want, compiled.storage, new, "\n".join(code)


def test_compiled_cache_write_keeps_the_layout_of_a_transposed_cache():
    """The flash choices' token-major cache, seen head-major by HF: the compiled write equals eager's, happens in
    place, and leaves Inductor no copy of the whole cache (torch's own decomposition of index_copy made one per K
    and V per layer and step, to head-major and back, to feed the attention op)."""
    got, want, storage, new, code = _write_then_attend(keep_layout=True)
    assert torch.allclose(got, want) and torch.equal(storage[:, 5], new[:, :, 0])
    whole = storage.numel()
    assert f"{whole}L" not in code, "the compiled step copies the whole cache"
