"""S3-compatible BlobStore: durable blob copies that outlive the pod (AWS S3, or any server that speaks S3).

Why aiobotocore: it is botocore (the AWS SDK's own request signing, retries, credential chain,
endpoint and region rules) driven by aiohttp, kept by aio-libs and used by s3fs/fsspec; the mesh
is asyncio throughout, so a blocking boto3 call would need a thread per request. Credentials come
from the settings (``MESH_S3_ACCESS_KEY_ID`` / ``MESH_S3_SECRET_ACCESS_KEY``) or, when those are
unset, from botocore's standard chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the Helm
chart maps a Kubernetes Secret onto them), a web identity token (EKS IRSA), the shared config file.

What is stored is what the filesystem store stores: checkpoint copies and archived turn records,
whose secret values are already sealed (``mesh.security.DataCipher``); the bucket never sees a
plaintext secret, and the secret key is held as a ``SecretStr`` so it is in no repr or log.

Request and response checksums are computed only when an operation requires them
(``when_required``): botocore's newer default (CRC32 trailers on every upload) is not implemented
by most S3-compatible servers (s3proxy, older Ceph RGW), and S3 itself accepts both.

Retention: ``delete_older_than`` lists the prefix and deletes objects whose ``LastModified`` is
older than the age, in batches of 1,000 (``mesh gc``). On AWS a bucket lifecycle rule does the
same without a job; both can be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from mesh.errors import CheckpointNotFound, ConfigError, StoreError, StoreUnavailable, UsageError
from mesh.store.retention import SweepResult

__all__ = ["S3BlobStore", "S3Unavailable"]

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_AUTH = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
}


class S3Unavailable(StoreUnavailable):
    """The S3 endpoint could not be reached, timed out, or answered 5xx / SlowDown (retryable)."""


def _check_name(name: str) -> str:
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise UsageError(f"invalid blob name {name!r}")
    return "/".join(parts)


class S3BlobStore:
    """Blobs as objects ``<prefix><name>`` in one bucket; a put is complete or absent (S3 PUT is atomic)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: SecretStr | str | None = None,
        session_token: SecretStr | str | None = None,
        create_bucket: bool = False,
        path_style: bool = True,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        """Point at ``bucket`` (created on first use when ``create_bucket``).

        ``endpoint_url`` is for S3-compatible servers (None: AWS for ``region``); ``path_style``
        addresses ``endpoint/bucket/key`` (what most S3-compatible servers expect) instead of
        ``bucket.endpoint/key``. Access key and secret given together override botocore's
        credential chain. ``max_attempts`` counts botocore's own retries (standard mode).
        """
        if not bucket:
            raise ConfigError("S3 blob store: no bucket given (MESH_S3_BUCKET)")
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError(
                "S3 blob store: give both the access key id and the secret access key, or neither"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._access_key_id = access_key_id
        self._secret = (
            SecretStr(secret_access_key)
            if isinstance(secret_access_key, str)
            else secret_access_key
        )
        self._token = SecretStr(session_token) if isinstance(session_token, str) else session_token
        self.create_bucket = create_bucket
        self.path_style = path_style
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self.max_attempts = max_attempts
        self._client: Any = None
        self._batch_delete = True
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def where(self) -> str:
        """``s3://bucket/prefix`` (for messages)."""
        return f"s3://{self.bucket}/{self.prefix}"

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            # Imported here: aiobotocore (botocore's service models) is slow to import and only
            # processes configured for S3 need it.
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session

            config = AioConfig(
                connect_timeout=self._timeouts[0],
                read_timeout=self._timeouts[1],
                retries={"mode": "standard", "max_attempts": self.max_attempts},
                s3={"addressing_style": "path" if self.path_style else "auto"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            kwargs: dict[str, Any] = {"region_name": self.region or "us-east-1", "config": config}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            if self._access_key_id is not None and self._secret is not None:
                kwargs["aws_access_key_id"] = self._access_key_id
                kwargs["aws_secret_access_key"] = self._secret.get_secret_value()
                if self._token is not None:
                    kwargs["aws_session_token"] = self._token.get_secret_value()
            stack = contextlib.AsyncExitStack()
            try:
                client = await stack.enter_async_context(
                    get_session().create_client("s3", **kwargs)
                )
                if self.create_bucket:
                    await self._ensure_bucket(client)
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._client = stack, client
            return client

    async def _ensure_bucket(self, client: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise
        try:
            if self.region and self.region != "us-east-1":
                await client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},
                )
            else:
                await client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def _call(self, what: str, op: str, **kwargs: Any) -> Any:
        """One client call, with the client's exceptions turned into ``StoreError`` subclasses."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = await self._get_client()
            return await getattr(client, op)(**kwargs)
        except ClientError as exc:
            raise _translate(exc, what, self.where) from None
        except (TimeoutError, BotoCoreError, OSError) as exc:
            # Endpoint unreachable, connection reset, read timeout: worth retrying later.
            raise S3Unavailable(
                f"{what} at {self.where}: S3 unreachable: {type(exc).__name__}: {exc}"
            ) from None

    async def put(self, name: str, data: bytes) -> str:
        """Upload a blob (one PUT: the object is all there or not at all); return its ``s3://`` URI."""
        key = self.prefix + _check_name(name)
        await self._call(
            f"blob write {name!r}", "put_object", Bucket=self.bucket, Key=key, Body=bytes(data)
        )
        return f"s3://{self.bucket}/{key}"

    async def get(self, name: str) -> bytes:
        """Download a blob; ``CheckpointNotFound`` if there is none."""
        key = self.prefix + _check_name(name)
        try:
            resp = await self._call(
                f"blob read {name!r}", "get_object", Bucket=self.bucket, Key=key
            )
        except _Missing:
            raise CheckpointNotFound(f"no blob {name!r} in {self.where}") from None
        from aiohttp import ClientError as HttpError

        try:
            async with resp["Body"] as body:
                return bytes(await body.read())
        except (TimeoutError, OSError, HttpError) as exc:
            raise S3Unavailable(
                f"blob read {name!r} at {self.where}: {type(exc).__name__}: {exc}"
            ) from None

    async def _objects(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call(f"blob list {prefix!r}", "list_objects_v2", **kwargs)
            # Filesystem-backed servers may list directories as "<dir>/" keys: not blobs.
            found.extend(o for o in page.get("Contents", ()) if not o["Key"].endswith("/"))
            if not page.get("IsTruncated"):
                return found
            token = page.get("NextContinuationToken")

    async def list(self, prefix: str) -> Sequence[str]:
        """Names under ``prefix`` (relative to the store's own prefix), sorted."""
        cut = len(self.prefix)
        return sorted(o["Key"][cut:] for o in await self._objects(prefix))

    async def delete_older_than(
        self, max_age_s: float, *, now_s: float | None = None, dry_run: bool = False
    ) -> SweepResult:
        """Retention: delete blobs whose ``LastModified`` is ``max_age_s`` or more ago."""
        now = time.time() if now_s is None else now_s
        old: list[dict[str, Any]] = []
        kept = freed = 0
        for obj in await self._objects(""):
            if now - obj["LastModified"].timestamp() >= max_age_s:
                old.append(obj)
                freed += int(obj.get("Size", 0))
            else:
                kept += 1
        if not dry_run:
            await self._delete([o["Key"] for o in old])
        return SweepResult(deleted=len(old), kept=kept, bytes_freed=freed, dirs_removed=0)

    async def _delete_one(self, key: str, limit: asyncio.Semaphore) -> None:
        async with limit:
            await self._call("blob retention sweep", "delete_object", Bucket=self.bucket, Key=key)

    async def _delete(self, keys: Sequence[str]) -> None:
        limit = asyncio.Semaphore(16)
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            if self._batch_delete:
                try:
                    resp = await self._call(
                        "blob retention sweep",
                        "delete_objects",
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                    )
                except _NotImplemented:
                    # DeleteObjects needs a request checksum that some S3-compatible servers do
                    # not implement (s3proxy: x-amz-checksum-crc32): one DELETE per object instead.
                    self._batch_delete = False
                else:
                    errors = resp.get("Errors") or []
                    if errors:
                        first = errors[0]
                        raise StoreError(
                            f"blob retention sweep at {self.where}: {len(errors)} object(s) not deleted, "
                            f"e.g. {first.get('Key')!r}: {first.get('Code')}"
                        )
                    continue
            await asyncio.gather(*(self._delete_one(k, limit) for k in batch))

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class _Missing(StoreError):
    """The object does not exist (turned into ``CheckpointNotFound`` by the caller)."""


class _NotImplemented(StoreError):
    """The server does not implement this operation or one of its headers."""


def _code(exc: Any) -> str:
    err = getattr(exc, "response", {}).get("Error", {})
    return str(err.get("Code", ""))


def _translate(exc: Any, what: str, where: str) -> StoreError:
    code = _code(exc)
    status = int(
        getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
    )
    if code in _NOT_FOUND:
        return _Missing(f"{what}: not found")
    if code == "NoSuchBucket":
        return StoreError(
            f"{what}: bucket of {where} does not exist (create it, or set MESH_S3_CREATE_BUCKET=1)"
        )
    if code == "NotImplemented":
        return _NotImplemented(f"{what} at {where}: the S3 server does not implement it")
    if code in _AUTH:
        return StoreError(
            f"{what} at {where}: refused by S3 ({code}): check the credentials and the bucket policy"
        )
    if status >= 500 or code in (
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
    ):
        return S3Unavailable(f"{what} at {where}: S3 answered {code or status}, retry later")
    return StoreError(f"{what} at {where}: S3 error {code or status}")
