"""Was the machine quiet while a cell was timed? Host load, CPU steal and other busy processes (psutil), and the
GPU's clocks, power, temperature, throttle reasons, persistence mode and other processes on it (NVML).

:class:`MachineWatch` brackets a measurement (``start()`` ... ``stop()``): counters are read at both ends, so
``steal_frac``, ``other_cpu_frac`` and the GPU's power/thermal violation time cover the whole cell, while the
clock, power and temperature readings are the state at its end. :func:`snapshot` is one reading (per run, in
run.json). :func:`warnings_for` turns a state into the short warnings written beside the cell's results
(``machine_warnings`` column) and repeated by the report. Every reading is cheap (a few ms): no extra thread.
Fields the platform does not expose are absent, never zero.
"""
from __future__ import annotations

import os
import time
from typing import Any

import psutil

# NVML clock event (throttle) reasons, by bit, as nvml.h defines them. GPU idle, application clock settings and
# sync boost are not throttling of a busy GPU; the others lower clocks below what the workload asked for.
THROTTLE_BITS = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal",
                 0x80: "hw_power_brake", 0x100: "display_clock"}
HOT_C = 85  # a GPU at or above this temperature is close to thermal slowdown on data-centre parts
BUSY_PROCESS_FRAC = 0.2  # another process using more than 20 % of one core during a cell is reported
STEAL_FRAC = 0.02  # more than 2 % of CPU time stolen by the hypervisor: the VM's neighbours are busy


def _others_pids() -> set[int]:
    """This process, its parent (isolation=process) and its children: the benchmark itself, not 'others'."""
    me = psutil.Process()
    pids = {me.pid, me.ppid()}
    try:
        pids.update(c.pid for c in me.children(recursive=True))
    except psutil.Error:
        pass
    return pids


def host_state() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {"load_avg_1m": load1, "load_avg_5m": load5, "load_avg_15m": load15,
            "cpu_count": psutil.cpu_count() or 1}


def gpu_state(handle) -> dict[str, Any]:
    """Clocks, power, temperature, throttle reasons, persistence mode and other compute processes of one GPU."""
    if handle is None:
        return {}
    import pynvml

    def read(fn, *args):
        try:
            return fn(handle, *args)
        except Exception:  # noqa: BLE001 - a field this GPU / driver does not expose is left out
            return None

    state: dict[str, Any] = {
        "gpu_sm_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        "gpu_sm_clock_max_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        "gpu_mem_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        "gpu_temperature_c": read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
        "gpu_persistence_mode": read(pynvml.nvmlDeviceGetPersistenceMode),
    }
    power = read(pynvml.nvmlDeviceGetPowerUsage)
    limit = read(pynvml.nvmlDeviceGetEnforcedPowerLimit)
    state["gpu_power_w"] = power / 1e3 if power is not None else None
    state["gpu_power_limit_w"] = limit / 1e3 if limit is not None else None
    reasons = read(getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)
    if reasons is not None:
        state["gpu_throttle_reasons"] = [name for bit, name in THROTTLE_BITS.items() if reasons & bit]
    procs = read(pynvml.nvmlDeviceGetComputeRunningProcesses)
    if procs is not None:
        mine = _others_pids()
        state["gpu_other_processes"] = [int(p.pid) for p in procs if p.pid not in mine]
    return {k: v for k, v in state.items() if v is not None}


def _violation_ns(handle) -> dict[str, int]:
    """NVML's cumulative time (ns) the GPU spent clocked down for power and for temperature."""
    if handle is None:
        return {}
    import pynvml

    out = {}
    for name, policy in (("power", pynvml.NVML_PERF_POLICY_POWER), ("thermal", pynvml.NVML_PERF_POLICY_THERMAL)):
        try:
            out[name] = int(pynvml.nvmlDeviceGetViolationStatus(handle, policy).violationTime)
        except Exception:  # noqa: BLE001 - not supported on every GPU
            pass
    return out


def snapshot(device: str) -> dict[str, Any]:
    """One reading of the host and (for a CUDA device) the GPU: recorded per run in run.json."""
    from harness.measure.memory import nvml_handle

    return {**host_state(), **gpu_state(nvml_handle(device))}


class MachineWatch:
    """Counters at the start and the end of a measurement; ``stop()`` returns the cell's machine state."""

    def __init__(self, device: str):
        from harness.measure.memory import nvml_handle

        self.handle = nvml_handle(device)

    def start(self) -> MachineWatch:
        self._t0 = time.perf_counter()
        self._cpu0 = psutil.cpu_times()
        self._violations0 = _violation_ns(self.handle)
        self._procs = {}
        skip = _others_pids()
        for p in psutil.process_iter(["name"]):
            if p.pid not in skip:
                try:
                    p.cpu_percent(None)  # first call primes the counter; the reading comes in stop()
                    self._procs[p.pid] = p
                except psutil.Error:
                    pass
        return self

    def stop(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self._t0
        cpu1 = psutil.cpu_times()
        total = sum(cpu1) - sum(self._cpu0)
        state: dict[str, Any] = {"seconds": seconds, **host_state()}
        if total > 0 and hasattr(cpu1, "steal"):
            state["steal_frac"] = (cpu1.steal - self._cpu0.steal) / total
        busy = []
        for pid, p in self._procs.items():
            try:
                share = p.cpu_percent(None) / 100
                if share > BUSY_PROCESS_FRAC:
                    busy.append(f"{p.info['name']}({pid}) {share:.0%}")
            except psutil.Error:
                pass
        state["busy_processes"] = busy
        state.update(gpu_state(self.handle))
        state.pop("gpu_persistence_mode", None)  # a per-run setting, recorded once in run.json
        violations = _violation_ns(self.handle)
        for name, ns in violations.items():
            state[f"gpu_{name}_violation_ms"] = (ns - self._violations0.get(name, ns)) / 1e6
        return state

    def __enter__(self) -> MachineWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.state = self.stop()


def warnings_for(state: dict[str, Any]) -> list[str]:
    """Short reasons to distrust a measurement taken in ``state`` (empty when the machine was quiet)."""
    out = []
    cores = state.get("cpu_count", 1)
    if state.get("load_avg_1m", 0) > cores + 0.5:
        out.append(f"load average {state['load_avg_1m']:.1f} on {cores} cores")
    if state.get("steal_frac", 0) > STEAL_FRAC:
        out.append(f"CPU steal {state['steal_frac']:.0%}")
    if state.get("busy_processes"):
        out.append("busy processes: " + ", ".join(state["busy_processes"][:3]))
    if state.get("gpu_throttle_reasons"):
        out.append("GPU throttled: " + "+".join(state["gpu_throttle_reasons"]))
    for name in ("power", "thermal"):
        if state.get(f"gpu_{name}_violation_ms", 0) > 0:
            out.append(f"GPU clocked down for {name} {state[f'gpu_{name}_violation_ms']:.0f} ms")
    if state.get("gpu_temperature_c", 0) >= HOT_C:
        out.append(f"GPU at {state['gpu_temperature_c']} C")
    if state.get("gpu_other_processes"):
        out.append(f"other processes on the GPU: {state['gpu_other_processes'][:5]}")
    if state.get("gpu_persistence_mode") == 0:
        out.append("GPU persistence mode off (the driver may reinitialise the GPU between processes)")
    return out
