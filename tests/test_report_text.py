"""The report's text: the method once (docs/method.md, linked from every report with the settings it used), and a
verdict never shown bare beside a reason to doubt it (a busy machine, a spread above the test's limit)."""
import pandas as pd

from harness.report.markdown import METHOD_DOC, method_section, method_text, qualified_verdict
from helpers import ROOT


def test_method_doc_is_the_method_text():
    doc = (ROOT / METHOD_DOC).read_text()
    assert doc.endswith(method_text()), (
        "docs/method.md is out of date: regenerate its list from harness.report.markdown.method_text()")
    assert METHOD_DOC in method_section() and "alpha = 0.02" in method_section({"alpha": 0.02})


def _row(**extra):
    return {"decode_ms_verdict__ort": "faster", "decode_ms_cv__ort": 0.05, "decode_ms_cv__hf": 0.04,
            "machine_warnings__ort": "", "machine_warnings__hf": float("nan"), **extra}


def test_verdicts_carry_their_doubts():
    assert qualified_verdict(_row(), "decode_ms", "ort", "hf") == "faster"
    noisy = _row(machine_warnings__hf="load average 8.4 on 2 cores")
    assert qualified_verdict(noisy, "decode_ms", "ort", "hf") == "faster (noisy machine)"
    spread = _row(decode_ms_cv__ort=1.5)
    assert qualified_verdict(spread, "decode_ms", "ort", "hf") == "faster (CV above 25%)"
    unstable = _row(decode_ms_verdict__ort="unstable", decode_ms_cv__ort=1.5)
    assert qualified_verdict(unstable, "decode_ms", "ort", "hf") == "unstable"
    assert pd.isna(_row()["machine_warnings__hf"])
