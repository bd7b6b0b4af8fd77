"""A warm interpreter for the command lines the tests start (``python -m harness ...``, ``python -m
harness.report.cli ...``): the process a fresh interpreter would be, without importing torch, transformers and the
harness again for each one (2-5 s a run on two cores, and the suite starts about 170 of them).

One server per pytest process, started by the first run, imports ``PRELOAD`` once. Each run is a fork of it, set up
as ``python -m MODULE ARGS`` would start: working directory, environment, ``sys.path`` (the working directory, then
PYTHONPATH, then the interpreter's own), the standard streams on files, the module run as ``__main__``. The run is
a process of its own: its exit status or signal, its atexit hooks, the traceback of an uncaught exception and what
the processes it starts write are its own, as under subprocess.run.

What the preloaded libraries read from the environment when imported (thread counts, library settings) was read
when the server started: each environment (all but the ``PER_RUN`` variables) has a server of its own, started by
its first run; the ``MAX_SERVERS`` used last are kept. Every run under ENGINEBENCH_TEST_FRESH=1 gets a fresh
interpreter.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

# imported once by the server: what nearly every command line imports (harness.cli: torch, Hydra, pandas), what a
# run imports once it loads a model (transformers and its Llama code) and the ONNX exporter's libraries
# (not onnxruntime: its import starts a thread, and a forked copy of its state hangs the run's exit)
PRELOAD = ("harness.cli", "transformers", "transformers.models.llama.modeling_llama", "scipy.stats", "onnx",
           "onnxscript")
# read at run time, never by the preloaded imports: by the harness and the test plugins, by torch's compiler
# (TORCHINDUCTOR_CACHE_DIR, which it also sets in the tests' own process), by TensorFlow (not installed), or here
# (PYTHONPATH becomes sys.path; TRANSFORMERS_VERBOSITY is given to transformers as its import would have read it)
PER_RUN = ("PYTHONPATH", "TRANSFORMERS_VERBOSITY", "TORCHINDUCTOR_CACHE_DIR", "TF_CPP_MIN_LOG_LEVEL")
PER_RUN_PREFIXES = ("ENGINEBENCH_", "FAULT_BACKEND_", "PYTEST_")
# each server holds the preloaded libraries (about 0.5 GB); a test that sets its own thread count
# (OMP_NUM_THREADS=1) gets a second, and a variable the tests' process gains at run time a third
MAX_SERVERS = 3
CHILD_PEAK_KB = [0]  # the largest peak RSS of a run served here (peak_memory.py adds it to the children's)
RUNS = {"served": 0, "fresh": 0, "servers started": 0}  # printed with the peak memory (peak_memory.py)


def run_module(module: str, *args, cwd=None, env=None, timeout=None, stdin=None) -> subprocess.CompletedProcess:
    """``python -m module args`` with text output captured, as subprocess.run(capture_output=True, text=True)
    would run it (``env``: the whole environment; ``stdin``: text for standard input)."""
    argv = [sys.executable, "-m", module, *map(str, args)]
    env = dict(os.environ if env is None else env)
    server = _server(env)
    with tempfile.TemporaryDirectory(prefix="warm-run-") as tmp:
        paths = {name: os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")}
        Path(paths["stdin"]).write_text(stdin or "")
        request = {"module": module, "args": argv[3:], "cwd": os.path.abspath(cwd or os.getcwd()), "env": env,
                   **paths, "has_stdin": stdin is not None}
        pid = server.start(request) if server is not None else None
        if pid is not None:
            status = server.wait(pid, timeout)
            out, err = (_decoded(Path(paths[name]).read_bytes()) for name in ("stdout", "stderr"))
            if status is None:
                raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err)
            RUNS["served"] += 1
            return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out, err)
    RUNS["fresh"] += 1
    try:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=stdin)
    except subprocess.TimeoutExpired as expired:  # what it had written: bytes whatever text= says (on POSIX)
        expired.output, expired.stderr = (_decoded(x) if isinstance(x, bytes) else x
                                          for x in (expired.output, expired.stderr))
        raise


def _decoded(data: bytes) -> str:
    """As subprocess decodes captured text: the locale's encoding, universal newlines."""
    import locale

    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


class _Server:
    def __init__(self, env: dict):
        self.env = env
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        here = os.path.abspath(__file__)
        self.process = subprocess.Popen([sys.executable, here, str(requests_r), str(replies_w)], env=env,
                                        pass_fds=(requests_r, replies_w), cwd=os.path.dirname(here),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(requests_r)
        os.close(replies_w)
        self.requests, self.replies = Connection(requests_w, readable=False), Connection(replies_r, writable=False)

    def start(self, request: dict) -> int | None:
        """The pid of the run forked for ``request``; None when the server is gone (the caller runs it fresh)."""
        try:
            self.requests.send(request)
            return self.replies.recv()["pid"]
        except (EOFError, OSError):
            self.process.kill()  # _server() starts another for the next run
            self.process.wait()
            return None

    def wait(self, pid: int, timeout) -> int | None:
        """The run's wait status; None when it ran past ``timeout`` (then it was killed, as subprocess.run does)."""
        timed_out = not self.replies.poll(timeout)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        reply = self.replies.recv()
        CHILD_PEAK_KB[0] = max(CHILD_PEAK_KB[0], reply["maxrss_kb"])
        return None if timed_out else reply["status"]

    def close(self) -> None:
        self.requests.close()  # the server ends at the end of its requests (at once unless a run is under way)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_servers: dict[frozenset, _Server] = {}  # by environment (PER_RUN variables left out), the one used last at the end


def _environment_key(env: dict) -> frozenset:
    """What a server's preloaded imports may have read: the environment without the ``PER_RUN`` variables."""
    return frozenset((k, v) for k, v in env.items() if k not in PER_RUN and not k.startswith(PER_RUN_PREFIXES))


def _server(env: dict) -> _Server | None:
    """The server for a run in ``env``, started by its first run; None where a fresh interpreter must run it."""
    if os.environ.get("ENGINEBENCH_TEST_FRESH", "") not in ("", "0") or sys.platform != "linux":
        return None
    key = _environment_key(env)
    server = _servers.pop(key, None)
    if server is not None and server.process.poll() is not None:  # gone (start() found it so)
        server = None
    if server is None:
        while len(_servers) >= MAX_SERVERS:
            _servers.pop(next(iter(_servers))).close()  # the one used longest ago
        server = _Server(env)
        RUNS["servers started"] += 1
    _servers[key] = server
    return server


@atexit.register
def _close_all() -> None:
    while _servers:
        _servers.popitem()[1].close()


# --- the server side: ``python warm_python.py REQUESTS_FD REPLIES_FD`` -----------------------------------------

def _serve(requests: Connection, replies: Connection) -> dict:
    """Fork a run per request and report how it ended; returns (in the forked run only) its request."""
    while True:
        try:
            request = requests.recv()
        except EOFError:
            sys.exit(0)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            return request
        replies.send({"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        replies.send({"status": status, "maxrss_kb": usage.ru_maxrss})


def _become(request: dict, base_path: list[str]) -> None:
    """This forked process as ``python -m`` would have started for the request."""
    written = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", written), (2, "stderr", written)):
        path = request[name] if name != "stdin" or request["has_stdin"] else os.devnull
        opened = os.open(path, mode)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]  # -m: the working directory first
    import importlib

    importlib.invalidate_caches()
    _streams(request["env"])
    _transformers_verbosity(request)
    sys.argv = [request["module"], *request["args"]]  # runpy puts the module's file first
    for name in (request["module"], request["module"] + ".__main__"):  # run from its source, as a fresh
        if not hasattr(sys.modules.get(name), "__path__"):              # interpreter would (packages stay)
            sys.modules.pop(name, None)


def _streams(env: dict) -> None:
    """sys.stdout and sys.stderr as the interpreter makes them at start: written through with PYTHONUNBUFFERED,
    block-buffered otherwise (stderr by line)."""
    import io

    unbuffered = env.get("PYTHONUNBUFFERED", "") != ""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, f"__{name}__")
        raw = io.open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)
        stream = io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, line_buffering=name == "stderr"
                                  and not unbuffered, write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _transformers_verbosity(request: dict) -> None:
    """transformers reads TRANSFORMERS_VERBOSITY once, when first imported: the server imported it; give it what
    the run would have had. A command line of the harness (unless verbose) sets ``error`` before that import
    (harness.run.console.quiet)."""
    if "transformers" not in sys.modules:
        return
    env = request["env"]
    quiet = (request["module"] == "harness" and "--verbose" not in request["args"]
             and env.get("ENGINEBENCH_VERBOSE", "") in ("", "0"))
    level = env.get("TRANSFORMERS_VERBOSITY") or ("error" if quiet else "warning")
    from transformers.utils import logging

    logging.set_verbosity(logging.log_levels.get(level, logging.WARNING))


def _server_main() -> None:
    import importlib
    import runpy

    requests = Connection(int(sys.argv[1]), writable=False)
    replies = Connection(int(sys.argv[2]), readable=False)
    # the interpreter's own path: without this script's folder and PYTHONPATH (each run brings its own)
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = sys.path[1:]
    if base_path[:len(own)] == own:
        base_path = base_path[len(own):]
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed: its runs import nothing either
            pass
    import gc

    gc.collect()
    gc.freeze()  # the collector of each run leaves the preloaded objects alone: its exit is 1 s faster
    request = _serve(requests, replies)
    _become(request, base_path)
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _server_main()
