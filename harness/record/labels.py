"""The names a configuration goes by in results and reports, and the baseline a comparison is measured against.

A configuration is its backend plus every option that differs from the backend's defaults
(``onnxruntime[attention=gqa,cuda_graph=true]``), with the weight-only scheme added where there is one. The run
records its label in run.json; composition checks a multirun's ``report.baseline`` against the labels its jobs will
get; the report labels and compares results by them. All three use these functions, so they agree.
"""
from __future__ import annotations

import difflib

from harness.errors import UserError

DEFAULT_BASELINE = "hf-flashattn-staticcache"


def configuration_label(backend: str, options: dict, defaults: dict | None) -> str:
    """The backend's name plus the options that differ from its defaults: ``hf-...[compile=reduce-overhead]``.

    Without the defaults (a run.json that predates recording them) every option is named: a longer label, but two
    configurations never share one."""
    options = {k: v for k, v in options.items() if k != "name"}
    if defaults is None:
        changed = [f"{k}={v}" for k, v in sorted(options.items())]
    else:
        changed = [f"{k}={v}" for k, v in options.items() if k not in defaults or defaults[k] != v]
    return f"{backend}[{','.join(changed)}]" if changed else backend


def with_quant(label: str, quant) -> str:
    """``onnxruntime[attention=gqa]`` + ``int4-g128-asym`` -> ``onnxruntime[attention=gqa,quant=int4-g128-asym]``."""
    if not isinstance(quant, str) or quant in ("", "none"):
        return label
    if label.endswith("]"):
        return f"{label[:-1]},quant={quant}]"
    return f"{label}[quant={quant}]"


def resolve_baseline(configurations: list[str], baseline: str | None) -> str | None:
    """The configuration speedups are measured against.

    ``None``: the default backend's default configuration if present, else no speedups. A name must match a
    configuration, or a backend with exactly one configuration here; anything else is an error naming what
    is there (a misspelled baseline must not silently drop every speedup column)."""
    if baseline is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in configurations else None
    if baseline in configurations:
        return baseline
    of_backend = [c for c in configurations if c.split("[", 1)[0] == baseline]
    if len(of_backend) == 1:
        return of_backend[0]
    close = difflib.get_close_matches(baseline, configurations, n=1, cutoff=0.4)
    hint = f"did you mean --baseline '{close[0]}'? " if close else ""
    what = "several configurations of it are" if of_backend else "it is not among the configurations"
    raise UserError(f"baseline '{baseline}': {what} in these results ({', '.join(configurations)})",
                    f"{hint}give one of them exactly as written")
