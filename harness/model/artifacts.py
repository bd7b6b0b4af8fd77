"""A content-checked, lock-protected cache of build artifacts (ONNX files, TensorRT engines).

An artifact is a directory named by the hash of everything that determines it (the key). It is built in a
temporary directory and renamed into place (atomic), with a manifest of every file's size and sha256; on reuse the
manifest is checked, so a partial or corrupt artifact is detected and rebuilt. A file lock per key lets concurrent
runs share the cache: one builds, the others wait and then reuse. Any damage found (an unreadable or incomplete
manifest, wrong types, a file where the artifact directory should be) is repaired by rebuilding, and build
directories left by a killed build are swept.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from harness import progress

MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """Where artifacts live unless ``cache_dir=`` says otherwise: $ENGINEBENCH_CACHE_DIR or ~/.cache/enginebench."""
    return Path(os.environ.get("ENGINEBENCH_CACHE_DIR", Path.home() / ".cache" / "enginebench"))


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(directory: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) when the manifest is well formed and every file it lists is present with its size and
    hash; else (None, what is wrong). Any damage — bytes that are not JSON, missing keys, wrong types — is a
    problem to repair by rebuilding, never an exception."""
    manifest_path = directory / MANIFEST
    if not directory.is_dir() or directory.is_symlink():
        return None, "not a directory"
    if not manifest_path.is_file():
        return None, "no manifest (interrupted build?)"
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable manifest ({type(exc).__name__})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or not isinstance(manifest.get("meta"), dict):
        return None, "incomplete manifest (needs a 'files' and a 'meta' object)"
    for name, expected in manifest["files"].items():
        if not isinstance(expected, dict) or not isinstance(expected.get("size"), int) \
                or not isinstance(expected.get("sha256"), str):
            return None, f"manifest entry for {name} lacks its size or sha256"
        f = directory / name
        if not f.is_file():
            return None, f"{name} is missing"
        if f.stat().st_size != expected["size"]:
            return None, f"{name} has {f.stat().st_size} bytes, expected {expected['size']}"
        if file_digest(f) != expected["sha256"]:
            return None, f"{name} does not match its checksum"
    return manifest, None


def _remove(path: Path) -> None:
    """Remove whatever is at ``path``: a directory tree, a file or a symlink."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_builds(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove ``.tmp-<hash>-<pid>`` build directories left by a killed build: its process is gone and nobody
    holds the key's lock (the lock also guards against a live build on another host sharing the cache)."""
    removed = []
    for tmp in root.glob(".tmp-*-*"):
        _, digest, pid = tmp.name.rsplit("-", 2)
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            with FileLock(str(root / f"{digest}.lock"), timeout=0):
                _remove(tmp)
        except Timeout:
            continue
        removed.append(tmp)
        log(f"removed {tmp}, left by a build whose process {pid} is gone")
    return removed


class Artifact:
    def __init__(self, directory: Path, meta: dict[str, Any], reused: bool):
        self.directory, self.meta, self.reused = directory, meta, reused


def get_or_build(root: Path, kind: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]],
                 log: Callable[[str], None] = print) -> Artifact:
    """The artifact for ``key``: reused if intact, else built by ``build(tmp_dir) -> meta`` and published."""
    root = Path(root) / kind
    if root.exists() and not root.is_dir():
        log(f"{kind}: {root} is a file where the cache directory should be; replacing it")
        root.unlink()
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale_builds(root, log)
    digest = key_hash(key)
    final = root / digest
    with FileLock(str(root / f"{digest}.lock")):
        if final.exists() or final.is_symlink():
            manifest, problem = _read_manifest(final)
            if manifest is not None:
                meta = manifest["meta"]
                log(f"{kind}: reusing cached artifact {final} (built {meta.get('built_at', '?')})")
                return Artifact(final, meta, reused=True)
            log(f"{kind}: cached artifact {final} is damaged ({problem}); rebuilding")
            _remove(final)
        tmp = root / f".tmp-{digest}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            # the estimate: the last build of this kind for this model (export, quantize, engine build)
            estimate_key = f"build {kind} {key.get('model', '')} {key.get('dtype', '')}"
            with progress.phase(f"{kind}: building a new artifact", estimate_key, end=False):
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
