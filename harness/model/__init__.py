"""The model layer: model sources (presets, checkpoint directories, GGUF files), the families the graph backends
rebuild, weight-only quantization schemes, transformers' cache argument, the static KV cache of graph runners, and
the artifact cache that holds what backends build from a model."""
