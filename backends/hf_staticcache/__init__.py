"""HF transformers with a static KV cache (``hf-flashattn-staticcache``)."""
