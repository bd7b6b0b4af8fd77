"""Plugin discovery: a third-party package installed with pip appears as a backend= choice and runs; observer
plugins can wrap the selected backend's hooks; autoload can be switched off."""
import pandas as pd
import pytest

from harness import hookimpl
from helpers import FAST, plugin_env, run_cli


def _env(site, **extra):
    return plugin_env(site, **extra)


@pytest.mark.slow
def test_installed_plugin_package_appears_and_runs(plugin_site, tmp_path):
    proc = run_cli("backend=toy-nocache", "backend.label=mine", *FAST, f"output_dir={tmp_path}",
                   env=_env(plugin_site))
    assert proc.returncode == 0, proc.stderr
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy.backend) == {"toy-nocache"} and set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}
    assert '"label": "mine"' in tidy.backend_info.iloc[0]


@pytest.mark.slow
def test_autoload_switch_hides_third_party_backends(plugin_site, tmp_path):
    proc = run_cli("backend=toy-nocache", f"output_dir={tmp_path}",
                   env=_env(plugin_site, ENGINEBENCH_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert proc.returncode == 2 and "unknown backend 'toy-nocache'" in proc.stderr
    assert "hf-flashattn-staticcache" in proc.stderr  # built-ins stay


def test_observer_hookwrapper_sees_only_the_selected_backend():
    """Two backends open at once: a call on one reaches that backend (and the observer) only."""
    import torch

    from harness.plugin.plugins import PluginRegistry
    from helpers import broken_backends, open_backend

    class Counting(broken_backends().Working):
        calls = 0

        @hookimpl
        def decode_step(self, tokens):
            Counting.calls += 1
            return self.logits(tokens)

    registry = PluginRegistry.discover()
    registry.add_backend("counting", Counting)
    seen = []

    class Tracer:
        @hookimpl(hookwrapper=True)
        def decode_step(self, tokens):
            seen.append(tuple(tokens.shape))
            yield

    registry.add_observer(Tracer(), name="tracer")
    hf, source, _ = open_backend(registry, "hf-flashattn-staticcache")
    other, _, _ = open_backend(registry, "counting")
    try:
        hf.prefill(input_ids=torch.tensor([[5, 6, 7]]), prompt_lens=None)
        out = hf.decode_step(tokens=torch.tensor([[8]]))
        assert out.shape == (1, source.config().vocab_size)  # the HF backend answered ...
        assert Counting.calls == 0 and seen == [(1, 1)]  # ... the other open backend was not called
        other.decode_step(tokens=torch.tensor([[8], [9]]))
        assert Counting.calls == 1 and seen == [(1, 1), (2, 1)]
    finally:
        hf.close()
        other.close()


def test_unknown_backend_lists_choices(registry):
    from harness.errors import UserError

    with pytest.raises(UserError, match="unknown backend 'nope'") as err:
        registry.open("nope")
    assert "hf-flashattn-staticcache" in err.value.fix
