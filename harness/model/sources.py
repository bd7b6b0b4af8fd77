"""Model sources: architecture presets with seeded random weights, a local HF checkpoint directory, or a GGUF file
(converted once into a cached HF checkpoint by harness/model/gguf.py).

Every backend builds its weights from the same :class:`ModelSource`, so all backends (and the float32 reference)
compute with identical parameters. Random weights are drawn on the CPU in float32 under the run's seed (the CPU
generator is deterministic across machines), then cast and moved.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32  # bf16: what GPUs serve in
    if name not in DTYPES:
        raise UserError(f"unknown model.dtype '{name}'", f"use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


@dataclass
class ModelSource:
    """Where a job's model comes from. ``build`` returns an HF causal LM in eval mode."""

    preset: str
    hf_config: dict[str, Any] | None
    path: str | None
    seed: int
    gguf: Any = None  # a gguf.GgufCheckpoint when the weights come from a GGUF file (path is its conversion)
    _fp32_cache: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=False, repr=False)  # False: not loaded yet (None: the model has none)
    # results computed from the float32 model, kept while this source lives (validation's reference continuations:
    # every backend validated against the same source reuses them)
    memo: dict = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, model_cfg: Any, seed: int, cache_dir: str | None = None) -> "ModelSource":
        """From a ``model`` config node. A GGUF file (``model.gguf``) is converted here on first use, into
        ``cache_dir`` (default: the artifact cache)."""
        def get(key: str):  # a ModelConfig, or a mapping of its keys (tests, scripts)
            return model_cfg.get(key) if isinstance(model_cfg, Mapping) else getattr(model_cfg, key, None)

        path = get("path")
        gguf = None
        if get("gguf"):
            if path is not None:
                raise UserError("both model.path and model.gguf are given",
                                "give one: model.path=DIR (HF checkpoint) or model.gguf=FILE.gguf")
            from harness.model.gguf import gguf_checkpoint

            gguf = gguf_checkpoint(get("gguf"), get("gguf_package"), cache_dir)
            path = str(gguf.directory)
        hf_config = copy.deepcopy(dict(get("hf_config") or {})) or None
        if path is not None:
            check_checkpoint_dir(path)
        return cls(preset=get("preset") or "custom", hf_config=None if gguf else hf_config, path=path,
                   seed=seed, gguf=gguf)

    @property
    def weights(self) -> str:
        return "checkpoint" if self.path else "random"

    @property
    def name(self) -> str:
        if self.gguf is not None:
            return self.preset if self.preset != "custom" else self.gguf.gguf_file.stem
        return os.path.basename(os.path.normpath(self.path)) if self.path else self.preset

    def describe(self) -> dict[str, Any]:
        """Where the weights come from, for run.json: random, or the checkpoint (and the GGUF file and its hash)."""
        facts: dict[str, Any] = {"weights": self.weights, "checkpoint": self.path}
        if self.gguf is not None:
            facts.update(gguf_file=str(self.gguf.gguf_file), gguf_sha256=self.gguf.sha256)
        return facts

    def config(self):
        from transformers import AutoConfig

        if self.path:
            config = AutoConfig.from_pretrained(self.path)
        else:
            params = {k: v for k, v in self.hf_config.items() if k != "model_type"}
            config = AutoConfig.for_model(self.hf_config["model_type"], **params)
        if getattr(config, "is_encoder_decoder", False):
            raise UserError(f"model type '{config.model_type}' is an encoder-decoder model",
                            "use a decoder-only causal LM checkpoint (e.g. llama, mistral, qwen3, phi3, gemma3_text)")
        return config

    def build_fp32_cpu(self):
        """The float32 CPU model (cached: it is also the validation reference)."""
        if self._fp32_cache is None:
            from transformers import AutoModelForCausalLM

            if self.path:
                # trust_remote_code=False: a checkpoint's auto_map (its own Python code) is never run
                model, info = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32,
                                                                   trust_remote_code=False, output_loading_info=True)
                refuse_missing_tensors(self.path, info.get("missing_keys") or [])
            else:
                config = self.config()
                check_host_memory(self.name, config)
                torch.manual_seed(self.seed)
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            self._fp32_cache = model.eval()
        return self._fp32_cache

    def release(self) -> None:
        """Drop the cached float32 model (it is rebuilt, identically, if needed again): frees host memory for
        memory-hungry steps such as a TensorRT build."""
        self._fp32_cache = None
        import gc

        gc.collect()

    def build(self, dtype: torch.dtype, device: str, attn_implementation: str | None = None):
        """A fresh copy of the model in ``dtype`` on ``device`` (the cached fp32 weights are not modified)."""
        # nn.Module.to() converts in place: copy first so the float32 reference stays untouched
        model = copy.deepcopy(self.build_fp32_cpu()).to(device=device, dtype=dtype)
        if attn_implementation:
            model.set_attn_implementation(attn_implementation)
        return model.eval()

    def tokenizer(self):
        """The checkpoint's tokenizer, or None (token ids in and out): for random-weight presets and for checkpoint
        directories without tokenizer files. Loaded once; a present but broken tokenizer is a UserError."""
        if self._tokenizer is False:
            self._tokenizer = load_tokenizer(self.path) if self.path else None
        return self._tokenizer

    def fingerprint(self) -> str:
        """Identifies the weights: config + seed for random presets, the file's sha256 for GGUF files, path + mtimes
        for other checkpoints."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        if self.gguf is not None:
            h.update(f"gguf:{self.gguf.sha256}".encode())
        elif self.path:
            h.update(os.path.abspath(self.path).encode())
            for f in sorted(Path(self.path).iterdir()):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(json.dumps(self.hf_config, sort_keys=True).encode())
            h.update(f"seed={self.seed}".encode())
            # the tensors themselves, sampled: a change in HF's init scheme changes the fingerprint
            for name, tensor in self.build_fp32_cpu().state_dict().items():
                flat = tensor.reshape(-1)
                h.update(name.encode())
                h.update(flat[:64].numpy().tobytes())
                h.update(flat[-64:].numpy().tobytes())
        return h.hexdigest()[:16]


def check_checkpoint_dir(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"model.path '{path}' does not exist or is not a directory",
                        "give model.path=DIR pointing at a local HF checkpoint (config.json + weights)")
    if not (p / "config.json").is_file():
        raise UserError(f"model.path '{path}' has no config.json, so it is not an HF checkpoint",
                        "point model.path at the directory that holds config.json and the weights")
    try:
        parsed = json.loads((p / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"model.path '{path}': config.json is unreadable ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]})",
                        "restore config.json from the checkpoint's source (e.g. download it again)") from exc
    if not isinstance(parsed, dict):
        raise UserError(f"model.path '{path}': config.json is not a JSON object",
                        "restore config.json from the checkpoint's source (e.g. download it again)")
    if not any((p / w).is_file() for w in _WEIGHT_FILES):
        raise UserError(f"model.path '{path}' has no weights ({', '.join(_WEIGHT_FILES)})",
                        "download or copy the checkpoint's weights into that directory")
    check_tokenizer(path)  # before any job starts: a broken tokenizer is the user's to fix, not a failed cell


def check_tokenizer(path: str) -> None:
    """Load (and so check) the checkpoint's tokenizer once per process and state of its files."""
    stamp = tuple((name, (Path(path) / name).stat().st_mtime_ns) for name in TOKENIZER_FILES
                  if (Path(path) / name).is_file())
    key = (os.path.abspath(path), stamp)
    if key not in _CHECKED_TOKENIZERS:
        load_tokenizer(path)
        _CHECKED_TOKENIZERS.add(key)


_CHECKED_TOKENIZERS: set = set()


# What a tokenizer is saved as (any one of them means the checkpoint ships a tokenizer).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "spiece.model", "merges.txt")
_PROBE_TEXT = "What is the capital of France?"


def load_tokenizer(path: str):
    """The tokenizer of checkpoint ``path``, or None when the directory has no tokenizer files.

    transformers 5 builds a tokenizer of the config's model type even when no tokenizer file exists (an empty
    vocabulary that encodes every text to no ids), so a tokenizer is only trusted when its files are there and it
    encodes a probe text to at least one id; files that are present but do not load or encode are a UserError."""
    present = [name for name in TOKENIZER_FILES if (Path(path) / name).is_file()]
    if not present:
        return None
    fix = (f"restore the tokenizer files ({', '.join(present)}) from the checkpoint's source, or remove them to "
           "validate on random token ids")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        ids = tokenizer.encode(_PROBE_TEXT)
    except Exception as exc:  # noqa: BLE001 - any failure of the files themselves is the user's to fix
        raise UserError(f"model.path '{path}': its tokenizer does not load ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:120]})", fix) from exc
    if len(ids) == 0:
        raise UserError(f"model.path '{path}': its tokenizer encodes text to no token ids", fix)
    return tokenizer


LARGE_MODEL_BYTES = 4 << 30  # above this the load says what it needs before allocating


def check_host_memory(name: str, config) -> None:
    """Say how much host memory the float32 weights (the reference every backend starts from) take before they are
    allocated; refuse in one line when the machine does not have it available."""
    need = param_count(config)["total"] * 4
    if need < LARGE_MODEL_BYTES:
        return
    import psutil

    from harness.progress import say

    available = psutil.virtual_memory().available
    say(f"{name}: {param_count(config)['total'] / 1e9:.2f} B parameters; the float32 reference needs "
        f"{need / 2**30:.1f} GiB of host memory ({available / 2**30:.1f} GiB available), plus a copy in the run's "
        "dtype on the device")
    if need > available:
        raise UserError(f"{name} needs {need / 2**30:.1f} GiB of host memory for its float32 weights, "
                        f"{available / 2**30:.1f} GiB is available",
                        "run it on a machine with more memory, or use a smaller preset")


def refuse_missing_tensors(path: str, missing) -> None:
    """transformers fills tensors a checkpoint lacks with random values (and the float32 reference has the same
    random layer, so validation passes): a checkpoint missing tensors is refused, naming them."""
    missing = sorted(missing)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UserError(f"model.path '{path}' lacks {len(missing)} tensor(s) of the model: {shown}",
                        "use a complete checkpoint (download its weights again)")


def head_dim(config) -> int:
    """Per-head width: the config's ``head_dim`` when set (Llama 3.2), else hidden_size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def param_count(config) -> dict[str, int]:
    """Parameter counts from the architecture (no model needed): total and per-token-touched (for bytes/FLOPs)."""
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    d = head_dim(config)
    v = config.vocab_size
    attn = h * heads * d + 2 * h * kv * d + heads * d * h
    if config.model_type == "qwen2" or getattr(config, "attention_bias", False):
        attn += heads * d + 2 * kv * d
    per_layer = attn + 3 * h * i + 2 * h
    body = n * per_layer + h
    lm_head = v * h
    total = body + v * h + (0 if config.tie_word_embeddings else lm_head)
    return {"total": total, "matmul": body + lm_head, "head_dim": d}
