"""The data key: secret values at rest (checkpoints, blob copies, journals, gossip maps) are sealed with AES-GCM.

A sealed value is ``MAGIC | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag``. The associated
data names where the value belongs (e.g. ``checkpoint / workflow / step / variable``), so a
ciphertext copied to another workflow, step or variable fails to open instead of decrypting
there. The key id is the first 8 bytes of SHA-256 of the key: a process can hold old keys to open
what they sealed while sealing with the newest (rotation).

Where the key comes from, first found wins:

1. ``MESH_DATA_KEY``: one or more base64 keys of 32 bytes, separated by commas or whitespace; the
   first seals, all open.
2. ``MESH_DATA_KEY_FILE``: a file holding the same (a mounted Kubernetes Secret).
3. ``<state dir>/data.key``, created by ``mesh dev up`` and the demo (``ensure_data_key_file``).

Nothing found is an error (``DataKeyError``) the moment a secret must be sealed or opened: the
mesh never falls back to plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mesh.errors import ConfigError, PermanentError

__all__ = [
    "DATA_KEY_ENV",
    "DATA_KEY_FILE_ENV",
    "DATA_KEY_FILENAME",
    "DataCipher",
    "DataKeyError",
    "SealedValueError",
    "data_cipher",
    "ensure_data_key_file",
    "generate_data_key",
    "is_sealed",
    "load_data_cipher",
    "private_dir",
    "write_private_file",
]

DATA_KEY_ENV = "MESH_DATA_KEY"
"""Environment variable holding the data key(s), base64, newest first."""
DATA_KEY_FILE_ENV = "MESH_DATA_KEY_FILE"
"""Environment variable naming a file that holds the data key(s) (a mounted Kubernetes Secret)."""
DATA_KEY_FILENAME = "data.key"
"""The key file ``mesh dev`` creates in its state directory."""

_MAGIC = b"\x00msk1"
_KID_BYTES = 8
_NONCE_BYTES = 12
_KEY_BYTES = 32
_HEADER = len(_MAGIC) + _KID_BYTES + _NONCE_BYTES


class DataKeyError(ConfigError):
    """No data key is configured, or the configured one is not a valid key."""


class SealedValueError(PermanentError):
    """A sealed value cannot be opened: unknown key id, wrong key, tampered, or moved to another place."""


def generate_data_key() -> str:
    """A new random data key, base64 (what ``MESH_DATA_KEY`` holds)."""
    return base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KID_BYTES]


def _parse_keys(text: str, where: str) -> list[bytes]:
    keys = []
    for i, item in enumerate(t for t in re.split(r"[\s,]+", text) if t):
        try:
            key = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise DataKeyError(f"data key #{i + 1} in {where} is not base64") from None
        if len(key) != _KEY_BYTES:
            raise DataKeyError(f"data key #{i + 1} in {where} is {len(key)} bytes; AES-256-GCM needs {_KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise DataKeyError(f"{where} holds no data key")
    return keys


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is a sealed value (bytes that start with the sealing magic)."""
    return isinstance(value, bytes | bytearray) and bytes(value[: len(_MAGIC)]) == _MAGIC


def _associated_data(context: Sequence[str]) -> bytes:
    # msgpack of a list of strings: injective, so ("a", "bc") and ("ab", "c") never collide.
    return msgpack.packb(["mesh-sealed/1", *map(str, context)], use_bin_type=True)


class DataCipher:
    """Seals and opens secret values with AES-256-GCM under the data key(s); thread-safe."""

    def __init__(self, keys: Sequence[bytes], *, source: str = "") -> None:
        """``keys[0]`` seals; every key opens what it sealed. ``source`` says where they came from (errors)."""
        if not keys:
            raise DataKeyError("no data key given")
        for key in keys:
            if len(key) != _KEY_BYTES:
                raise DataKeyError(f"a data key is {len(key)} bytes; AES-256-GCM needs {_KEY_BYTES}")
        self._aeads = {_key_id(k): AESGCM(bytes(k)) for k in keys}
        self._primary = _key_id(keys[0])
        self.source = source

    @classmethod
    def from_text(cls, text: str, *, source: str = "the data key") -> DataCipher:
        """Keys from text: base64 keys separated by commas or whitespace, newest first."""
        return cls(_parse_keys(text, source), source=source)

    @property
    def key_id(self) -> str:
        """Hex id of the key that seals."""
        return self._primary.hex()

    def seal(self, value: Any, *, context: Sequence[str]) -> bytes:
        """``value`` (anything msgpack packs) encrypted and bound to ``context``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = msgpack.packb(value, use_bin_type=True)
        ct = self._aeads[self._primary].encrypt(nonce, plain, _associated_data(context))
        return _MAGIC + self._primary + nonce + ct

    def open(self, sealed: bytes, *, context: Sequence[str]) -> Any:
        """The value ``seal`` sealed under the same ``context``; ``SealedValueError`` otherwise."""
        where = "/".join(map(str, context))
        data = bytes(sealed)
        if not is_sealed(data) or len(data) < _HEADER + 16:
            raise SealedValueError(f"secret at {where} is not a sealed value")
        kid = data[len(_MAGIC) : len(_MAGIC) + _KID_BYTES]
        aead = self._aeads.get(kid)
        if aead is None:
            raise SealedValueError(
                f"secret at {where} was sealed with data key {kid.hex()}, which {self.source or 'this process'} "
                f"does not hold (have {', '.join(k.hex() for k in self._aeads)}); "
                f"configure that key in {DATA_KEY_ENV} or {DATA_KEY_FILE_ENV} (after the current one)"
            )
        nonce = data[len(_MAGIC) + _KID_BYTES : _HEADER]
        try:
            plain = aead.decrypt(nonce, data[_HEADER:], _associated_data(context))
        except InvalidTag:
            raise SealedValueError(
                f"secret at {where} failed authentication under data key {kid.hex()}: "
                "tampered with, or copied from another workflow, step or variable"
            ) from None
        return msgpack.unpackb(plain, raw=False)


def _default_state_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("MESH_STATE_DIR") or Path.home() / ".cache" / "agent-mesh").expanduser()


def load_data_cipher(env: Mapping[str, str] | None = None, *, state_dir: Path | None = None) -> DataCipher:
    """The cipher configured by ``env`` (see the module docstring); ``DataKeyError`` if none."""
    env = os.environ if env is None else env
    text = env.get(DATA_KEY_ENV, "").strip()
    if text:
        return DataCipher.from_text(text, source=DATA_KEY_ENV)
    path_text = env.get(DATA_KEY_FILE_ENV, "").strip()
    if path_text:
        path = Path(path_text).expanduser()
        try:
            return DataCipher.from_text(path.read_text(), source=f"{DATA_KEY_FILE_ENV}={path}")
        except OSError as exc:
            raise DataKeyError(f"cannot read the data key file {path} ({DATA_KEY_FILE_ENV}): {exc.strerror or exc}") from None
    path = (state_dir if state_dir is not None else _default_state_dir(env)) / DATA_KEY_FILENAME
    try:
        return DataCipher.from_text(path.read_text(), source=str(path))
    except FileNotFoundError:
        raise DataKeyError(
            f"no data key to seal secrets at rest: set {DATA_KEY_ENV} (base64 of 32 random bytes, e.g. "
            f"`openssl rand -base64 32`) or {DATA_KEY_FILE_ENV} (a mounted Kubernetes Secret), "
            f"or run `mesh dev up`, which creates {path}"
        ) from None
    except OSError as exc:
        raise DataKeyError(f"cannot read the data key file {path}: {exc.strerror or exc}") from None


_cipher_lock = threading.Lock()
_cipher: DataCipher | None = None


def data_cipher() -> DataCipher:
    """This process's cipher, loaded from the environment on first use; ``DataKeyError`` if none."""
    global _cipher
    with _cipher_lock:
        if _cipher is None:
            _cipher = load_data_cipher()
        return _cipher


def _reset_data_cipher() -> None:
    """Forget the loaded cipher (tests that change the environment)."""
    global _cipher
    with _cipher_lock:
        _cipher = None


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and its missing parents as 0700, tighten ``path`` itself if it exists; return it."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private_file(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a new 0600 file at ``path`` (in a 0700 directory), atomically via a temp file."""
    path = Path(path)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_data_key_file(state_dir: Path | str) -> Path:
    """``<state_dir>/data.key``, created (0600, random key) if absent; for ``mesh dev`` and the demo."""
    path = Path(state_dir) / DATA_KEY_FILENAME
    if not path.exists():
        private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_private_file(tmp, (generate_data_key() + "\n").encode())
        try:
            os.link(tmp, path)  # fails if another process made one meanwhile: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path
