"""Filesystem BlobStore: each blob written to a temp file, fsync'd, then renamed into place.

Blobs are 0600 in 0700 directories: checkpoint copies are readable by the agent's user only (and
their secret values are sealed anyway, ``mesh.security.DataCipher``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from mesh.errors import CheckpointNotFound, StoreError, UsageError
from mesh.security import private_dir

__all__ = ["FileBlobStore"]


class FileBlobStore:
    """Durable blobs in a directory; a blob is complete or absent, never torn."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        """Store blobs under ``root``; ``fsync`` makes each put durable before it returns."""
        self.root = Path(root)
        self.fsync = fsync

    def _path(self, name: str) -> Path:
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise UsageError(f"invalid blob name {name!r}")
        return self.root.joinpath(*parts)

    def _put_sync(self, path: Path, data: bytes) -> None:
        private_dir(self.root)
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(data)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if self.fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def put(self, name: str, data: bytes) -> str:
        """Write a blob durably (off the event loop)."""
        path = self._path(name)
        try:
            await asyncio.to_thread(self._put_sync, path, bytes(data))
        except OSError as exc:
            raise StoreError(f"blob write {name!r} failed: {exc.strerror or exc}") from exc
        return path.as_uri()

    async def get(self, name: str) -> bytes:
        """Read a blob."""
        path = self._path(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise CheckpointNotFound(f"no blob {name!r} under {self.root}") from None
        except OSError as exc:
            raise StoreError(f"blob read {name!r} failed: {exc.strerror or exc}") from exc

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under a prefix, sorted."""
        def scan() -> list[str]:
            if not self.root.exists():
                return []
            names = []
            for p in self.root.rglob("*"):
                if p.is_file() and not p.name.startswith("."):
                    rel = p.relative_to(self.root).as_posix()
                    if rel.startswith(prefix):
                        names.append(rel)
            return sorted(names)

        return await asyncio.to_thread(scan)

    async def aclose(self) -> None:
        """Nothing to release."""
