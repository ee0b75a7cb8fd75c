"""Retention of durable blob copies: an age-based sweep of a ``FileBlobStore`` directory.

Checkpoints, secrets and run-index entries of a finished workflow expire in Redis by TTL (the
agents set it when they fold ``WorkflowCompleted``). Blob copies live on disk, which has no TTL, so
``mesh gc`` (run it from cron or a Kubernetes CronJob) deletes the ones older than the policy's age.
Age is the file's modification time: a blob is written once and never changed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SweepResult", "sweep_blobs"]


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep did."""

    deleted: int
    kept: int
    bytes_freed: int
    dirs_removed: int


def sweep_blobs(root: str | Path, *, max_age_s: float, now_s: float | None = None, dry_run: bool = False) -> SweepResult:
    """Delete blob files under ``root`` older than ``max_age_s``, then the directories left empty.

    Walks without following symlinks and never leaves ``root``. A missing ``root`` is an empty sweep.
    """
    root = Path(root)
    now = time.time() if now_s is None else now_s
    deleted = kept = freed = dirs = 0
    if not root.is_dir():
        return SweepResult(0, 0, 0, 0)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if now - st.st_mtime >= max_age_s:
                if not dry_run:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                deleted += 1
                freed += st.st_size
            else:
                kept += 1
        if dirpath != str(root) and not dry_run:
            try:
                os.rmdir(dirpath)  # only succeeds when empty
                dirs += 1
            except OSError:
                pass
        del dirnames
    return SweepResult(deleted, kept, freed, dirs)
