"""Memory during a grid cell: GPU memory from NVML (device-wide and this process), torch's allocator peak and
host RSS, sampled by a background thread; energy from NVML's total-energy counter.

NVML numbers devices physically, torch after CUDA_VISIBLE_DEVICES: the two are matched by UUID.
On a machine without a GPU every GPU field is None (empty in the CSV), never zero.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import psutil
import torch


def nvml_handle(device: str):
    """The NVML handle of the torch device, or None (no GPU, or no NVML)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = torch.device(device).index or 0
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            nv_uuid = pynvml.nvmlDeviceGetUUID(handle)
            nv_uuid = nv_uuid.decode() if isinstance(nv_uuid, bytes) else nv_uuid
            if nv_uuid.replace("GPU-", "") == uuid.replace("GPU-", ""):
                return handle
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - no NVML (library, driver or permission): no GPU numbers, never a crash
        return None


def _process_gpu_bytes(handle, pid: int) -> int | None:
    import pynvml

    try:
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid:
                return int(proc.usedGpuMemory) if proc.usedGpuMemory is not None else None
    except pynvml.NVMLError:
        return None
    return None  # containers often hide host pids from NVML


def energy_mj(handle) -> int | None:
    """NVML's total energy counter in millijoules, or None where the GPU does not support it."""
    if handle is None:
        return None
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except Exception:  # noqa: BLE001 - a GPU without the energy counter: no energy metric
        return None


@dataclass
class MemoryPeaks:
    gpu_device_used_peak_mib: float | None = None
    gpu_process_used_peak_mib: float | None = None
    torch_allocated_peak_mib: float | None = None
    host_rss_peak_mib: float | None = None


class MemorySampler:
    """Context manager: samples memory every ``interval_s`` in a thread; ``peaks`` holds the maxima."""

    def __init__(self, device: str, interval_s: float = 0.01):
        self.device = device
        self.interval_s = interval_s
        self.handle = nvml_handle(device)
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        mib = 1 << 20
        p = self.peaks
        rss = self._proc.memory_info().rss / mib
        p.host_rss_peak_mib = max(p.host_rss_peak_mib or 0.0, rss)
        if self.handle is not None:
            import pynvml

            used = pynvml.nvmlDeviceGetMemoryInfo(self.handle).used / mib
            p.gpu_device_used_peak_mib = max(p.gpu_device_used_peak_mib or 0.0, used)
            own = _process_gpu_bytes(self.handle, os.getpid())
            if own is not None:
                p.gpu_process_used_peak_mib = max(p.gpu_process_used_peak_mib or 0.0, own / mib)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.device.startswith("cuda"):
            self.peaks.torch_allocated_peak_mib = torch.cuda.max_memory_allocated(torch.device(self.device)) / (1 << 20)
