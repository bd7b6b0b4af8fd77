"""A TensorRT network written layer by layer with the network-definition API (``trt-handbuilt``)."""
