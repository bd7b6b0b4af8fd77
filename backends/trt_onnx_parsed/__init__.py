"""TensorRT engine from our static-cache ONNX export through TensorRT's ONNX parser (``trt-onnx-parsed``)."""
