"""Blob retention: the age-based sweep deletes old copies only, and empty directories after them."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.cli import run
from mesh.store.retention import sweep_blobs


@settings(max_examples=30, deadline=None)
@given(ages=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60 * 86400)), min_size=0, max_size=25),
       max_age=st.integers(1, 40 * 86400))
def test_sweep_deletes_exactly_the_old_blobs(tmp_path_factory, ages: list[tuple[int, int]], max_age: int) -> None:  # type: ignore[no-untyped-def]
    """Whole seconds: a file system stores mtimes in ns, so a float age at the boundary could round either way."""
    root = tmp_path_factory.mktemp("blobs")
    now = 1_900_000_000.0
    expected_kept = set()
    for i, (depth, age) in enumerate(ages):
        path = root.joinpath(*[f"d{j}" for j in range(depth)], f"b{i}.ckpt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
        os.utime(path, (now - age, now - age))
        if age < max_age:
            expected_kept.add(path)
    outside = tmp_path_factory.mktemp("outside") / "keep.me"
    outside.write_bytes(b"x")
    os.utime(outside, (0, 0))
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    result = sweep_blobs(root, max_age_s=max_age, now_s=now)
    left = {p for p in root.rglob("*.ckpt") if "link" not in p.parts}
    assert left == expected_kept
    assert result.kept == len(expected_kept) and result.deleted == len(ages) - len(expected_kept)
    assert outside.exists(), "the sweep followed a symlink out of the blob directory"
    for d in [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]:
        assert any(d.iterdir()), f"empty directory {d} left behind"


def test_gc_command_sweeps_the_blob_dir(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    blobs = tmp_path / "blobs" / "wf-1" / "fetch"
    blobs.mkdir(parents=True)
    old, new = blobs / "1.ckpt", blobs / "2.ckpt"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (1, 1))
    monkeypatch.setenv("MESH_BLOB_DIR", str(tmp_path / "blobs"))
    assert run(["gc", "--blobs-older-than", "7d", "--dry-run"]) == 0
    assert old.exists() and "would delete 1 blob(s)" in capsys.readouterr().out
    assert run(["gc", "--blobs-older-than", "7d"]) == 0
    assert not old.exists() and new.exists()
    assert run(["gc", "--blobs-older-than", "soon"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
