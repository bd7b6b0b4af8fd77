"""The forms the ONNX export can take (light: imported when backends register, before torch is needed)."""
from __future__ import annotations

ATTENTIONS = ("explicit", "gqa")  # written out as MatMul/Softmax/MatMul | ORT's GroupQueryAttention contrib op
