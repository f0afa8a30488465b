"""SHA-256 of a model's weights, cached, so metadata can name exact weights without a path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_CHUNK = 1 << 22


def _cache_file() -> Path:
    """``$MULTIDIFFUSION_CACHE_DIR/sha256.json``, by default under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    folder = os.environ.get("MULTIDIFFUSION_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "multidiffusion")
    return Path(folder) / "sha256.json"


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, str]) -> None:
    """Best effort: an unwritable cache only means hashing again next time."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def file_sha256(path: Path, cache: dict[str, str] | None = None) -> str:
    """Hex SHA-256 of one file; ``cache`` maps "path|size|mtime_ns" to earlier results."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if cache is not None:
        cache[key] = digest.hexdigest()
    return digest.hexdigest()


def weights_sha256(source: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a checkpoint file, or of a diffusers folder's weight files (each file's relative path
    and hash, in sorted order, hashed again); None when ``source`` is not a local file or folder.

    Each file is read once and its hash cached (see :func:`_cache_file`) by path, size and
    modification time, so a multi-gigabyte model costs seconds only the first time.
    """
    path = Path(source).expanduser()
    cache = _load_cache()
    if path.is_file():
        result = file_sha256(path, cache)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not files:
            return None
        combined = hashlib.sha256()
        for file in files:
            combined.update(f"{file.relative_to(path).as_posix()}:{file_sha256(file, cache)}\n".encode())
        result = combined.hexdigest()
    else:
        return None
    _save_cache(cache)
    return result
