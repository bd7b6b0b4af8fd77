"""The HF backend's attention choices on the CPU: selection order, the wrong-FlashAttention-package case, one-line
errors, and the static-cache attention path itself (HF's AttentionInterface + token-major StaticCache + per-row
fill), run through the ``reference`` op (the kernels' contract in plain torch) against full forwards."""

import pytest
import torch

from backends.hf_staticcache import flash_packages
from backends.hf_staticcache.selection import (
    AUTO_ORDER_CUDA,
    candidates,
    check_choice,
    flash_problem,
)
from harness.accuracy.inputs import left_pad, random_prompt_ids
from harness.errors import UserError
from helpers import open_backend, run_cli, run_python_module

HF = "hf-flashattn-staticcache"


def test_auto_probes_flash_kernels_first_on_cuda_and_stays_sdpa_on_cpu():
    assert AUTO_ORDER_CUDA == ("flash_attention_2", "flash_attention_4", "torch_flash", "sdpa")
    assert candidates("auto", "cuda") == list(AUTO_ORDER_CUDA)
    assert candidates("auto", "cpu") == ["sdpa", "eager"]
    assert candidates("torch_flash", "cuda") == ["torch_flash"]


@pytest.mark.parametrize("choice", ["flash_attention_2", "flash_attention_4", "torch_flash"])
def test_flash_choice_on_cpu_is_refused_with_the_fix(choice):
    with pytest.raises(UserError) as err:
        check_choice(choice, "cpu", torch.bfloat16)
    assert "runs on CUDA GPUs only" in err.value.problem and "backend.attention=auto" in err.value.fix


def test_flash_choice_in_float32_is_refused():
    assert "float16 or bfloat16" in flash_problem("torch_flash", "cuda", torch.float32)


def _fake_dist(root, dist, version, files):
    """A minimal installed distribution (dist-info + module files) on a path entry: what pip leaves behind."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")


def test_flash_attn_4_alone_is_not_mistaken_for_flash_attn_2(tmp_path, monkeypatch):
    # flash-attn-4 ships flash_attn/cute only: `flash_attn` imports (as a namespace package), but it is not FA2
    _fake_dist(tmp_path, "flash-attn-4", "4.0.0b36", ["flash_attn/cute/__init__.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert flash_packages.fa4_problem() is None
    assert flash_packages.fa2_problem() == "flash-attn 2.x is not installed (found flash-attn-4 4.0.0b36)"


def test_flash_attn_of_another_major_version_is_refused(tmp_path, monkeypatch):
    _fake_dist(tmp_path, "flash-attn", "3.0.1", ["flash_attn/__init__.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert flash_packages.fa2_problem() == "flash-attn 3.0.1 is installed, not 2.x"
    assert flash_packages.fa4_problem().startswith("flash-attn-4 is not installed (found flash-attn 3.0.1")


@pytest.mark.slow
def test_cli_flash_attention_4_on_cpu_exits_2_with_the_fix(tmp_path):
    proc = run_cli("backend.attention=flash_attention_4", "device=cpu", f"output_dir={tmp_path}/o")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("enginebench: error: backend.attention=flash_attention_4 cannot run here: it runs on "
                           "CUDA GPUs only (device=cpu)")
    assert "pip install 'enginebench[flash-attn-4]'" in last and "Traceback" not in proc.stderr


def test_cuda_graph_on_cpu_is_refused(registry):
    from harness.model.sources import ModelSource
    from harness.plugin.loadspec import LoadSpec
    from helpers import tiny_model_cfg

    handle = registry.open(HF)
    try:
        spec = LoadSpec(model=ModelSource.from_config(tiny_model_cfg(), 0), dtype=torch.float32, device="cpu",
                        options={**registry.defaults(HF), "cuda_graph": True}, max_batch=2, max_seq=16)
        with pytest.raises(UserError, match="needs a CUDA device"):
            handle.load(spec=spec)
    finally:
        handle.close()


def test_hand_captured_graph_with_compile_options():
    """cuda_graph=true with compile: Inductor without its own graphs; with reduce-overhead (its graphs): refused."""
    from backends.hf_staticcache.compile_step import compile_options, decode_graph_kind
    from backends.hf_staticcache.options import HFOptions
    from harness.plugin.options import check_options

    check_options(HF, HFOptions, {**HFOptions().__dict__, "compile": "max-autotune", "cuda_graph": True})
    with pytest.raises(UserError, match="compile=reduce-overhead replays Inductor's own CUDA graphs"):
        check_options(HF, HFOptions, {**HFOptions().__dict__, "compile": "reduce-overhead", "cuda_graph": True})
    assert compile_options("max-autotune", hand_captured=True) == {"mode": "max-autotune-no-cudagraphs",
                                                                    "fullgraph": True}
    assert compile_options("max-autotune") == {"mode": "max-autotune", "fullgraph": True}
    assert compile_options("default", hand_captured=True) == {"mode": "default", "fullgraph": False}
    assert decode_graph_kind("max-autotune", True) == "captured by the backend"
    assert decode_graph_kind("reduce-overhead", False) == "Inductor's CUDA-graph trees"
    assert decode_graph_kind("default", False) == "none"


@pytest.fixture
def static_reference(registry):
    """The backend with its static-cache attention path on, through the plain-torch reference op."""
    handle, source, _ = open_backend(registry, HF, max_seq=32)
    handle.instance._set_attention("reference")
    yield handle, source
    handle.close()


def full_forward_last_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[:, -1]


def test_static_attention_uses_hf_interface_and_token_major_cache(static_reference):
    handle, source = static_reference
    handle.prefill(input_ids=random_prompt_ids(source.config(), 2, 5, seed=1), prompt_lens=None)
    backend = handle.instance
    assert backend.model.config._attn_implementation == "enginebench_static_reference"
    keys = backend.cache.layers[0].keys  # HF sees [B, Hkv, L, D] ...
    assert keys.shape[2] == 32 and keys.transpose(1, 2).is_contiguous()  # ... stored [B, L, Hkv, D]
    assert backend.fill.kv_used.tolist() == [5, 5] and backend.fill.kv_start.tolist() == [0, 32, 64]


def test_left_padded_rows_prefill_and_decode_match_each_row_alone(static_reference):
    handle, source = static_reference
    model = source.build_fp32_cpu()
    rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in (9, 4, 6)]
    ids, lens = left_pad(rows)
    for _ in range(2):  # twice: reset_kv then a second request through the same cache
        handle.reset_kv()
        got = handle.prefill(input_ids=ids, prompt_lens=lens)
        seqs = [row[None] for row in rows]
        for step in range(4):
            for b, seq in enumerate(seqs):
                torch.testing.assert_close(got[b], full_forward_last_logits(model, seq)[0], atol=1e-5, rtol=1e-5)
            tok = torch.tensor([[3 + step], [17 + step], [29 + step]])
            seqs = [torch.cat([seq, tok[b][None]], dim=1) for b, seq in enumerate(seqs)]
            got = handle.decode_step(tokens=tok)
        assert handle.instance.fill.kv_used.tolist() == [9 + 4, 4 + 4, 6 + 4]


def test_grouped_query_attention_reads_kv_heads_without_repeat(registry):
    from helpers import tiny_model_cfg

    cfg = tiny_model_cfg(num_key_value_heads=1)  # every query head shares one K/V head
    handle, source, _ = open_backend(registry, HF, model_cfg=cfg, max_seq=24)
    try:
        handle.instance._set_attention("reference")
        assert handle.instance.config.num_attention_heads > 1
        ids = random_prompt_ids(source.config(), 2, 7, seed=3)
        got = handle.prefill(input_ids=ids, prompt_lens=None)
        torch.testing.assert_close(got, full_forward_last_logits(source.build_fp32_cpu(), ids), atol=1e-5, rtol=1e-5)
        assert handle.instance.cache.layers[0].keys.shape[1] == 1
    finally:
        handle.close()


def test_reference_op_causal_is_bottom_right_aligned():
    """A query block shorter than the keys (a prefill at an offset) sees every earlier key: the last query all."""
    from backends.hf_staticcache.flash_ops import reference

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 2, 8), torch.randn(6, 1, 8), torch.randn(6, 1, 8)
    start, used = torch.tensor([0, 6], dtype=torch.int32), torch.tensor([5], dtype=torch.int32)
    out = reference(q, k, v, start, used, 6, True, 8 ** -0.5)
    for i, n_keys in ((0, 4), (1, 5)):  # query i sees keys 0 .. i + used - S
        weights = torch.softmax(q[0, i] @ k[:n_keys, 0].T * 8 ** -0.5, dim=-1)  # [H, n_keys]: both heads, 1 KV
        want = weights @ v[:n_keys, 0]
        torch.testing.assert_close(out[0, i], want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_decode_step_has_no_graph_break(static_reference):
    """The kernel op is one node to torch.compile: tracing the whole decode step breaks nowhere."""
    handle, source = static_reference
    handle.prefill(input_ids=random_prompt_ids(source.config(), 2, 5, seed=1), prompt_lens=None)
    backend = handle.instance
    backend.fill.advance()
    with torch.no_grad():
        explained = torch._dynamo.explain(backend._forward_decode)(torch.tensor([[1], [2]]), backend.step_pos, None)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_choice_loop_skips_what_cannot_run_and_says_why(registry):
    """The probe loop that ``auto`` runs on CUDA, driven here with a FlashAttention candidate the CPU cannot run."""
    handle, _, _ = open_backend(registry, HF)
    try:
        # one candidate runs, so nothing is timed and no grid (spec) is needed
        info = handle.instance._choose_attention(["flash_attention_4", "torch_flash", "sdpa"], "auto", None)
        assert info["attn_implementation"] == "sdpa" and info["attention_kernel_decode"].endswith("-cpu")
        assert info["attention_skipped"] == {"flash_attention_4": "it runs on CUDA GPUs only (device=cpu)",
                                             "torch_flash": "it runs on CUDA GPUs only (device=cpu)"}
    finally:
        handle.close()


def test_decode_profile_names_the_attention_kernel_and_accounts_for_the_step(tmp_path):
    """tools/profile_decode.py on the CPU (where it reports CPU self time): one profile per (attention, prompt), the
    attention operator that ran appears in it, and the shares of each profile add up to the whole step."""
    import pandas as pd

    out = tmp_path / "profile.csv"
    proc = run_python_module("tools.profile_decode", "--model", "tiny-llama", "--attention", "sdpa", "eager",
                             "--device", "cpu", "--dtype", "float32", "--prompt", "16", "--steps", "3", "--out", out,
                             timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(out)
    assert set(rows.attention) == {"sdpa", "eager"}
    for attention, op in (("sdpa", "scaled_dot_product"), ("eager", "softmax")):
        profile = rows[rows.attention == attention]
        assert profile.name.str.contains(op).any(), profile.name.tolist()[:10]
        assert profile.share.sum() == pytest.approx(1.0, abs=0.01)
        assert (profile.wall_ms_per_step > 0).all() and (profile.device_ms_per_step > 0).all()


def test_decode_profile_takes_quant_schemes_and_any_backend(tmp_path):
    """tools/profile_decode.py with --quant (one profile per scheme, the scheme's own kernels in it) and with
    another backend and its options (recorded in every row)."""
    import pandas as pd

    pytest.importorskip("torchao", reason="torchao not installed (pip install torchao)")
    base = ["tools.profile_decode", "--model", "tiny-llama", "--device", "cpu", "--dtype", "float32", "--prompt", "16",
            "--steps", "3"]
    hf, ort = tmp_path / "hf.csv", tmp_path / "ort.csv"
    for args, env in ((["--attention", "sdpa", "--quant", "none", "int8", "--out", hf], None),
                      (["--backend", "onnxruntime", "--attention", "gqa", "--set", "fused_ops=true", "--out", ort],
                       {"ENGINEBENCH_CACHE_DIR": str(tmp_path / "cache")})):
        proc = run_python_module(*base, *args, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(hf)
    assert set(rows.quant) == {"none", "int8"}
    dequantizes = rows.name.str.contains("dequantize")
    assert dequantizes[rows.quant == "int8"].any() and not dequantizes[rows.quant == "none"].any()
    rows = pd.read_csv(ort)
    assert set(rows.backend) == {"onnxruntime"} and set(rows.options) == {"fused_ops=true"}
    assert (rows.wall_ms_per_step > 0).all()
