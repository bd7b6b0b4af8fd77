"""What reaches the user's terminal from libraries: nothing, by default.

Third-party warnings (transformers' deprecations, torch's export notes, FlashAttention's CuTe DSL messages) are
about the libraries, not about the measurement, and they break the progress bar into fragments. The command line
(its edge: ``harness.cli.main`` and each isolation worker) calls :func:`quiet` once: Python warnings are counted
instead of printed, and the libraries' own loggers are turned down to errors. At the end of the command,
:func:`hidden_line` says how many were hidden and how to see them (``--verbose``, or ENGINEBENCH_VERBOSE=1).

The Python API (``harness.api``) and the tests do not call :func:`quiet`: a library must not silence its caller.
"""
from __future__ import annotations

import collections
import logging
import os
import warnings

# the loggers of the libraries we drive; their warnings are about them, not about the run
LIBRARY_LOGGERS = ("transformers", "torch", "onnxruntime", "onnxscript", "onnx_ir", "torchao", "accelerate",
                   "huggingface_hub", "tensorrt", "flash_attn", "cutlass", "matplotlib", "urllib3")
hidden: collections.Counter = collections.Counter()  # (category, first line of the message) -> times


def verbose() -> bool:
    return os.environ.get("ENGINEBENCH_VERBOSE", "") not in ("", "0")


def _count_record(record: logging.LogRecord) -> None:
    if getattr(record, "_enginebench_counted", False):  # seen by another of the logger's handlers already
        return
    record._enginebench_counted = True
    hidden[(f"{record.name} log", record.getMessage().split("\n", 1)[0][:160])] += 1


class _CountingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:  # the library's own handler (or none) prints errors
            _count_record(record)


_HANDLER = _CountingHandler(level=logging.WARNING)


def _count_warning(message, category, filename, lineno, file=None, line=None) -> None:
    hidden[(category.__name__, str(message).split("\n", 1)[0][:160])] += 1


def quiet() -> None:
    """Count third-party warnings instead of printing them (no-op with --verbose)."""
    if verbose():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read once, when transformers is first imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.showwarning = _count_warning
    # "default": each distinct warning once per place, so the count says how many different things were hidden
    warnings.simplefilter("default")
    for name in LIBRARY_LOGGERS:  # idempotent: a second call adds nothing
        logger = logging.getLogger(name)
        for own in logger.handlers:  # e.g. torch's, installed when torch was imported: counted, not printed
            if own is not _HANDLER and _count_below_error not in own.filters:
                own.addFilter(_count_below_error)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False  # Python's last-resort handler would print it to stderr


def _count_below_error(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
        return True
    _count_record(record)
    return False


def hidden_line() -> str | None:
    """One line for the end of the command: how many library warnings were hidden; None when none were."""
    if not hidden or verbose():
        return None
    return (f"enginebench: {sum(hidden.values())} library warning(s) of {len(hidden)} kind(s) hidden "
            "(--verbose shows them)")


def take_hidden_line() -> str | None:
    """:func:`hidden_line`, then forget what it counted: said before a job's outcome line, so that the outcome
    stays the last line of the command (what comes after is counted again for the end)."""
    line = hidden_line()
    hidden.clear()
    return line
