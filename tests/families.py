"""Tiny checkpoints of every described family, saved by transformers itself (hidden 64, 2 layers, vocab 256).

Each family's fixture exercises a general case of its kind rather than the default: a head size other than
hidden / heads, tied embeddings, attention biases, RoPE scaling, local/global layers.
"""
from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)

FAMILY_CONFIGS = {
    "llama": dict(attention_bias=True, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "mistral": dict(head_dim=32, sliding_window=4096),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(head_dim=32, tie_word_embeddings=True),
    "phi3": dict(rope_scaling=None),
    "gemma3_text": dict(head_dim=32, sliding_window=256, layer_types=["sliding_attention", "full_attention"],
                        query_pre_attn_scalar=32, rope_local_base_freq=10000.0),
}


def save_tiny_checkpoint(model_type: str, directory: Path, **overrides) -> Path:
    """Save a seeded random-weight checkpoint of ``model_type`` (no tokenizer files) into ``directory``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    params = {**COMMON, **FAMILY_CONFIGS.get(model_type, {}), **overrides}
    config = AutoConfig.for_model(model_type, **params)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # Gemma's norms start at zero (1 + w = 1): give every norm weight some spread
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2) if model_type.startswith("gemma") else p.uniform_(0.8, 1.2)
    model.save_pretrained(directory)
    return directory


def checkpoint_cfg(path: Path) -> dict:
    return {"preset": "custom", "path": str(path), "dtype": None, "hf_config": None}
