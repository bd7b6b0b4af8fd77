"""Roofline bytes of what the kernels read (harness/measure/roofline.py): a masked SDPA over a static cache reads every
slot, a FlashAttention-style kernel the filled part; packed zero points count at their width. Hand-derived."""
import pytest
from transformers import LlamaConfig

from harness.measure.roofline import KV_READ, attention_reads, decode_bytes_read
from harness.model.quant import QuantScheme, weight_bytes

# 2 layers, 2 KV heads of 16: per layer and row, a K and a V vector of 32 elements per position
CONFIG = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100)
KV_BYTES_PER_POSITION = 2 * 2 * 2 * 16 * 2  # K and V x layers x kv heads x head_dim x 2 bytes (bf16)


def test_a_static_cache_read_whole_counts_every_slot_and_a_flash_read_the_mean_fill():
    batch, prompt, new = 4, 100, 28
    filled = decode_bytes_read(CONFIG, batch, prompt, new, 2, QuantScheme(), attention_reads("filled"), 0)
    whole = decode_bytes_read(CONFIG, batch, prompt, new, 2, QuantScheme(), attention_reads("allocated", 1088), 0)
    # the mean fill over the steps is prompt + new/2 = 114 positions; the whole cache is 1088 of them
    assert whole - filled == pytest.approx(batch * (1088 - 114) * KV_BYTES_PER_POSITION)
    # no fact: the filled part (an unknown backend's bandwidth is never flattered)
    assert decode_bytes_read(CONFIG, batch, prompt, new, 2, QuantScheme(), {}, 0) == filled
    # "allocated" without a stated length: the fallback length given by the caller
    fallback = decode_bytes_read(CONFIG, batch, prompt, new, 2, QuantScheme(), {KV_READ: "allocated"}, 512)
    assert fallback - filled == pytest.approx(batch * (512 - 114) * KV_BYTES_PER_POSITION)


def test_packed_zero_points_count_at_their_width():
    q = QuantScheme("int4", 64, False)
    linears = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 2 * 128 * 64 + 64 * 128)  # 73728 quantized weights
    groups = linears / 64
    # zero points in bf16 (2 bytes) against packed at 4 bits (half a byte): 1.5 bytes less per group
    assert weight_bytes(CONFIG, q, 2) - weight_bytes(CONFIG, q, 2, zero_point_bits=4) == pytest.approx(groups * 1.5)
    facts = attention_reads("filled", zero_point_bits=4)
    assert decode_bytes_read(CONFIG, 1, 8, 2, 2, q, facts, 0) < decode_bytes_read(CONFIG, 1, 8, 2, 2, q, {}, 0)


def test_an_unknown_read_is_refused():
    with pytest.raises(ValueError, match="kv_cache_read"):
        attention_reads("some")
