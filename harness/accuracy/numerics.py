"""What a backend's numerics cost, measured against the float32 HF model on the same inputs.

- :func:`logit_drift`: max and mean |Δlogit|, the KL divergence of the next-token distributions
  (KL(P_fp32 || P_backend), nats, averaged over rows and steps) and top-1 agreement, for teacher-forced logits
  ``[B, T, V]`` (every step sees the same context, so the numbers are the backend's and not its past choices').
- :func:`forced_logits`: the logits of an HF model teacher-forced on given tokens (one forward per row): the
  logits of the same weight-quantization scheme applied to HF (harness/model/quant.py), i.e. "what the scheme costs".
- :func:`backend_perplexity`: the perplexity of a short English text shipped with the project
  (``harness/data/perplexity.txt``), computed through the backend's own prefill and decode hooks; only meaningful
  for a real checkpoint with a tokenizer (random weights give ~vocabulary-size perplexity whatever the backend).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

TEXT_FILE = Path(__file__).resolve().parent.parent / "data" / "perplexity.txt"


def kl_divergence(ref_logits: torch.Tensor, got_logits: torch.Tensor) -> float:
    """Mean over every leading position of KL(softmax(ref) || softmax(got)) in nats (float32)."""
    ref = torch.log_softmax(ref_logits.float(), -1)
    got = torch.log_softmax(got_logits.float(), -1)
    return max(0.0, float((ref.exp() * (ref - got)).sum(-1).mean()))  # >= 0: identical inputs round to -1e-8


def logit_drift(ref_logits: torch.Tensor, got_logits: torch.Tensor) -> dict[str, float]:
    """max/mean |Δlogit|, KL and top-1 agreement of ``got`` against ``ref`` (same shape, [..., V])."""
    if not bool(torch.isfinite(got_logits).all()):
        nan = float("nan")
        return {"max_abs_diff": nan, "mean_abs_diff": nan, "kl_divergence": nan, "top1_agreement": 0.0}
    diff = (got_logits.float() - ref_logits.float()).abs()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "kl_divergence": kl_divergence(ref_logits, got_logits),
            "top1_agreement": float((got_logits.argmax(-1) == ref_logits.argmax(-1)).float().mean())}


def greedy_agreement(ref_tokens: torch.Tensor, got_tokens: torch.Tensor) -> float:
    """Matching prefix length / steps, averaged over rows ([B, T] each): 1.0 = identical greedy continuations."""
    same = (got_tokens == ref_tokens).int()
    return float(same.cumprod(1).sum(1).float().mean() / ref_tokens.shape[1])


@torch.no_grad()
def forced_logits(model, rows: list[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, V] float32: per row alone, the logits after the prompt and after each of ``tokens[b, :T-1]``."""
    steps = tokens.shape[1]
    out = []
    for b, row in enumerate(rows):
        ids = torch.cat([row, tokens[b, : steps - 1]])[None]
        out.append(model(input_ids=ids).logits[0, -steps:].float())
    return torch.stack(out)


def shipped_text_ids(tokenizer, max_tokens: int) -> torch.Tensor:
    """[1, N] token ids of the shipped text (BOS first when the tokenizer has one), at most ``max_tokens``."""
    ids = tokenizer(TEXT_FILE.read_text(), return_tensors="pt").input_ids[:, :max_tokens]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and int(ids[0, 0]) != bos:
        ids = torch.cat([torch.tensor([[bos]]), ids[:, : max_tokens - 1]], 1)
    return ids


def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean NLL) of ``targets`` [N] under ``logits`` [N, V]."""
    nll = torch.nn.functional.cross_entropy(logits.float(), targets)
    return float(math.exp(float(nll)))


@torch.no_grad()
def reference_perplexity(model, ids: torch.Tensor) -> float:
    logits = model(input_ids=ids).logits[0, :-1]
    return perplexity_from_logits(logits, ids[0, 1:])


@torch.no_grad()
def backend_perplexity(handle, ids: torch.Tensor, device: str) -> float:
    """Teacher-forced through the hooks: prefill the first token, then one decode step per following token."""
    handle.reset_kv()
    logits = [handle.prefill(input_ids=ids[:, :1].to(device), prompt_lens=None).float().cpu()]
    for k in range(1, ids.shape[1] - 1):
        logits.append(handle.decode_step(tokens=ids[:, k:k + 1].to(device)).float().cpu())
    handle.reset_kv()
    return perplexity_from_logits(torch.cat(logits), ids[0, 1:])
