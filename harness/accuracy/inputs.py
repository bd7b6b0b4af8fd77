"""Seeded benchmark inputs: random token ids that avoid special tokens, identical across backends for a seed."""
from __future__ import annotations

import torch

TEXT_STEPS = 32  # default validation new tokens on real text: a greedy continuation long enough to be a real answer
RANDOM_STEPS = 8  # default on random weights (near-tied logits: longer runs only measure the ties)


def special_token_ids(config) -> set[int]:
    ids = set()
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def random_prompt_ids(config, batch: int, prompt_len: int, seed: int) -> torch.Tensor:
    """[batch, prompt_len] int64 on CPU, drawn uniformly from the non-special vocabulary."""
    allowed = torch.ones(config.vocab_size, dtype=torch.bool)
    for i in special_token_ids(config):
        if 0 <= i < config.vocab_size:
            allowed[i] = False
    pool = allowed.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + batch * 10_007 + prompt_len)  # one stream per cell
    return pool[torch.randint(len(pool), (batch, prompt_len), generator=gen)]


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors to one batch: ([B, P] ids, [B] real lengths)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = r
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.long)
