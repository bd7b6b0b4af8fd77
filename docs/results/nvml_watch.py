"""Evidence for a multi-GPU sweep (gpu_session.sh step ``multigpu``): which process used which GPU, and when.

    python3 docs/results/nvml_watch.py sample OUT.csv [--interval 0.2]   # until SIGTERM/SIGINT
    python3 docs/results/nvml_watch.py check SWEEP_DIR OUT.csv [--expect-gpus 2] > check.md

``sample`` writes one row per (sample, GPU, compute process) from NVML: GPU index and UUID, GPU utilisation, the
process id and its GPU memory (a GPU without processes gets one row with an empty pid). ``check`` reads a multirun's
run.json files and such a CSV, and states (exit 1 if one fails): each job ran on the GPU it claimed and the jobs
used ``--expect-gpus`` different GPU UUIDs; the jobs' device claims overlapped in time (they ran at once) or did
not; no process appeared on two GPUs; and, where NVML shows this container's process ids, each job's worker
process appeared only on its own GPU (inside a container NVML may report host pids: then that line says so).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import signal
import sys
import time
from pathlib import Path

FIELDS = ["t", "gpu_index", "gpu_uuid", "gpu_util_pct", "gpu_used_mib", "pid", "pid_used_mib"]


def sample(out: Path, interval: float) -> None:
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # noqa: BLE001 - no GPU / no NVML: an empty table says so
            print(f"nvml_watch: no NVML ({exc}); writing the header only", file=sys.stderr)
            return
        while not stop["now"]:
            t = time.time()
            for i, h in enumerate(handles):
                uuid = pynvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                used = pynvml.nvmlDeviceGetMemoryInfo(h).used >> 20
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                base = {"t": f"{t:.3f}", "gpu_index": i, "gpu_uuid": uuid, "gpu_util_pct": util,
                        "gpu_used_mib": used}
                for p in procs or [None]:
                    mib = "" if p is None or p.usedGpuMemory is None else int(p.usedGpuMemory) >> 20
                    w.writerow({**base, "pid": "" if p is None else p.pid, "pid_used_mib": mib})
            f.flush()
            time.sleep(interval)


def _norm(uuid: str | None) -> str:
    return (uuid or "").replace("GPU-", "")


def check(sweep: Path, samples: Path, expect_gpus: int) -> int:
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))}
    rows = []
    if samples.exists():
        with open(samples, newline="") as f:
            rows = list(csv.DictReader(f))
    lines, ok = [f"# Multi-GPU check of {sweep.name} ({len(runs)} jobs, {len(rows)} NVML rows)", ""], True

    def state(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        lines.append(f"- {'PASS' if passed else 'FAIL'}: {text}")

    lines.append("| job | backend | claimed device | GPU UUID | waited s | claimed..released (s after first) | "
                 "worker pids | exit |")
    lines.append("|---|---|---|---|---|---|---|---|")
    t0 = min((r.get("pin", {}).get("claimed_at") or 0 for r in runs.values()), default=0)
    for name, r in runs.items():
        pin = r.get("pin") or {}
        env = r.get("environment", {})
        span = (f"{pin['claimed_at'] - t0:.1f}..{pin['released_at'] - t0:.1f}"
                if pin.get("claimed_at") and pin.get("released_at") else "")
        lines.append(f"| {name} | {r['config']['backend']['name']} | {pin.get('device', r.get('device'))} | "
                     f"{env.get('gpu_uuid', '')} | {pin.get('waited_s', '')} | {span} | "
                     f"{(r.get('isolation') or {}).get('worker_pids', '')} | {r.get('exit_code')} |")
    lines.append("")
    uuids = {name: _norm(r.get("environment", {}).get("gpu_uuid")) for name, r in runs.items()}
    state(all(r.get("pin", {}).get("device") == r.get("device") for r in runs.values()),
          "every job ran on the device it claimed (run.json `device` = `pin.device`)")
    state(len(set(uuids.values()) - {""}) == expect_gpus,
          f"the jobs used {len(set(uuids.values()) - {''})} different GPU UUIDs (expected {expect_gpus})")
    spans = sorted((r["pin"]["claimed_at"], r["pin"]["released_at"]) for r in runs.values()
                   if r.get("pin", {}).get("released_at"))
    overlap = any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    how = "overlapped: they ran at the same time" if overlap else "did not overlap: they ran one after the other"
    lines.append(f"- INFO: the jobs' device claims {how}")
    gpus_of_pid: dict[str, set[str]] = {}
    for row in rows:
        if row["pid"]:
            gpus_of_pid.setdefault(row["pid"], set()).add(_norm(row["gpu_uuid"]))
    if rows:
        state(all(len(g) == 1 for g in gpus_of_pid.values()),
              f"no process appeared on two GPUs ({len(gpus_of_pid)} processes seen by NVML: "
              + ", ".join(f"{pid} on {sorted(g)}" for pid, g in sorted(gpus_of_pid.items())) + ")")
        mapped = 0
        for name, r in runs.items():
            for pid in (r.get("isolation") or {}).get("worker_pids", []):
                if str(pid) in gpus_of_pid:
                    mapped += 1
                    state(gpus_of_pid[str(pid)] == {uuids[name]},
                          f"{name}: its worker {pid} appeared only on its own GPU {uuids[name]}")
        if not mapped:
            lines.append("- INFO: NVML shows none of the jobs' worker pids (a container: NVML reports host pids); "
                         "the line above (no pid on two GPUs) is the check that still holds")
        busy = {}
        for row in rows:
            if row["pid"]:
                busy.setdefault(row["gpu_index"], []).append(float(row["pid_used_mib"] or 0))
        for gpu, mib in sorted(busy.items()):
            lines.append(f"- INFO: GPU {gpu}: a compute process in {len(mib)} samples, peak {max(mib):.0f} MiB")
    else:
        lines.append("- INFO: no NVML samples (no GPU here)")
    print("\n".join(lines))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("out", type=Path)
    s.add_argument("--interval", type=float, default=0.2)
    c = sub.add_parser("check")
    c.add_argument("sweep", type=Path)
    c.add_argument("samples", type=Path)
    c.add_argument("--expect-gpus", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "sample":
        sample(a.out, a.interval)
    else:
        sys.exit(check(a.sweep, a.samples, a.expect_gpus))


if __name__ == "__main__":
    main()
