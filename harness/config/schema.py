"""The configuration schema, as frozen dataclasses, and the checks Hydra cannot do itself.

:class:`JobSpec` is one job's whole configuration: the command line (harness/cli.py) and the Python API compose it
with Hydra (harness/compose.py, which also puts this schema into Hydra's ConfigStore) and hand it on typed and
frozen, so nothing past the entry sees Hydra or OmegaConf. The backend's options arrive as an instance of the
backend's own options dataclass (:class:`BackendChoice`, harness/options.py). A change of a job's settings (the
isolation it really uses, the repeat it runs) is a new spec: ``dataclasses.replace``.

Hydra checks names and types; :func:`check_config` checks meaning (non-empty grids, ranges, choices) and raises a
:class:`UserError` that says how to fix the input. The schema is plain typed data and these range checks: it reads
no model file. What a job asks of its model (positions, dtype, weight-only scheme) is checked against the model's
config or header by the one job check (harness/config/jobcheck.py, with harness/model/limits.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from harness.accuracy.inputs import RANDOM_STEPS
from harness.accuracy.sampling import check_sampling
from harness.config.input_checks import check_inputs, check_repeats
from harness.errors import UserError

TASKS = ("benchmark", "validate", "build", "generate", "chat")
ISOLATION = ("none", "process")


@dataclass(frozen=True)
class GridConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    prompt_lens: list[int] = field(default_factory=lambda: [32, 128])
    new_tokens: int = 32


@dataclass(frozen=True)
class MeasureConfig:
    warmup: int = 2  # iterations per cell before timing (compilation, allocator, caches)
    min_iters: int = 5  # timed iterations per cell, at least ...
    min_seconds: float = 1.0  # ... and at least this long
    max_iters: int = 1000  # safety cap on a very fast cell
    memory_interval_ms: float = 10.0  # NVML / RSS sampling period
    cell_timeout_s: Optional[float] = None  # with isolation=process: a cell running longer is killed (status timeout);
    # the validation and the harness-overhead measurement get the same limit
    load_timeout_s: Optional[float] = 3600.0  # with isolation=process: a load (export, engine build) running longer is
    # killed and every cell recorded as timeout; generous because building an engine can take long (null: no limit)
    overhead_steps: int = 50  # decode steps used to measure the harness's own overhead
    skip_larger_after_oom: bool = True  # after an OOM cell, record larger cells as skipped instead of trying them
    # Keep timing a cell until its medians' 95 % intervals are within ± this fraction (0.02 = ±2 %), null = off;
    # checked after min_iters and min_seconds, and never past max_seconds / max_iters.
    target_rel_ci: Optional[float] = None
    max_seconds: float = 60.0  # cap on one cell's timed phase while target_rel_ci is not yet reached
    # Run the whole grid this many times, each a fresh load of the backend (a new worker with isolation=process), so
    # that verdicts include the run-to-run spread (harness/record/replicated.py); in a multirun the repeats of every
    # configuration are interleaved (harness/run/repeats.py). Rows carry `repeat`.
    repeats: int = 1
    repeat: Optional[int] = None  # the one repeat this job runs (set per job by a multirun with repeats; null: all)
    profile: bool = False  # after each cell's timed iterations: profile it into <run dir>/profile/ (docs/profiling.md)
    profile_steps: int = 8  # decode steps profiled per cell (at most grid.new_tokens)


@dataclass(frozen=True)
class ValidationConfig:
    enabled: bool = True  # validate each backend once per benchmark job (the `validation` column)
    batch: int = 2
    prompt_len: int = 16  # random ids; a model with a tokenizer is validated on real chat prompts (accuracy/prompts.py)
    new_tokens: Optional[int] = None  # null: 32 on real text, 8 on random weights
    perplexity_tokens: int = 128  # tokens of harness/data/perplexity.txt scored (checkpoints with a tokenizer)


@dataclass(frozen=True)
class ModelConfig:
    preset: str  # conf/model/<preset>.yaml, or "custom"
    path: Optional[str] = None  # a local HF checkpoint directory
    gguf: Optional[str] = None  # a GGUF file (converted once into a cached HF checkpoint) ...
    gguf_package: Optional[str] = None  # ... or, with this, a file inside that installed pip package
    dtype: Optional[str] = None
    hf_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingConfig:
    order: list[str] = field(default_factory=lambda: ["repetition_penalty", "dry", "temperature", "top_k",
                                                      "top_p", "min_p"])
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_sequence_breakers: list[str] = field(default_factory=lambda: ["\n", ":", "\"", "*"])
    dry_penalty_last_n: int = -1


@dataclass(frozen=True)
class GenerateConfig:
    prompt: Optional[str] = None  # text with a tokenizer; comma- or space-separated token ids without one
    max_new_tokens: int = 32
    stop: list[str] = field(default_factory=list)
    stream: bool = True
    chat: Optional[bool] = None  # wrap the prompt in the tokenizer's chat template; null = when it has one


@dataclass(frozen=True)
class ReportConfig:
    baseline: Optional[str] = None  # configuration speedups are measured against; null: HF's default if present
    plots: bool = True


@dataclass(frozen=True)
class PinConfig:
    """``device=pin`` (harness/run/pinning.py): how jobs of a parallel sweep share the host's devices."""

    jobs_per_gpu: int = 1  # jobs that may use one GPU at once (1: each job has its GPU to itself)
    cpu_slots: int = 0  # without a GPU: at most this many jobs run at once on the CPU (0: no limit)
    wait_s: Optional[float] = None  # how long a job waits for a free GPU before giving up (None: no limit)
    lock_dir: Optional[str] = None  # the per-GPU lock files (local disk); default: <temp dir>/enginebench-locks-<uid>


@dataclass(frozen=True)
class QuantOptions:
    group_size: Optional[int] = None  # input columns per scale; 0 = per output channel; null = 128 (fit to the model)
    symmetric: Optional[bool] = None  # null: int8/fp8 symmetric, int4 asymmetric (see harness/model/quant.py)


@dataclass(frozen=True)
class BackendChoice:
    """The selected backend: its registered name and its options, an instance of the backend's own options
    dataclass (``enginebench_backend_options``; for ``enginebench_backend_defaults``, one made from the defaults).

    Pickled by name and values (to a worker process, harness/isolation.py): the worker's plugin registry gives the
    class back, which for a backend declared by a dict of defaults exists only where a registry made it."""

    name: str
    options: Any

    def values(self) -> dict[str, Any]:
        """The options as plain values, by field name (``name`` is not among them)."""
        return dataclasses.asdict(self.options)

    def as_dict(self) -> dict[str, Any]:
        """The ``backend`` node as the config holds it: ``name`` first, then every option."""
        return {"name": self.name, **self.values()}

    def __reduce__(self):
        return _backend_choice, (self.name, self.values())


def _backend_choice(name: str, values: dict[str, Any]) -> BackendChoice:
    from harness.plugin.plugins import registry

    return BackendChoice(name, registry().option_classes[name](**values))


@dataclass(frozen=True)
class JobSpec:
    """One job's configuration, resolved, typed and frozen (what every module past the entry receives)."""

    backend: BackendChoice
    model: ModelConfig
    device: str = "auto"
    task: str = "benchmark"
    quant: str = "none"  # none | int8 | int4 | fp8: weight-only quantization of the decoder linears (model/quant.py)
    quant_options: QuantOptions = field(default_factory=QuantOptions)
    seed: int = 0
    grid: GridConfig = field(default_factory=GridConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pin: PinConfig = field(default_factory=PinConfig)
    cache_dir: Optional[str] = None  # artifact cache (ONNX, engines); default ~/.cache/enginebench
    isolation: str = "none"  # none | process (each backend job in a child process: survives native crashes)
    resume: bool = False  # continue the run in output_dir: only its missing cells (and failed ones, see next) run
    retry_failed: bool = True  # with resume: cells recorded as load_failed/error/crashed/timeout run again
    overwrite: bool = False  # replace the results already in output_dir (without it, a non-empty dir is refused)
    output_dir: Optional[str] = None  # default: Hydra's job directory
    prompt: Optional[str] = None  # shorthand for generate.prompt (task=generate)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain values, in the schema's order (run.json's ``config``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, BackendChoice):
                value = value.as_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            out[f.name] = value
        return out

    def with_measure(self, **changes: Any) -> "JobSpec":
        """This spec with some ``measure.*`` values changed (a frozen spec is never changed in place)."""
        return dataclasses.replace(self, measure=dataclasses.replace(self.measure, **changes))


def _positive_list(values, key: str) -> list[int]:
    values = list(values)
    if not values:
        raise UserError(f"{key} is empty", f"give at least one value, e.g. {key}=[1]")
    bad = [v for v in values if v < 1]
    if bad:
        raise UserError(f"{key} has values below 1: {bad}", f"use positive integers, e.g. {key}=[1,8]")
    return values


def check_pin(pin) -> None:
    if pin.jobs_per_gpu < 1:
        raise UserError(f"pin.jobs_per_gpu={pin.jobs_per_gpu} is below 1", "use pin.jobs_per_gpu=1 (one job per GPU)")
    if pin.cpu_slots < 0:
        raise UserError(f"pin.cpu_slots={pin.cpu_slots} is negative", "use pin.cpu_slots=0 (no limit) or N >= 1")
    if pin.wait_s is not None and pin.wait_s < 0:
        raise UserError(f"pin.wait_s={pin.wait_s} is negative", "use pin.wait_s=null (wait as long as it takes)")


def check_config(cfg, multirun: bool = False) -> None:
    """Meaning-level checks of a composed config (Hydra has already checked keys and types). In a multirun
    (``multirun=True``) each job has a directory of its own under the sweep directory, which resume=true resumes."""
    if cfg.task not in TASKS:
        raise UserError(f"unknown task '{cfg.task}'", f"use task={' | task='.join(TASKS)}")
    if cfg.isolation not in ISOLATION:
        raise UserError(f"unknown isolation '{cfg.isolation}'", "use isolation=none or isolation=process")
    numbered_gpu = cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()
    if not (cfg.device in ("auto", "pin", "cpu", "cuda") or numbered_gpu):
        raise UserError(f"unknown device '{cfg.device}'", "use device=auto, pin, cpu, cuda or cuda:N")
    check_pin(cfg.pin)
    check_inputs(cfg)  # NaN numbers, one model source, disks already full
    _positive_list(cfg.grid.batch_sizes, "grid.batch_sizes")
    _positive_list(cfg.grid.prompt_lens, "grid.prompt_lens")
    if cfg.grid.new_tokens < 1:
        raise UserError(f"grid.new_tokens={cfg.grid.new_tokens} is below 1", "use grid.new_tokens=N with N >= 1")
    m = cfg.measure
    if m.warmup < 0 or m.min_iters < 1 or m.min_seconds < 0 or m.max_iters < m.min_iters:
        raise UserError("measure settings out of range",
                        "use measure.warmup>=0, measure.min_iters>=1, measure.min_seconds>=0, max_iters>=min_iters")
    if m.target_rel_ci is not None and not 0 < m.target_rel_ci < 1:
        raise UserError(f"measure.target_rel_ci={m.target_rel_ci} is not a fraction between 0 and 1",
                        "use e.g. measure.target_rel_ci=0.02 (medians within ±2 %), or null to turn it off")
    if m.profile_steps < 1:
        raise UserError(f"measure.profile_steps={m.profile_steps} is below 1", "use measure.profile_steps=N, N >= 1")
    if m.overhead_steps < 1:  # 0 or fewer steps would divide by nothing and record an empty overhead
        raise UserError(f"measure.overhead_steps={m.overhead_steps} is below 1",
                        "use measure.overhead_steps=N, N >= 1 (decode steps timed once per job)")
    if m.max_seconds < m.min_seconds:
        raise UserError(f"measure.max_seconds={m.max_seconds} is below measure.min_seconds={m.min_seconds}",
                        "raise measure.max_seconds or lower measure.min_seconds")
    check_repeats(m)
    if m.cell_timeout_s is not None and m.cell_timeout_s <= 0:
        raise UserError(f"measure.cell_timeout_s={m.cell_timeout_s} is not positive", "use a number of seconds > 0")
    if m.load_timeout_s is not None and m.load_timeout_s <= 0:
        raise UserError(f"measure.load_timeout_s={m.load_timeout_s} is not positive",
                        "use a number of seconds > 0, or null for no limit")
    if m.cell_timeout_s is not None and cfg.isolation != "process":
        raise UserError("measure.cell_timeout_s needs isolation=process (a hung cell can only be stopped by ending "
                        "its process)", "add isolation=process")
    if cfg.resume and not cfg.output_dir and not multirun:
        raise UserError("resume=true needs the output directory of the run to resume",
                        "add output_dir=PATH (the directory holding its results.csv)")
    check_sampling(cfg.sampling)


def check_validation(v, limit: int) -> None:
    """validation.* sizes: at least 1 each, and prompt + new tokens within the model's positions."""
    for key in ("batch", "prompt_len", "new_tokens"):
        value = getattr(v, key)
        if value is not None and value < 1:  # new_tokens null: the default for the model (accuracy/validate.py)
            raise UserError(f"validation.{key}={value} is below 1", f"use validation.{key}=N with N >= 1")
    new_tokens = v.new_tokens if v.new_tokens is not None else RANDOM_STEPS  # real prompts: checked at load
    if v.prompt_len + new_tokens > limit:
        total = v.prompt_len + new_tokens
        raise UserError(f"validation.prompt_len {v.prompt_len} + validation.new_tokens {new_tokens} = {total} "
                        f"positions, but the model has {limit}",
                        f"lower validation.prompt_len or validation.new_tokens to fit in {limit}")
