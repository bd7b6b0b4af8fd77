"""Samplers as pure functions on logits [B, V], composable in any order, and DRY.

DRY ("Don't Repeat Yourself") penalises the tokens that would extend a repetition of the recent context. Origin:
text-generation-webui PR #5677 (DRYLogitsProcessor, 2024); llama.cpp's port (src/llama-sampling.cpp, from
koboldcpp) fixed the exponent clamp used here. For a candidate token t, L(t) is the longest match between the
context's tail and an earlier stretch of the context that was followed by t; if L(t) >= allowed_length,
``logit[t] -= multiplier * base ** (L(t) - allowed_length)``.

Implementation: fully vectorised over the batch and the window, with no host synchronisation (GPU friendly).
Matches only matter up to ``allowed_length + max_exponent`` tokens (beyond that the clamped penalty is the same),
so each position compares at most that many tokens backwards: O(window · K) work, K ≈ 160 for base 1.75.
Context ids < 0 are padding and never match.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, Sequence

import torch

FLOAT_MAX_LOG = 88.7228391  # ln(FLT_MAX): the exponent clamp llama.cpp uses so the penalty stays finite


def dry_max_exponent(base: float) -> int | None:
    return int(FLOAT_MAX_LOG / math.log(base)) if base > 1.000001 else None


@functools.lru_cache(maxsize=64)
def _cached_breakers(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)  # the one host-to-device copy, on first use


def _breaker_tensor(breakers, device: torch.device) -> torch.Tensor:
    if torch.is_tensor(breakers):
        return breakers.to(device=device, dtype=torch.long)
    return _cached_breakers(tuple(int(b) for b in breakers), device)


def apply_dry(logits: torch.Tensor, context: torch.Tensor, *, multiplier: float, base: float, allowed_length: int,
              sequence_breakers: Sequence[int] | torch.Tensor = (), penalty_last_n: int = -1) -> torch.Tensor:
    """DRY penalty on a batch. logits [B, V] (any float dtype), context [B, T] token ids; returns new logits."""
    if multiplier == 0.0 or context.shape[1] < 2:
        return logits
    ctx = context if penalty_last_n in (0, -1) else context[:, -penalty_last_n:]
    ctx = ctx.to(device=logits.device, dtype=torch.long)
    batch, n = ctx.shape
    max_exp = dry_max_exponent(base)
    k = n - 1 if max_exp is None else min(n - 1, allowed_length + max_exp + 1)
    # match length of every earlier position i (0..n-2) against the tail: compare ctx[i-j] with ctx[n-1-j]
    pos = torch.arange(n - 1, device=ctx.device).view(-1, 1) - torch.arange(k, device=ctx.device).view(1, -1)
    earlier = ctx[:, pos.clamp(min=0)]  # [B, n-1, k]
    tail = ctx.flip(1)[:, :k]  # [B, k]: ctx[n-1-j]
    eq = (earlier == tail[:, None, :]) & (pos >= 0) & (earlier >= 0)
    length = eq.to(torch.int32).cumprod(-1).sum(-1, dtype=torch.int64)  # [B, n-1]
    breakers = _breaker_tensor(sequence_breakers, ctx.device)
    if breakers.numel():
        is_breaker = torch.isin(ctx, breakers)  # [B, n]
        idx = torch.arange(n, device=ctx.device).expand(batch, n)
        last_breaker = torch.where(is_breaker, idx, torch.full_like(idx, -1)).amax(1, keepdim=True)
        length = torch.minimum(length, n - 1 - last_breaker)  # no match across a breaker
        follower_ok = ~is_breaker[:, 1:]  # a breaker is never penalised
    else:
        follower_ok = torch.ones(batch, n - 1, dtype=torch.bool, device=ctx.device)
    follower = ctx[:, 1:]
    length = torch.where(follower_ok & (follower >= 0), length, torch.zeros_like(length))
    best = torch.zeros(batch, logits.shape[1], dtype=torch.int64, device=ctx.device)
    best.scatter_reduce_(1, follower.clamp(min=0), length, reduce="amax")
    exponent = (best - allowed_length).clamp(min=0).to(torch.float32)
    if max_exp is not None:
        exponent = exponent.clamp(max=max_exp)
    penalty = torch.where(best >= allowed_length, multiplier * torch.pow(base, exponent), torch.zeros_like(exponent))
    return logits - penalty.to(logits.dtype)


def sequence_breaker_ids(tokenizer, breakers: Iterable[str]) -> list[int]:
    """Token ids for breaker strings: every token a breaker string encodes to (alone, without special tokens)."""
    ids: set[int] = set()
    for text in breakers:
        ids.update(tokenizer.encode(text, add_special_tokens=False))
    return sorted(ids)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches top_p (the top token always stays)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    threshold = probs.amax(-1, keepdim=True) * min_p
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style: logits of tokens already in the context are divided by penalty (multiplied when negative)."""
    if penalty == 1.0:
        return logits
    context = context.to(logits.device)
    valid = (context >= 0).to(torch.int8)  # padding (-1) is clamped to id 0 but must not mark it as seen
    seen = torch.zeros(logits.shape, dtype=torch.int8, device=logits.device)
    seen = seen.scatter_reduce(1, context.clamp(min=0), valid, reduce="amax").bool()
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1, keepdim=True)


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row [B, 1] from softmax(logits), drawn on the logits' device."""
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


# Each option's valid range: (predicate, the range in words). Values outside them either did nothing (top_p=2
# leaves the distribution as it is) or crashed torch.multinomial mid-run (temperature=0, min_p=1.5).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "top_p": (lambda v: 0.0 < v <= 1.0, "0 < top_p <= 1"),
    "top_k": (lambda v: v >= 0, "top_k >= 0 (0 = off)"),
    "min_p": (lambda v: 0.0 <= v <= 1.0, "0 <= min_p <= 1"),
    "repetition_penalty": (lambda v: v > 0.0, "repetition_penalty > 0 (1 = off)"),
    "dry_multiplier": (lambda v: v >= 0.0, "dry_multiplier >= 0 (0 = off)"),
    "dry_base": (lambda v: v > 1.0, "dry_base > 1"),
    "dry_allowed_length": (lambda v: v >= 0, "dry_allowed_length >= 0"),
    "dry_penalty_last_n": (lambda v: v >= -1, "dry_penalty_last_n >= -1 (-1 = whole context)"),
}


def check_sampling(cfg) -> None:
    """Refuse a sampler option outside its range before any work: one UserError naming the key and the range."""
    from harness.errors import UserError

    if not cfg.greedy and not cfg.temperature > 0:
        raise UserError(f"sampling.temperature={cfg.temperature} is not above 0",
                        "use sampling.temperature>0, or sampling.greedy=true for argmax decoding")
    for key, (ok, words) in RANGES.items():
        if not ok(getattr(cfg, key)):
            raise UserError(f"sampling.{key}={getattr(cfg, key)} is out of range", f"use {words}")


Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROCESSORS = ("repetition_penalty", "dry", "temperature", "top_k", "top_p", "min_p")


def build_processors(cfg, breaker_ids: Sequence[int] = ()) -> list[Processor]:
    """The configured processors, in ``cfg.order``; each maps (logits, context) -> logits."""
    steps = {
        "repetition_penalty": lambda l, c: apply_repetition_penalty(l, c, cfg.repetition_penalty),
        "dry": lambda l, c: apply_dry(l, c, multiplier=cfg.dry_multiplier, base=cfg.dry_base,
                                      allowed_length=cfg.dry_allowed_length, sequence_breakers=breaker_ids,
                                      penalty_last_n=cfg.dry_penalty_last_n),
        "temperature": lambda l, c: apply_temperature(l, cfg.temperature),
        "top_k": lambda l, c: apply_top_k(l, cfg.top_k),
        "top_p": lambda l, c: apply_top_p(l, cfg.top_p),
        "min_p": lambda l, c: apply_min_p(l, cfg.min_p),
    }
    unknown = [name for name in cfg.order if name not in steps]
    if unknown:
        from harness.errors import UserError

        raise UserError(f"unknown sampler step(s) {unknown} in sampling.order", f"use names from {list(PROCESSORS)}")
    return [steps[name] for name in cfg.order]


def next_tokens(logits: torch.Tensor, context: torch.Tensor, processors: list[Processor], do_greedy: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
    for step in processors:
        logits = step(logits, context)
    return greedy(logits) if do_greedy else sample(logits, generator)
