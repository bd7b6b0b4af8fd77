"""Correctness: a backend's logits against the HF model in float32 eager on the same inputs.

Two batches are checked: equal-length rows, and left-padded rows of different lengths (the reference runs each
row alone, unpadded, so padding bugs show). Metrics: max/mean |Δlogit| (teacher-forced on the reference's greedy
tokens, so every step sees the same context), the KL divergence of the next-token distributions and top-1
agreement over those steps, and greedy-token agreement when the backend decodes on its own tokens (matching prefix
length / new_tokens, averaged over rows); see harness/accuracy/numerics.py.

A backend with quantized weights (``quant=int8|int4|fp8``) is held to what the same scheme costs in HF: the float32
HF model with its weights quantized and dequantized (harness/model/quant.py) drifts by ``scheme_max_abs_diff`` from the
float32 model on the same inputs, and the backend may drift by at most ``DRIFT_FACTOR[scheme]`` times that plus
the dtype's own tolerance (top-1 is then reported, not gated: quantization moves near-tied argmaxes).

Inputs: for a model with a tokenizer, the real chat messages of harness/accuracy/prompts.py (every one of them,
``batch`` rows at a time, whole and left-padded; and the first ``batch`` cut to the shortest one's length for the
equal-length case; ``prompts=`` validates on other messages), and at least 32 new tokens by default; for
random-weight presets, random token ids.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch

from harness.accuracy.inputs import RANDOM_STEPS, TEXT_STEPS, left_pad, random_prompt_ids
from harness.accuracy.numerics import forced_logits, greedy_agreement, logit_drift
from harness.model.hf_cache import cache_keyword, returned_cache
from harness.model.quant import DRIFT_FACTOR, QuantScheme, quantized_reference

# (absolute, relative-to-max|ref|) tolerance on max |Δlogit|, and the minimum top-1 agreement, per dtype.
# Half precision gates on |Δlogit| only: with random weights the logits are nearly flat, so a bf16 rounding of
# 0.1 flips the argmax between near-tied tokens (measured: 0.81-0.88 top-1 agreement on TinyLlama-1.1B with
# max |Δ| 0.13 on an H100). top-1 and greedy agreement are still measured and reported for every dtype.
TOLERANCES = {
    torch.float32: (1e-3, 1e-3, 0.99),
    torch.float16: (2e-2, 3e-2, None),
    torch.bfloat16: (5e-2, 8e-2, None),
}


@dataclass
class Validation:
    case: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    greedy_agreement: float
    tolerance: float
    passed: bool
    reason: str = ""
    kl_divergence: float = float("nan")
    quant: str = "none"
    scheme_max_abs_diff: float = float("nan")  # the same weight scheme applied to the float32 HF model
    scheme_kl_divergence: float = float("nan")
    inputs: str = "random ids"  # or "chat prompts" (real text, for models with a tokenizer)




def default_steps(source, steps: int | None) -> int:
    """``validation.new_tokens``: as given, else 32 on real text (a tokenizer) and 8 on random ids."""
    if steps is not None:
        return steps
    return TEXT_STEPS if source.tokenizer() is not None else RANDOM_STEPS


def validation_inputs(source, batch: int, prompt_len: int, seed: int,
                      prompts: tuple[str, ...] | None = None) -> tuple[str, dict[str, list[list]]]:
    """The cases to check, each a list of row groups (one group = one batch of 1-D id tensors), and what they are.

    With a tokenizer: every chat prompt (``prompts``, default the shipped ones), ``batch`` rows at a time
    ("left_padded": whole prompts of different lengths), and the first ``batch`` cut to the shortest one's length
    ("equal_lengths"). Without one: one batch of random ids of ``prompt_len`` and the same rows cut to decreasing
    lengths."""
    tokenizer = source.tokenizer()
    if tokenizer is not None:
        from harness.accuracy.prompts import CHAT_PROMPTS, message_ids

        rows = [torch.tensor(message_ids(tokenizer, m), dtype=torch.long) for m in prompts or CHAT_PROMPTS]
        first = rows[:batch]
        shortest = min(len(r) for r in first)
        cases = {"equal_lengths": [[r[:shortest] for r in first]],
                 "left_padded": [rows[i:i + batch] for i in range(0, len(rows), batch)]}
        return "chat prompts", cases
    prompt = random_prompt_ids(source.config(), batch, prompt_len, seed + 7919)  # not a benchmark cell's inputs
    cases = {"equal_lengths": [[prompt[b] for b in range(batch)]]}
    if batch > 1 and prompt_len > 1:
        cases["left_padded"] = [[prompt[b, : max(1, prompt_len - (b * prompt_len) // (2 * batch))]
                                 for b in range(batch)]]
    return "random ids", cases


def longest_validation_row(source, batch: int, prompt_len: int, prompts: tuple[str, ...] | None = None) -> int:
    """The longest validation prompt (backends preallocate for it plus the new tokens)."""
    _, cases = validation_inputs(source, batch, prompt_len, 0, prompts)
    return max(len(r) for groups in cases.values() for group in groups for r in group)


@torch.no_grad()
def reference_greedy(model, rows: list[torch.Tensor], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, alone: greedy tokens [B, steps] and the logits before each of them [B, steps, V] (float32)."""
    tokens, logits = [], []
    keyword = cache_keyword(model)
    for row in rows:
        out = model(input_ids=row[None], use_cache=True)
        cache, step_logits, row_tokens = returned_cache(out), [out.logits[0, -1].float()], []
        for _ in range(steps - 1):
            nxt = step_logits[-1].argmax()
            row_tokens.append(nxt)
            out = model(input_ids=nxt.view(1, 1), use_cache=True, **{keyword: cache})
            cache = returned_cache(out)
            step_logits.append(out.logits[0, -1].float())
        row_tokens.append(step_logits[-1].argmax())
        tokens.append(torch.stack(row_tokens))
        logits.append(torch.stack(step_logits))
    return torch.stack(tokens), torch.stack(logits)


def memoized_reference(source, model, rows: list[torch.Tensor], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """reference_greedy, each row's continuation kept on the source (``source.memo``) for later validations: a row
    runs alone, so its continuation does not depend on the rows batched beside it, and its first ``steps`` tokens
    are those of any longer continuation."""
    keys = [("reference_greedy", tuple(r.tolist())) for r in rows]
    todo = [i for i, k in enumerate(keys) if k not in source.memo or len(source.memo[k][0]) < steps]
    if todo:
        tokens, logits = reference_greedy(model, [rows[i] for i in todo], steps)
        for j, i in enumerate(todo):
            source.memo[keys[i]] = (tokens[j], logits[j])
    return (torch.stack([source.memo[k][0][:steps] for k in keys]),
            torch.stack([source.memo[k][1][:steps] for k in keys]))


def backend_logits(handle, ids, lens, forced: torch.Tensor | None, steps: int, device: str):
    """Run the backend: teacher-forced on ``forced`` [B, steps] if given, else greedy on its own tokens."""
    handle.reset_kv()
    ids_d = ids.to(device)
    lens_d = None if lens is None else lens.to(device)
    out = [handle.prefill(input_ids=ids_d, prompt_lens=lens_d).float().cpu()]
    tokens = [out[-1].argmax(-1)]
    for k in range(steps - 1):
        nxt = forced[:, k] if forced is not None else tokens[-1]
        out.append(handle.decode_step(tokens=nxt.view(-1, 1).to(device)).float().cpu())
        tokens.append(out[-1].argmax(-1))
    return torch.stack(out, 1), torch.stack(tokens, 1)


def compare(case: str, ref_tokens, ref_logits, got_logits, got_tokens, dtype, quant: QuantScheme = QuantScheme(),
            scheme_logits: torch.Tensor | None = None) -> Validation:
    """``scheme_logits``: the quantized HF reference's teacher-forced logits (quantized backends only)."""
    atol, rtol, min_top1 = TOLERANCES[dtype]
    tolerance = atol + rtol * float(ref_logits.abs().max())
    scheme = {"quant": quant.label}
    if quant.enabled:
        cost = logit_drift(ref_logits, scheme_logits)
        scheme.update(scheme_max_abs_diff=cost["max_abs_diff"], scheme_kl_divergence=cost["kl_divergence"])
        tolerance += DRIFT_FACTOR[quant.scheme] * cost["max_abs_diff"]
        min_top1 = None
    finite = bool(torch.isfinite(got_logits).all())
    drift = logit_drift(ref_logits, got_logits)
    max_abs, top1 = drift["max_abs_diff"], drift["top1_agreement"]
    greedy = greedy_agreement(ref_tokens, got_tokens)
    reasons = []
    if not finite:
        reasons.append("non-finite logits")
    elif max_abs > tolerance:
        reasons.append(f"max |Δlogit| {max_abs:.3g} > {tolerance:.3g}")
    if min_top1 is not None and top1 < min_top1:
        reasons.append(f"top-1 agreement {top1:.3f} < {min_top1}")
    return Validation(case, max_abs, drift["mean_abs_diff"], top1, greedy, tolerance, not reasons, "; ".join(reasons),
                      kl_divergence=drift["kl_divergence"], **scheme)


def validate_backend(handle, source, dtype, device: str, batch: int, prompt_len: int, steps: int | None,
                     seed: int, quant: QuantScheme = QuantScheme(),
                     prompts: tuple[str, ...] | None = None) -> list[Validation]:
    reference = source.build_fp32_cpu()
    # a copy: the cached float32 model is the unquantized reference of every later job
    scheme_model = quantized_reference(copy.deepcopy(reference), quant) if quant.enabled else None
    steps = default_steps(source, steps)
    inputs, cases = validation_inputs(source, batch, prompt_len, seed, prompts)
    results = []
    for case, groups in cases.items():
        parts = []  # per group: reference tokens and logits, backend logits and own tokens, the scheme's logits
        for rows in groups:
            ref_tokens, ref_logits = memoized_reference(source, reference, rows, steps)
            ids, lens = left_pad(rows)
            lens_arg = None if case == "equal_lengths" else lens
            got_logits, _ = backend_logits(handle, ids, lens_arg, ref_tokens, steps, device)
            _, free_tokens = backend_logits(handle, ids, lens_arg, None, steps, device)
            scheme = forced_logits(scheme_model, rows, ref_tokens) if scheme_model is not None else ref_logits
            parts.append((ref_tokens, ref_logits, got_logits, free_tokens, scheme))
        ref_tokens, ref_logits, got_logits, free_tokens, scheme = (torch.cat(t) for t in zip(*parts))
        results.append(replace(compare(case, ref_tokens, ref_logits, got_logits, free_tokens, dtype, quant,
                                       scheme if scheme_model is not None else None), inputs=inputs))
    handle.reset_kv()
    return results


def as_rows(results: list[Validation]) -> list[dict]:
    return [asdict(r) for r in results]
