"""A content-checked, lock-protected cache of build artifacts (ONNX files, TensorRT engines).

An artifact is a directory named by the hash of everything that determines it (the key). It is built in a
temporary directory and renamed into place (atomic), with a manifest of every file's size and sha256; on reuse the
manifest is checked, so a partial or corrupt artifact is detected and rebuilt. A file lock per key lets concurrent
runs share the cache: one builds, the others wait and then reuse.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

MANIFEST = "manifest.json"


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_problem(directory: Path) -> str | None:
    """None when every file listed in the manifest is present with its size and hash, else what is wrong."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (interrupted build?)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "unreadable manifest"
    for name, expected in manifest["files"].items():
        f = directory / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != expected["size"]:
            return f"{name} has {f.stat().st_size} bytes, expected {expected['size']}"
        if file_digest(f) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


class Artifact:
    def __init__(self, directory: Path, meta: dict[str, Any], reused: bool):
        self.directory, self.meta, self.reused = directory, meta, reused


def get_or_build(root: Path, kind: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]],
                 log: Callable[[str], None] = print) -> Artifact:
    """The artifact for ``key``: reused if intact, else built by ``build(tmp_dir) -> meta`` and published."""
    root = Path(root) / kind
    root.mkdir(parents=True, exist_ok=True)
    digest = key_hash(key)
    final = root / digest
    with FileLock(str(root / f"{digest}.lock")):
        if final.exists():
            problem = _manifest_problem(final)
            if problem is None:
                meta = json.loads((final / MANIFEST).read_text())["meta"]
                log(f"{kind}: reusing cached artifact {final} (built {meta.get('built_at', '?')})")
                return Artifact(final, meta, reused=True)
            log(f"{kind}: cached artifact {final} is damaged ({problem}); rebuilding")
            shutil.rmtree(final)
        tmp = root / f".tmp-{digest}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            meta = build(tmp)
            meta = {**meta, "build_seconds": time.perf_counter() - t0,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "key": key}
            files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
                     for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"files": files, "meta": meta}, indent=2, default=str))
            os.replace(tmp, final)  # atomic publish: readers see no directory or a complete one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"{kind}: built {final} in {meta['build_seconds']:.1f} s")
        return Artifact(final, meta, reused=False)
