"""The environment a result was measured in, recorded in run.json next to every results.csv."""
from __future__ import annotations

import importlib.metadata as metadata
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "tensorrt-rtx-cu13-bindings", "pluggy", "hydra-core", "omegaconf", "numpy", "pandas", "scipy",
             "nvidia-ml-py", "flash-attn")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info(device: str) -> dict[str, Any]:
    if not device.startswith("cuda"):
        return {}
    from harness.measure.memory import nvml_handle

    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    info: dict[str, Any] = {
        "gpu_name": props.name, "gpu_uuid": str(props.uuid), "gpu_compute_capability": f"{props.major}.{props.minor}",
        "gpu_memory_mib": props.total_memory // (1 << 20), "cuda_runtime": torch.version.cuda,
    }
    handle = nvml_handle(device)
    if handle is not None:
        import pynvml

        info["gpu_driver"] = pynvml.nvmlSystemGetDriverVersion()
        try:
            v = pynvml.nvmlSystemGetCudaDriverVersion()
            info["cuda_driver"] = f"{v // 1000}.{(v % 1000) // 10}"
        except pynvml.NVMLError:
            pass
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}


def describe(device: str) -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu_name(), "cpu_count": torch.get_num_threads(), "device": device, **gpu_info(device),
        "libraries": library_versions(), "git_commit": git_commit(),
    }


def device_label(device: str) -> str:
    """What a result row names as its device: the GPU model, or 'cpu'."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device).index or 0).name
    return "cpu"
