"""How long the results took to get: each run's wall time (from run.json: load, export or compile, validation
and every cell) and the span of the whole set, first start to last end, which for a sweep run one job after
another (the default multirun) is the sweep's wall time."""
from __future__ import annotations


def wall_time_lines(infos: list[dict]) -> list[str]:
    """Markdown lines for the report; none when no run recorded its wall time (results older than the field)."""
    timed = [i for i in infos if isinstance(i.get("wall_seconds"), (int, float))]
    if not timed:
        return []
    lines = ["Wall time per run (load, export or compile, validation and every cell):", ""]
    for info in sorted(timed, key=lambda i: i.get("started_unix") or 0):
        extra = _build_note(info.get("backend_info") or {})
        lines.append(f"- {info.get('_configuration') or info.get('_dir', '?')}: {info['wall_seconds']:.0f} s{extra}")
    starts = [i["started_unix"] for i in timed if isinstance(i.get("started_unix"), (int, float))]
    if len(starts) == len(timed) and len(timed) > 1:
        span = max(i["started_unix"] + i["wall_seconds"] for i in timed) - min(starts)
        lines += ["", f"All {len(timed)} runs, first start to last end: {span:.0f} s."]
    return lines + [""]


def _build_note(backend_info: dict) -> str:
    """What part of a run's wall time went into building before the first number, where the backend says."""
    notes = []
    if isinstance(backend_info.get("onnx_build_seconds"), (int, float)) and not backend_info.get("onnx_reused"):
        notes.append(f"ONNX export and check {backend_info['onnx_build_seconds']:.0f} s")
    compiled = backend_info.get("compile_seconds")
    if isinstance(compiled, dict) and compiled:
        notes.append(f"compile {sum(compiled.values()):.0f} s")
    return f" (of which {', '.join(notes)})" if notes else ""
