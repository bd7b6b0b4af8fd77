"""The one check of a job: :func:`check_job` takes a composed :class:`~harness.config.JobSpec` and refuses, in one
line with the fix, what cannot run: the config's ranges and choices (harness/config/schema.py), what the job asks
of its model (positions, dtype, weight-only scheme: :func:`check_model_fit`), the backend's option values
(harness/plugin/options.py) and, on the command line, the weight-only scheme the backend cannot run (its
``check_quant`` hook). A check reads configs and headers only: it never builds a model or converts a file.

The command line checks every job of a sweep before the first one starts (harness/compose.py ``precheck``), the
Python API checks the job it composes, and each job of a multirun is checked again where it runs.
"""
from __future__ import annotations

from pathlib import Path

from harness.config.schema import JobSpec, check_config, check_validation
from harness.errors import UserError
from harness.model.limits import max_positions_of, quant_scheme_of
from harness.model.sources import DTYPES
from harness.plugin.options import check_options, readable_options
from harness.plugin.plugins import PluginRegistry


def check_job(spec: JobSpec, plugins: PluginRegistry, *, multirun: bool = False, backend_quant: bool = True) -> None:
    """Every check of one job; ``backend_quant=False`` leaves the backend's ``check_quant`` to the run (the Python
    API: harness/pipeline.py asks it on the device the job resolves)."""
    check_config(spec, multirun=multirun)
    check_model_fit(spec)
    if backend_quant:
        check_backend_quant(spec, plugins)
    check_backend_options(spec, plugins)


def check_model_fit(spec: JobSpec) -> None:
    """What the job asks of its model, against the model's config or GGUF header: a dtype it can be loaded in, a
    weight-only scheme its shapes allow, and the grid's and the validation's positions within the model's."""
    if spec.model.dtype is not None and spec.model.dtype not in DTYPES:
        raise UserError(f"unknown model.dtype '{spec.model.dtype}'", f"use one of {', '.join(DTYPES)}")
    quant_scheme_of(spec)
    limit = max_positions_of(spec.model)
    longest_prompt = max(spec.grid.prompt_lens)
    longest = longest_prompt + spec.grid.new_tokens
    if longest > limit:
        raise UserError(f"prompt {longest_prompt} + new_tokens {spec.grid.new_tokens} = {longest} positions, but the "
                        f"model has {limit}", f"lower grid.prompt_lens or grid.new_tokens to fit in {limit}")
    if spec.task == "validate" or (spec.task == "benchmark" and spec.validation.enabled):
        check_validation(spec.validation, limit)


def check_backend_options(spec: JobSpec, plugins: PluginRegistry) -> None:
    """The job's ``backend.*`` values against the backend's options dataclass (allowed values, needs, check)."""
    name = spec.backend.name
    if name not in plugins.option_classes:
        raise plugins.unavailable(name)
    check_options(name, plugins.option_classes[name], spec.backend.values())


def check_backend_quant(spec: JobSpec, plugins: PluginRegistry) -> None:
    """The backend refuses a weight-only scheme it cannot run, in one line, before any job starts."""
    quant = quant_scheme_of(spec)
    if not quant.enabled:
        return
    import torch

    device = spec.device
    if device in ("auto", "pin"):
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    plugins.check_quant(spec.backend.name, quant, readable_options(spec.backend.options),
                        "cuda:0" if device == "cuda" else device)


def check_output_dir(spec: JobSpec) -> None:
    """Create the output directory now and write a probe file: a bad path fails before any work, in one line."""
    target = Path(spec.output_dir) if spec.output_dir else Path("outputs")
    probe_writable(target, "output_dir" if spec.output_dir else "the default output directory")


def probe_writable(target: Path, key: str) -> None:
    import tempfile

    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"output directory '{target}' ({key}) is not writable ({exc.strerror})",
                        "run from a writable directory or set output_dir=PATH to one") from exc
