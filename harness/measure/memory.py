"""Memory during a grid cell: GPU memory from NVML (device-wide and this process), torch's allocator peak and
host RSS, sampled by a background thread; energy from NVML's total-energy counter.

Two different peaks, under two names:

- per cell (the memory metrics of each results.csv row): the highest reading inside that cell's own window. The
  cell loop hands torch's cached blocks back before the window opens (harness/run/sweep.py) and the allocator's peak
  is reset when it opens, so a small cell after a large one no longer shows the large one's high-water mark. A
  backend's own arena (ONNX Runtime's) is not torch's to release: what it grew for an earlier cell stays in its
  process reading, which is why the allocator peak is the number to compare between cells of torch backends.
- per run (``memory_lifetime_peak_mib`` in run.json, :func:`lifetime_peaks`): the highest of every cell's peak,
  and, for a job run in this process, torch's allocator peak from before the first cell (load, validation).

NVML numbers devices physically, torch after CUDA_VISIBLE_DEVICES: the two are matched by UUID.
On a machine without a GPU every GPU field is None (empty in the CSV), never zero.
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, fields

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


_LIFETIME = MemoryPeaks()  # this process's highest readings: every window, and torch's peak before each reset


def _fold(into: MemoryPeaks, peaks: MemoryPeaks) -> None:
    for f in fields(MemoryPeaks):
        new = getattr(peaks, f.name)
        if new is not None:
            setattr(into, f.name, max(getattr(into, f.name) or 0.0, new))


def lifetime_peaks(rows: list[dict]) -> dict[str, float]:
    """The run's peak per memory metric: the highest over its finished cells' rows (results.csv dicts) and this
    process's own readings; only the metrics that were measured."""
    out = {k: v for k, v in asdict(_LIFETIME).items() if v is not None}
    for r in rows:
        if r.get("status") == "ok" and r.get("metric") in asdict(_LIFETIME):
            try:
                value = float(r.get("max") or r.get("mean"))
            except (TypeError, ValueError):
                continue
            out[r["metric"]] = max(out.get(r["metric"], 0.0), value)
    return out


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
            before = torch.cuda.max_memory_allocated(torch.device(self.device)) / (1 << 20)
            _fold(_LIFETIME, MemoryPeaks(torch_allocated_peak_mib=before))  # load, validation: the run's
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
        _fold(_LIFETIME, self.peaks)
