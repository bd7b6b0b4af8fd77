"""The report's wall-time lines: per run from run.json, with the build share a backend reports, and the span of
the set (first start to last end), by hand."""
from harness.report.walltime import wall_time_lines


def test_wall_time_per_run_and_span_by_hand():
    infos = [
        {"_configuration": "onnxruntime", "started_unix": 1000.0, "wall_seconds": 120.0,
         "backend_info": {"onnx_build_seconds": 84.2, "onnx_reused": False}},
        {"_configuration": "hf[compile=max-autotune]", "started_unix": 1130.0, "wall_seconds": 60.0,
         "backend_info": {"compile_seconds": {"1": 30.0, "8": 12.0}}},
        {"_configuration": "old run without the field"},
    ]
    lines = wall_time_lines(infos)
    assert "- onnxruntime: 120 s (of which ONNX export and check 84 s)" in lines
    assert "- hf[compile=max-autotune]: 60 s (of which compile 42 s)" in lines
    assert "All 2 runs, first start to last end: 190 s." in lines  # 1130 + 60 - 1000
    assert not any("old run" in line for line in lines)


def test_no_wall_time_lines_for_results_that_predate_the_field():
    assert wall_time_lines([{"_configuration": "x"}]) == []
    reused = wall_time_lines([{"_configuration": "ort", "wall_seconds": 5.0,
                               "backend_info": {"onnx_build_seconds": 80.0, "onnx_reused": True}}])
    assert reused == ["Wall time per run (load, export or compile, validation and every cell):", "",
                      "- ort: 5 s", ""]
