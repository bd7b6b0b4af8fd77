"""Tables in the docs made from committed results (harness/report/doc_tables.py): check-docs passes on the
committed docs (README.md and docs/*.md; CI runs this test), and exits 1 naming the number once one is changed."""
import shutil

import pytest

from harness.report.doc_tables import FENCE, main
from helpers import ROOT

DOCS = [str(ROOT / "README.md"), *sorted(str(p) for p in (ROOT / "docs").glob("*.md"))]  # what CI checks


def test_the_committed_docs_match_their_results(capsys):
    assert any(FENCE.search(open(f).read()) for f in DOCS), "no generated table in docs/*.md"
    assert main(["--root", str(ROOT), *DOCS], "check-docs") == 0, capsys.readouterr().out


def test_check_docs_exits_1_and_names_a_changed_number(tmp_path, capsys):
    doc = tmp_path / "report.md"
    shutil.copy(ROOT / "docs" / "report.md", doc)
    text = doc.read_text()
    m = FENCE.search(text)
    lines = m["body"].splitlines()
    row = lines[next(i for i, line in enumerate(lines) if line.startswith("|---")) + 1]  # the first data row
    cells = row.split("|")
    cells[-2] = " 99.99 "  # the last column's number of that row
    changed = text.replace(row, "|".join(cells), 1)
    doc.write_text(changed)
    assert main(["--root", str(ROOT), str(doc)], "check-docs") == 1
    out = capsys.readouterr().out
    assert f"table {m['name']}" in out and "'99.99'" in out and "row '" in out


def test_make_docs_restores_what_check_docs_flagged(tmp_path, capsys):
    doc = tmp_path / "report.md"
    shutil.copy(ROOT / "docs" / "report.md", doc)
    original = doc.read_text()
    m = FENCE.search(original)
    doc.write_text(original.replace(m["body"], "| stale |\n|---|\n| 1 |\n", 1))
    assert main(["--root", str(ROOT), str(doc)], "check-docs") == 1
    assert main(["--root", str(ROOT), str(doc)], "make-docs") == 0
    assert doc.read_text() == original
    capsys.readouterr()


def test_an_undefined_table_is_a_difference(tmp_path, capsys):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- table: no-such-table -->\n| a |\n|---|\n| 1 |\n<!-- /table -->\n")
    assert main(["--root", str(ROOT), str(doc)], "check-docs") == 1
    assert "no-such-table" in capsys.readouterr().out


@pytest.mark.slow
def test_the_cli_runs_check_docs():
    from helpers import run_report_cli

    proc = run_report_cli("check-docs", *DOCS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_value_can_carry_its_own_decimals():
    from harness.report.doc_tables import render

    definition = {"runs": ["docs/results/h200/headline/ort"], "rows": ["batch_size"], "where": {"prompt_len": 128},
                  "values": {"two": "decode_latency_ms:p50", "four": "decode_latency_ms:p50@4",
                             "none": "decode_latency_ms:p50@0"}}
    row = next(line for line in render("t", definition, ROOT).splitlines() if line.startswith("| 1 |"))
    two, four, none = (cell.strip() for cell in row.strip("|").split("|")[1:])
    assert len(two.split(".")[1]) == 2 and len(four.split(".")[1]) == 4 and "." not in none
    assert abs(float(four) - float(two)) <= 0.005 and abs(float(none) - float(two)) <= 0.5
