"""The warm interpreter that runs the tests' command lines (warm_python.py) runs a module as a fresh ``python -m``
would: the same output, exit status, signal, working directory, sys.path, environment, standard input, atexit
hooks and traceback; an environment that differs in what the preloaded imports read gets a server of its own."""
import os
import subprocess
import sys

import pytest
from warm_python import run_module

pytestmark = pytest.mark.slow  # starts the warm interpreter and fresh ones

PROBE = """
import atexit, os, sys, time
how = sys.argv[1]
print("argv", sys.argv, "name", __name__)
print("cwd first on the path", os.getcwd() == sys.path[0], "PYTHONPATH next", sys.path[1].endswith("extra-path"))
print("env", os.environ.get("ENGINEBENCH_PROBE"), "stdin", repr(sys.stdin.read()))
print("to stderr\\r\\nsecond line", file=sys.stderr)
atexit.register(print, "at exit")
if how == "raise":
    raise ValueError("the probe failed")
if how == "signal":
    os.kill(os.getpid(), 9)
if how == "sleep":
    time.sleep(60)
sys.exit(int(how))
"""


def _env(tmp_path, **extra):
    path = os.pathsep.join([str(tmp_path / "extra-path"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONUNBUFFERED": "1", "ENGINEBENCH_PROBE": "x", "PYTHONPATH": path, **extra}


@pytest.mark.parametrize("how", ["0", "3", "raise", "signal"])
def test_a_served_run_is_what_a_fresh_interpreter_does(tmp_path, how):
    (tmp_path / "probe.py").write_text(PROBE)
    env = _env(tmp_path)
    served = run_module("probe", how, cwd=tmp_path, env=env, stdin="typed\n")
    fresh = subprocess.run([sys.executable, "-m", "probe", how], cwd=tmp_path, env=env, capture_output=True,
                           text=True, input="typed\n")
    assert (served.returncode, served.stdout) == (fresh.returncode, fresh.stdout)
    assert "cwd first on the path True PYTHONPATH next True" in served.stdout
    assert ("at exit" in served.stdout) == (how != "signal")
    if how == "raise":  # the same error from the same line; the frames above the module are the runner's own
        served_lines, fresh_lines = served.stderr.splitlines(), fresh.stderr.splitlines()
        assert served_lines[:3] == fresh_lines[:3] == ["to stderr", "second line", "Traceback (most recent call last):"]
        assert served_lines[-3:] == fresh_lines[-3:] and fresh_lines[-1] == "ValueError: the probe failed"
    else:
        assert served.stderr == fresh.stderr == "to stderr\nsecond line\n"


def test_a_run_past_its_timeout_is_killed(tmp_path, monkeypatch):
    (tmp_path / "probe.py").write_text(PROBE)
    for fresh in ("", "1"):  # served, then in a fresh interpreter: what it wrote comes back as text either way
        monkeypatch.setenv("ENGINEBENCH_TEST_FRESH", fresh)
        with pytest.raises(subprocess.TimeoutExpired) as expired:
            run_module("probe", "sleep", cwd=tmp_path, env=_env(tmp_path), stdin="", timeout=5)
        assert "env x" in expired.value.output and "to stderr" in expired.value.stderr


def test_what_the_preloaded_imports_read_comes_from_the_run_s_environment(tmp_path):
    """torch reads OMP_NUM_THREADS when imported: a run in another thread count is served by a server started in
    that environment, whatever environment the first run of this process had."""
    (tmp_path / "warmth.py").write_text("import sys\npreloaded = 'torch' in sys.modules\nimport torch\n"
                                        "print(preloaded, torch.get_num_threads())\n")
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    for n in (threads + 1, threads, threads + 1):
        run = run_module("warmth", cwd=tmp_path, env=_env(tmp_path, OMP_NUM_THREADS=str(n)))
        assert run.stdout == f"True {n}\n", run.stderr
