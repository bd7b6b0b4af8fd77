"""What a model's own files allow a job: its number of positions and the weight-only scheme resolved against its
shapes, read from the checkpoint's ``config.json``, the GGUF header or ``model.hf_config``.

These are checks, so they read configs and headers only: a GGUF file is never converted here (its header gives the
config) and no model is built. The one job check (harness/config/jobcheck.py) and the job plan (harness/run/plan.py)
use them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from harness.errors import UserError
from harness.model.quant import QuantScheme, resolve
from harness.model.sources import ModelSource, check_checkpoint_dir

DEFAULT_POSITIONS = 2048  # what a config that does not say is taken to have


def max_positions_of(model_cfg) -> int:
    """The positions (prompt + new tokens) the model of ``model.*`` has."""
    if model_cfg.gguf:
        from harness.model.gguf import locate_gguf, read_metadata

        metadata = read_metadata(locate_gguf(model_cfg.gguf, model_cfg.gguf_package))
        return _position_count(metadata["context_length"] or DEFAULT_POSITIONS, f"{model_cfg.gguf}: context_length")
    if model_cfg.path:
        check_checkpoint_dir(model_cfg.path)
        cfg = json.loads((Path(model_cfg.path) / "config.json").read_text())
        where = f"{model_cfg.path}/config.json: max_position_embeddings"
    else:
        cfg, where = model_cfg.hf_config, "model.hf_config.max_position_embeddings"
    return _position_count(cfg.get("max_position_embeddings", DEFAULT_POSITIONS), where)


def _position_count(value, where: str) -> int:
    """A model's number of positions; anything but a positive whole number is one line, not a traceback."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or int(value) != value or value < 1:
        raise UserError(f"{where} is {value!r}, not a positive whole number",
                        "fix the checkpoint's config (e.g. download config.json again)")
    return int(value)


def quant_scheme_of(cfg) -> QuantScheme:
    """The resolved weight-only scheme of a composed job config (a UserError when it does not fit the model)."""
    if cfg.quant == "none":
        return QuantScheme()
    options = cfg.quant_options
    if cfg.model.gguf:  # the file's header: a check never converts a GGUF file
        from harness.model.gguf import gguf_config

        model_config = gguf_config(cfg.model.gguf, cfg.model.gguf_package)
    else:
        model_config = ModelSource.from_config(cfg.model, cfg.seed, cfg.cache_dir).config()
    return resolve(cfg.quant, options.group_size, options.symmetric, model_config)
