"""Hook semantics on the HF backend: prefill + decode steps equal one full forward pass over the same sequence."""
import pytest
import torch

from harness.accuracy.inputs import left_pad, random_prompt_ids
from helpers import open_backend, tiny_model_cfg

HF = "hf-flashattn-staticcache"


def full_forward_last_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[:, -1]


@pytest.fixture
def hf(registry):
    handle, source, info = open_backend(registry, HF)
    yield handle, source, info
    handle.close()


def test_hook_prefill_matches_full_forward(hf):
    handle, source, _ = hf
    ids = random_prompt_ids(source.config(), 3, 10, seed=1)
    got = handle.prefill(input_ids=ids, prompt_lens=None)
    want = full_forward_last_logits(source.build_fp32_cpu(), ids)
    assert got.shape == (3, source.config().vocab_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hook_decode_step_matches_full_forward(hf):
    handle, source, _ = hf
    ids = random_prompt_ids(source.config(), 2, 7, seed=2)
    handle.reset_kv()
    handle.prefill(input_ids=ids, prompt_lens=None)
    seq = ids
    for step in range(5):
        tok = torch.tensor([[11 + step], [40 + step]])
        got = handle.decode_step(tokens=tok)
        seq = torch.cat([seq, tok], dim=1)
        torch.testing.assert_close(got, full_forward_last_logits(source.build_fp32_cpu(), seq), atol=1e-5, rtol=1e-5)


def test_prefill_left_padded_rows_match_each_row_alone(hf):
    handle, source, _ = hf
    model = source.build_fp32_cpu()
    rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in (9, 4, 6)]
    ids, lens = left_pad(rows)
    handle.reset_kv()
    got = handle.prefill(input_ids=ids, prompt_lens=lens)
    tok = torch.tensor([[5], [6], [7]])
    got_next = handle.decode_step(tokens=tok)
    for b, row in enumerate(rows):
        torch.testing.assert_close(got[b], full_forward_last_logits(model, row[None])[0], atol=1e-5, rtol=1e-5)
        seq = torch.cat([row, tok[b]])[None]
        torch.testing.assert_close(got_next[b], full_forward_last_logits(model, seq)[0], atol=1e-5, rtol=1e-5)


def test_hook_reset_kv_empties_without_reallocating(hf):
    handle, source, _ = hf
    ids = random_prompt_ids(source.config(), 2, 8, seed=3)
    first = handle.prefill(input_ids=ids, prompt_lens=None)
    cache = handle.instance.cache
    pointers = [layer.keys.data_ptr() for layer in cache.layers]
    handle.decode_step(tokens=torch.tensor([[3], [4]]))
    assert handle.reset_kv() is True
    assert all(float(layer.keys.abs().sum()) == 0.0 for layer in cache.layers)
    again = handle.prefill(input_ids=ids, prompt_lens=None)
    assert [layer.keys.data_ptr() for layer in handle.instance.cache.layers] == pointers
    torch.testing.assert_close(again, first)


def test_hook_load_reports_attention_kernel(registry):
    from harness.model.sources import ModelSource
    from harness.plugin.loadspec import LoadSpec

    handle = registry.open(HF)
    # sdpa named: auto would pick sdpa or eager by timing them, a race on a busy CPU (tests/test_hf_tuning.py)
    spec = LoadSpec(model=ModelSource.from_config(tiny_model_cfg(), 0), dtype=torch.float32, device="cpu",
                    options={**registry.defaults(HF), "attention": "sdpa"}, max_batch=2, max_seq=16)
    info = handle.load(spec=spec)
    handle.close()
    assert info["attn_implementation"] == "sdpa"
    assert info["attention_kernel_decode"].endswith("-cpu")  # CPU kernels are never reported as CUDA ones


def test_hook_close_releases_the_model_and_unregisters(registry):
    import gc
    import weakref

    handle, _, _ = open_backend(registry, HF)
    instance = handle.instance
    model = weakref.ref(instance.model)
    handle.close()
    gc.collect()
    assert model() is None  # the backend's close let go of the model (and its cache), not just the handle
    # this handle's plugin is gone (the shared registry may hold other tests' handles under other names)
    assert not registry.pm.is_registered(instance)


def test_dynamic_cache_reference_matches_static(registry):
    static, source, _ = open_backend(registry, HF)
    dynamic, _, _ = open_backend(registry, HF, options={"cache": "dynamic"})
    try:
        ids = random_prompt_ids(source.config(), 2, 6, seed=4)
        for h in (static, dynamic):
            h.reset_kv()
        torch.testing.assert_close(static.prefill(input_ids=ids, prompt_lens=None),
                                   dynamic.prefill(input_ids=ids, prompt_lens=None), atol=1e-5, rtol=1e-5)
        tok = torch.tensor([[9], [10]])
        torch.testing.assert_close(static.decode_step(tokens=tok), dynamic.decode_step(tokens=tok),
                                   atol=1e-5, rtol=1e-5)
    finally:
        static.close()
        dynamic.close()


def test_qwen_style_variant_runs_with_bias_and_tied_embeddings(registry):
    cfg = tiny_model_cfg(model_type="qwen2", tie_word_embeddings=True)
    handle, source, _ = open_backend(registry, HF, model_cfg=cfg)
    try:
        ids = random_prompt_ids(source.config(), 2, 5, seed=5)
        got = handle.prefill(input_ids=ids, prompt_lens=None)
        torch.testing.assert_close(got, full_forward_last_logits(source.build_fp32_cpu(), ids), atol=1e-5, rtol=1e-5)
    finally:
        handle.close()
