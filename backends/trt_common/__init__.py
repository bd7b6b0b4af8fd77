"""Shared by the TensorRT backends: which TensorRT is installed, the engine cache and builder, the runtime."""
