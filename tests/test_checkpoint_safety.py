"""Loading checkpoints: a checkpoint missing a layer's tensors is refused in one line naming them (transformers
would fill them at random, and the float32 reference would share the random layer, so validation would pass);
and the loading stays safe against hostile files: a pickled ``pytorch_model.bin`` is never unpickled into code,
a config's ``auto_map`` (the checkpoint's own Python) is never imported. Real checkpoints written to disk."""
from __future__ import annotations

import json

import pytest
import torch

from harness.errors import UserError
from harness.model.sources import ModelSource
from helpers import tiny_model_cfg


def _checkpoint(folder):
    source = ModelSource.from_config(tiny_model_cfg(), seed=0)
    source.build_fp32_cpu().save_pretrained(folder)
    return folder


def _source(folder):
    return ModelSource.from_config({"preset": None, "path": str(folder), "hf_config": None}, seed=0)


def test_a_checkpoint_missing_a_layers_tensors_is_refused_naming_them(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _checkpoint(tmp_path / "ckpt")
    tensors = load_file(folder / "model.safetensors")
    dropped = sorted(k for k in tensors if k.startswith("model.layers.1."))
    save_file({k: v for k, v in tensors.items() if k not in dropped}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UserError) as err:
        _source(folder).build_fp32_cpu()
    line = err.value.one_line()
    assert f"lacks {len(dropped)} tensor(s)" in line and dropped[0] in line and "\n" not in line


def test_a_complete_checkpoint_loads(tmp_path):
    model = _source(_checkpoint(tmp_path / "ckpt")).build_fp32_cpu()
    assert sum(p.numel() for p in model.parameters()) > 0


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_bin_checkpoint_runs_no_code(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Evil(tmp_path / "ran")}, folder / "pytorch_model.bin")
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises, it must not run the pickle
        _source(folder).build_fp32_cpu()
    assert not (tmp_path / "ran").exists()


def test_a_configs_auto_map_code_is_never_imported(tmp_path):
    folder = _checkpoint(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForCausalLM": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    source = _source(folder)
    try:
        source.config()
        source.build_fp32_cpu()
    except Exception:  # noqa: BLE001 - refusing it is fine too; running its code is not
        pass
    assert not (tmp_path / "ran").exists()
