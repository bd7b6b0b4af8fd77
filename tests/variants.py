"""Tiny configs of every architecture variant the conversions support (shared by the ONNX and TensorRT tests)."""
from helpers import tiny_model_cfg

VARIANTS = {
    "llama_gqa2": tiny_model_cfg(),
    "llama_mha": tiny_model_cfg(num_key_value_heads=4),
    "llama_gqa4_tied": tiny_model_cfg(num_key_value_heads=1, tie_word_embeddings=True),
    "llama3_rope_scaling": tiny_model_cfg(rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "qwen2_bias_tied": tiny_model_cfg(model_type="qwen2", tie_word_embeddings=True, rope_theta=1000000.0),
}


def variant_params():
    """The variants as pytest parameters: the first in the fast lane, the others marked slow (each costs an export
    or a network build)."""
    import pytest

    first = next(iter(VARIANTS))
    return [pytest.param(v, marks=() if v == first else pytest.mark.slow) for v in VARIANTS]
