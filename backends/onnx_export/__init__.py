"""Our own ONNX export of an HF causal LM with a static KV cache (shared by `onnxruntime` and `trt-onnx-parsed`)."""
