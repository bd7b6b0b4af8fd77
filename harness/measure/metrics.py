"""The names and units of the metrics in results.csv, defined once (the measurement, the summary table and the
reports refer to these constants, never to string literals)."""
from __future__ import annotations

PREFILL_LATENCY = "prefill_latency_ms"
DECODE_LATENCY = "decode_latency_ms"
E2E_LATENCY = "e2e_latency_ms"
# The latencies above are sustained (what the host sees between tokens, harness/measure/instrument.py); these are the
# device's own time of the same hook calls (CUDA events; on a CPU the call's wall time).
PREFILL_DEVICE = "prefill_device_ms"
DECODE_DEVICE = "decode_device_ms"
PREFILL_THROUGHPUT = "prefill_throughput_tok_s"
DECODE_THROUGHPUT = "decode_throughput_tok_s"
E2E_THROUGHPUT = "e2e_throughput_tok_s"
DECODE_BANDWIDTH = "decode_bandwidth_gb_s"
DECODE_BANDWIDTH_FRAC = "decode_bandwidth_frac"
PREFILL_TFLOPS = "prefill_tflop_s"
ENERGY_PER_TOKEN = "energy_per_token_j"
# Memory peaks: one metric per MemoryPeaks field (MiB), present only where measured (no GPU: no GPU metric).
GPU_DEVICE_PEAK = "gpu_device_used_peak_mib"
GPU_PROCESS_PEAK = "gpu_process_used_peak_mib"
TORCH_ALLOCATED_PEAK = "torch_allocated_peak_mib"
HOST_RSS_PEAK = "host_rss_peak_mib"
MEMORY = (GPU_DEVICE_PEAK, GPU_PROCESS_PEAK, TORCH_ALLOCATED_PEAK, HOST_RSS_PEAK)

LATENCIES = (DECODE_LATENCY, PREFILL_LATENCY, E2E_LATENCY, DECODE_DEVICE, PREFILL_DEVICE)

UNITS = {
    PREFILL_LATENCY: "ms", DECODE_LATENCY: "ms", E2E_LATENCY: "ms", PREFILL_DEVICE: "ms", DECODE_DEVICE: "ms",
    PREFILL_THROUGHPUT: "tokens/s", DECODE_THROUGHPUT: "tokens/s", E2E_THROUGHPUT: "tokens/s",
    DECODE_BANDWIDTH: "GB/s", DECODE_BANDWIDTH_FRAC: "fraction of measured copy bandwidth",
    PREFILL_TFLOPS: "TFLOP/s", ENERGY_PER_TOKEN: "J/token",
    **{name: "MiB" for name in MEMORY},
}
