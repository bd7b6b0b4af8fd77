"""The plan of one job: what it runs (backend, model, device, dtype, cells), what the backend's ``load`` hook is
handed (:class:`LoadSpec`) and the identity every result row of a cell carries.

Pure bookkeeping: nothing here loads a model or touches a device beyond resolving its name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.accuracy.validate import default_steps, longest_validation_row
from harness.config.schema import JobSpec
from harness.measure.environment import device_label
from harness.model.artifacts import default_cache_dir
from harness.model.quant import QuantScheme
from harness.model.sources import ModelSource, dtype_name, resolve_dtype
from harness.plugin.loadspec import LoadSpec
from harness.plugin.plugins import registry
from harness.run.pinning import resolve_device


@dataclass
class Job:
    """Everything resolved for one job (one backend, one model, one device)."""

    cfg: JobSpec
    out_dir: Path
    backend: str  # the backend's registered name: the ``backend`` column of every row
    source: ModelSource
    device: str
    dtype: torch.dtype
    cells: list[tuple[int, int]]  # (batch, prompt_len), sorted
    quant: QuantScheme = field(default_factory=QuantScheme)  # weight-only scheme (harness/model/quant.py)
    info: dict[str, Any] = field(default_factory=dict)  # what the load hook reported
    validation: str = "skipped"  # pass | fail | skipped
    accuracy: dict[str, float] = field(default_factory=dict)  # results.ACCURACY_COLUMNS, filled by validation
    provided_by: str = ""  # the package (and version) that provides the backend: "enginebench 0.1.0"

    @property
    def hf_config(self):
        return self.source.config()

    def row_context(self) -> dict[str, Any]:
        """What every result row of this job carries besides its cell and metric."""
        info = {"provided_by": self.provided_by, **self.info} if self.provided_by else self.info
        return {"validation": self.validation, **self.accuracy, "seed": self.cfg.seed,
                "backend_info": json.dumps(info), "run_id": self.out_dir.name}

    def identity(self, batch: int, prompt_len: int) -> dict[str, Any]:
        """The cell's identity columns (results.CELL_KEYS): what resume and the reports match cells on."""
        return {"backend": self.backend, "model": self.source.name, "weights": self.source.weights,
                "dtype": dtype_name(self.dtype), "quant": self.quant.label, "device": device_label(self.device),
                "batch_size": batch, "prompt_len": prompt_len, "new_tokens": self.cfg.grid.new_tokens,
                "repeat": int(self.cfg.measure.repeat or 0)}


def plan_job(cfg, out_dir: Path) -> Job:
    device = resolve_device(cfg.device)
    source = ModelSource.from_config(cfg.model, cfg.seed, cfg.cache_dir)  # a GGUF file: converted on first use
    dtype = resolve_dtype(cfg.model.dtype, device)
    cells = sorted((b, p) for b in cfg.grid.batch_sizes for p in cfg.grid.prompt_lens)
    from harness.model.limits import quant_scheme_of

    provider = registry().providers.get(cfg.backend.name)
    return Job(cfg, out_dir, cfg.backend.name, source, device, dtype, cells, quant_scheme_of(cfg),
               provided_by=str(provider or ""))


def load_spec(job: Job) -> LoadSpec:
    """What the backend's ``load`` receives; its options an instance of the backend's own options dataclass."""
    cfg = job.cfg
    options = cfg.backend.options
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    grid = cfg.grid
    max_batch = max(max(grid.batch_sizes), cfg.validation.batch if cfg.validation.enabled else 1)
    v = cfg.validation
    longest = longest_validation_row(job.source, v.batch, v.prompt_len)  # real prompts have their own lengths
    max_seq = max(max(grid.prompt_lens) + grid.new_tokens, longest + default_steps(job.source, v.new_tokens))
    return LoadSpec(model=job.source, dtype=job.dtype, device=job.device, options=options, max_batch=max_batch,
                    max_seq=max_seq, task=cfg.task, cache_dir=cache_dir, opt_batch=min(grid.batch_sizes),
                    opt_prompt_len=min(grid.prompt_lens), quant=job.quant, batch_sizes=tuple(grid.batch_sizes),
                    prompt_lens=tuple(grid.prompt_lens), new_tokens=grid.new_tokens)
