"""The data key: AES-GCM sealing bound to its place, key rotation, clear errors, private files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.security import (
    DATA_KEY_ENV,
    DATA_KEY_FILE_ENV,
    DataCipher,
    DataKeyError,
    SealedValueError,
    ensure_data_key_file,
    generate_data_key,
    is_sealed,
    load_data_cipher,
    private_dir,
)
from mesh.store import FileBlobStore, InMemoryStateStore, JournalingStateStore
from mesh.telemetry import ScratchpadWriter

KEY = generate_data_key()
CIPHER = DataCipher.from_text(KEY)

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
contexts = st.lists(st.text(max_size=12), min_size=1, max_size=4).map(tuple)


@settings(max_examples=200, deadline=None)
@given(values, contexts, contexts)
def test_sealed_values_open_only_in_their_own_place(value: object, here: tuple[str, ...], there: tuple[str, ...]) -> None:
    sealed = CIPHER.seal(value, context=here)
    assert is_sealed(sealed)
    assert CIPHER.open(sealed, context=here) == value
    if there != here:
        with pytest.raises(SealedValueError):
            CIPHER.open(sealed, context=there)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=8, max_size=60), st.integers(min_value=0))
def test_the_plaintext_is_not_in_the_sealed_bytes_and_any_flipped_bit_is_refused(secret: str, where: int) -> None:
    sealed = CIPHER.seal(secret, context=("wf", "step", "v"))
    assert secret.encode() not in sealed
    i = where % len(sealed)
    tampered = bytearray(sealed)
    tampered[i] ^= 0x01
    with pytest.raises(SealedValueError):
        CIPHER.open(bytes(tampered), context=("wf", "step", "v"))


def test_rotation_seals_with_the_newest_key_and_opens_with_the_older() -> None:
    old = generate_data_key()
    sealed_before = DataCipher.from_text(old).seal("v", context=("c",))
    rotated = DataCipher.from_text(f"{generate_data_key()}, {old}")
    assert rotated.open(sealed_before, context=("c",)) == "v"
    sealed_after = rotated.seal("v", context=("c",))
    assert sealed_after[5:13].hex() == rotated.key_id != DataCipher.from_text(old).key_id
    with pytest.raises(SealedValueError, match=f"sealed with data key {rotated.key_id}.*does not hold"):
        DataCipher.from_text(old).open(sealed_after, context=("c",))


def test_a_missing_or_bad_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataKeyError, match=f"no data key.*{DATA_KEY_ENV}.*{DATA_KEY_FILE_ENV}.*mesh dev up"):
        load_data_cipher({}, state_dir=tmp_path)
    with pytest.raises(DataKeyError, match="not base64"):
        load_data_cipher({DATA_KEY_ENV: "not a key!"})
    with pytest.raises(DataKeyError, match="16 bytes; AES-256-GCM needs 32"):
        load_data_cipher({DATA_KEY_ENV: base64.b64encode(b"x" * 16).decode()})
    with pytest.raises(DataKeyError, match="cannot read the data key file"):
        load_data_cipher({DATA_KEY_FILE_ENV: str(tmp_path / "absent")})


def test_key_sources_in_order(tmp_path: Path) -> None:
    made = ensure_data_key_file(tmp_path / "state")
    assert ensure_data_key_file(tmp_path / "state") == made  # kept, not replaced
    from_state_dir = load_data_cipher({}, state_dir=tmp_path / "state")
    assert load_data_cipher({"MESH_STATE_DIR": str(tmp_path / "state")}).key_id == from_state_dir.key_id
    assert load_data_cipher({DATA_KEY_FILE_ENV: str(made)}).key_id == from_state_dir.key_id
    assert load_data_cipher({DATA_KEY_ENV: KEY, DATA_KEY_FILE_ENV: str(made)}).key_id == CIPHER.key_id
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700


def _modes(root: Path) -> list[tuple[str, int, int]]:
    """(path, permission bits, expected bits) of ``root`` and everything under it."""
    def entry(path: Path) -> tuple[str, int, int]:
        mode = path.stat().st_mode
        return str(path), stat.S_IMODE(mode), 0o700 if stat.S_ISDIR(mode) else 0o600

    found = [entry(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        found.extend(entry(Path(dirpath) / name) for name in dirnames + filenames)
    return found


async def test_files_the_mesh_writes_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        blobs = FileBlobStore(tmp_path / "blobs", fsync=False)
        await blobs.put("wf-1/fetch/000001-e1.msgpack", b"x")
        journal = JournalingStateStore(InMemoryStateStore(), tmp_path / "journal", agent_id="a1")
        await journal.aclose()
        pad = ScratchpadWriter(tmp_path / "pads")
        pad.open_step("wf-1", "fetch", role="fetch", agent_id="a1", mission="m")
        private_dir(tmp_path / "loose")
        (tmp_path / "loose").chmod(0o755)
        private_dir(tmp_path / "loose")  # tightened when it exists already
    finally:
        os.umask(old)
    for root in ("blobs", "journal", "pads", "loose"):
        modes = _modes(tmp_path / root)
        assert len(modes) >= 1
        for path, mode, expected in modes:
            assert mode == expected, f"{path} is {oct(mode)}"
