"""run.json is a typed record (harness/record/runrecord.py) written and read by one module; the run.json files committed
under docs/results (written before the record had a version) still read, and rewriting one loses nothing."""
import json
import shutil

from harness.record.runrecord import VERSION, RunRecord, read_run, update_run, write_run
from helpers import ROOT

OLD = ROOT / "docs" / "results" / "h100" / "ort"  # a run.json from before the record had a version


def test_an_old_run_json_reads_as_version_1_with_its_fields_typed():
    record = read_run(OLD)
    raw = json.loads((OLD / "run.json").read_text())
    assert record.readable and record.version == 1 and "version" not in raw
    assert record.device == raw["device"] and record.config["backend"]["name"] == "onnxruntime"
    assert record.validation == raw["validation"] and record.harness_overhead == raw["harness_overhead"]


def test_rewriting_an_old_run_json_keeps_every_key(tmp_path):
    shutil.copy(OLD / "run.json", tmp_path / "run.json")
    update_run(tmp_path, exit_code=0, outcome="all 6 cells ok")
    raw = json.loads((OLD / "run.json").read_text())
    again = json.loads((tmp_path / "run.json").read_text())
    assert again == {**{k: v for k, v in raw.items() if v is not None}, "version": VERSION, "exit_code": 0,
                     "outcome": "all 6 cells ok"}


def test_keys_this_version_does_not_name_are_kept(tmp_path):
    write_run(tmp_path, {"config": {"task": "benchmark"}, "from_a_newer_version": [1, 2], "exit_code": 1})
    record = read_run(tmp_path)
    assert record.version == VERSION and record.exit_code == 1
    assert record.extra == {"from_a_newer_version": [1, 2]} and record.get("from_a_newer_version") == [1, 2]
    assert RunRecord.from_dict(record.to_dict()) == record


def test_a_torn_or_foreign_run_json_reads_as_unreadable(tmp_path):
    assert not read_run(tmp_path).readable  # missing
    (tmp_path / "run.json").write_text('{"config": {')
    assert not read_run(tmp_path).readable  # torn
    (tmp_path / "run.json").write_text("[1, 2]")
    assert not read_run(tmp_path).readable and read_run(tmp_path).exit_code is None  # not an object
