"""ONNX Runtime on our static-KV-cache ONNX export (``onnxruntime``)."""
