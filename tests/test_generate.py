"""Samplers on hand-made logits, and generation through the hooks: the same prompt, seed and greedy sampling give
the same tokens on every backend that runs here; padding, EOS and seeds behave."""
import pytest
import torch
from omegaconf import OmegaConf

from harness.accuracy.sampling import (
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    build_processors,
)
from harness.config.schema import SamplingConfig
from harness.run.generate import generate
from helpers import FAST, open_backend, run_cli

NEG = float("-inf")


def test_top_k_keeps_k_largest():
    out = apply_top_k(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), 2)
    assert out.tolist() == [[NEG, 3.0, 2.0, NEG]]


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = torch.isfinite(apply_top_p(logits, 0.8))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(apply_top_p(logits, 0.1))[0].tolist() == [True, False, False, False]


def test_min_p_relative_to_top_token():
    logits = torch.tensor([[0.6, 0.3, 0.08, 0.02]]).log()
    assert torch.isfinite(apply_min_p(logits, 0.1))[0].tolist() == [True, True, True, False]


def test_temperature_and_repetition_penalty():
    assert apply_temperature(torch.tensor([[2.0, -1.0]]), 0.5).tolist() == [[4.0, -2.0]]
    out = apply_repetition_penalty(torch.tensor([[2.0, -1.0, 3.0]]), torch.tensor([[0, 1, -1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0]]


def test_unknown_sampler_step_is_user_error():
    from harness.errors import UserError

    cfg = OmegaConf.structured(SamplingConfig(order=["top_k", "nucleus"]))
    with pytest.raises(UserError, match="nucleus"):
        build_processors(cfg)


def _greedy_cfg(**kw):
    return OmegaConf.structured(SamplingConfig(greedy=True, **kw))


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [40, 41, 42], [100, 7, 200, 7, 100]]


def _has_tensorrt() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx_bindings"))


@pytest.mark.parametrize("backend", ["hf-flashattn-staticcache", pytest.param("onnxruntime", marks=pytest.mark.slow),
                                     pytest.param("trt-handbuilt", marks=[pytest.mark.slow, pytest.mark.skipif(
                                         not _has_tensorrt(), reason="no TensorRT module installed")])])
def test_greedy_generation_equal_across_backends(registry, backend, tmp_path):
    reference, source, _ = open_backend(registry, "hf-flashattn-staticcache", max_seq=32)
    other, _, _ = open_backend(registry, backend, max_seq=32, tmp_cache=tmp_path)
    try:
        want = generate(reference, PROMPTS, "cpu", _greedy_cfg(), 12, eos=set())
        got = generate(other, PROMPTS, "cpu", _greedy_cfg(), 12, eos=set())
        assert got.new_ids == want.new_ids
        # each row of the padded batch equals that prompt generated alone
        alone = [generate(other, [p], "cpu", _greedy_cfg(), 12, eos=set()).new_ids[0] for p in PROMPTS]
        assert alone == got.new_ids
    finally:
        reference.close()
        other.close()


def test_eos_stops_a_row_and_seed_reproduces_sampling(registry):
    handle, _, _ = open_backend(registry, "hf-flashattn-staticcache", max_seq=40)
    try:
        free = generate(handle, [PROMPTS[0]], "cpu", _greedy_cfg(), 8, eos=set())
        stop_at = free.new_ids[0][3]
        stopped = generate(handle, [PROMPTS[0]], "cpu", _greedy_cfg(), 8, eos={stop_at})
        first = free.new_ids[0].index(stop_at)
        assert stopped.new_ids[0] == free.new_ids[0][: first + 1] and stopped.finish_reasons == ["eos"]
        cfg = OmegaConf.structured(SamplingConfig(temperature=1.5, top_k=50, dry_multiplier=0.8))
        a = generate(handle, PROMPTS, "cpu", cfg, 10, eos=set(), seed=3)
        b = generate(handle, PROMPTS, "cpu", cfg, 10, eos=set(), seed=3)
        c = generate(handle, PROMPTS, "cpu", cfg, 10, eos=set(), seed=4)
        assert a.new_ids == b.new_ids and a.new_ids != c.new_ids
    finally:
        handle.close()


def _completes_seen_trigram(seq, start):
    """Positions >= start whose token completes a 3-gram already seen earlier in seq."""
    return [i for i in range(max(start, 2), len(seq))
            if any(seq[j:j + 3] == seq[i - 2:i + 1] for j in range(i - 2))]


def test_dry_stops_greedy_from_extending_repeats(registry):
    handle, _, _ = open_backend(registry, "hf-flashattn-staticcache", max_seq=64)
    prompt = [425, 425, 43, 125] * 3
    try:
        plain = generate(handle, [prompt], "cpu", _greedy_cfg(), 20, eos=set()).new_ids[0]
        banned = generate(handle, [prompt], "cpu", _greedy_cfg(dry_multiplier=1e6, dry_allowed_length=2), 20,
                          eos=set()).new_ids[0]
        assert _completes_seen_trigram(prompt + plain, len(prompt))  # this model loops without DRY ...
        assert not _completes_seen_trigram(prompt + banned, len(prompt))  # ... and never extends a 2-repeat with it
    finally:
        handle.close()


@pytest.mark.slow
def test_task_generate_cli_token_ids(tmp_path):
    proc = run_cli("task=generate", "prompt=5 6 7 8", "sampling.greedy=true", "generate.max_new_tokens=5",
                   *FAST[:3], f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "token ids in and out" in proc.stderr
    out_line = [line for line in proc.stdout.splitlines() if line.startswith("output:")][0]
    assert len(out_line.split()) == 6


@pytest.mark.slow
def test_task_generate_rejects_text_without_tokenizer(tmp_path):
    proc = run_cli("task=generate", "prompt=hello world", f"output_dir={tmp_path}")
    assert proc.returncode == 2 and "must be token ids" in proc.stderr
