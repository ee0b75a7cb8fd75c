"""Filesystem BlobStore (each blob written to a temp file, fsync'd, then renamed into place) and
``blob_store_from_settings``, which picks the filesystem or S3 store from the settings.

Blobs are 0600 in 0700 directories: checkpoint copies are readable by the agent's user only (and
their secret values are sealed anyway, ``mesh.security.DataCipher``).

A directory on the pod's disk dies with the pod unless it is a persistent volume; set
``MESH_BLOB_BACKEND=s3`` (``mesh.store.s3.S3BlobStore``) for copies that outlive it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.errors import CheckpointNotFound, ConfigError, StoreError, UsageError
from mesh.security import private_dir
from mesh.store.retention import SweepResult, sweep_blobs

if TYPE_CHECKING:
    from mesh.settings import MeshSettings
    from mesh.store.base import BlobStore

__all__ = ["FileBlobStore", "PrefixedBlobStore", "blob_store_from_settings"]


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

    async def delete_older_than(
        self, max_age_s: float, *, now_s: float | None = None, dry_run: bool = False
    ) -> SweepResult:
        """Retention: delete blobs modified ``max_age_s`` or more ago (``sweep_blobs``)."""
        return await asyncio.to_thread(
            sweep_blobs, self.root, max_age_s=max_age_s, now_s=now_s, dry_run=dry_run
        )

    async def aclose(self) -> None:
        """Nothing to release."""


class PrefixedBlobStore:
    """A namespace of another ``BlobStore``: every name gets ``prefix`` (e.g. one step's cold storage).

    Context blocks are kept cold under names like ``ctx/block/<variable>``; several steps sharing
    one blob store would overwrite each other's, so each gets a view under its own prefix.
    ``aclose`` leaves the shared store open.
    """

    def __init__(self, inner: BlobStore, prefix: str) -> None:
        """Names given to this view are stored as ``prefix + name`` in ``inner``."""
        self.inner = inner
        self.prefix = prefix

    async def put(self, name: str, data: bytes) -> str:
        """Store under the prefixed name."""
        return await self.inner.put(self.prefix + name, data)

    async def get(self, name: str) -> bytes:
        """Read the prefixed name (``CheckpointNotFound`` if none)."""
        return await self.inner.get(self.prefix + name)

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under ``prefix`` in this view, without the view's prefix."""
        cut = len(self.prefix)
        return [n[cut:] for n in await self.inner.list(self.prefix + prefix)]

    async def delete_older_than(
        self, max_age_s: float, *, now_s: float | None = None, dry_run: bool = False
    ) -> SweepResult:
        """Retention applies to the whole shared store: run it there, not through a view."""
        raise UsageError("run retention on the shared blob store, not on a PrefixedBlobStore view")

    async def aclose(self) -> None:
        """The shared store stays open."""


def blob_store_from_settings(settings: MeshSettings) -> BlobStore:
    """The blob store the settings select: ``MESH_BLOB_BACKEND=file`` (default) or ``s3``."""
    backend = settings.blob_backend
    if backend == "file":
        return FileBlobStore(settings.resolved_blob_dir())
    if backend == "s3":
        from pydantic import SecretStr

        from mesh.store.s3 import S3BlobStore

        secret: SecretStr | None = settings.s3_secret_access_key
        if secret is not None and not secret.get_secret_value():
            secret = None
        path = settings.s3_secret_access_key_file
        if secret is None and path is not None:
            try:
                secret = SecretStr(path.read_text().strip())
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the S3 secret access key file {path} (MESH_S3_SECRET_ACCESS_KEY_FILE): "
                    f"{exc.strerror or exc}"
                ) from None
        return S3BlobStore(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=secret,
            create_bucket=settings.s3_create_bucket,
            path_style=settings.s3_path_style,
        )
    raise ConfigError(f"MESH_BLOB_BACKEND={backend!r}: expected 'file' or 's3'")
