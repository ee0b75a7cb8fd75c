"""One demo-like mesh and one console process for every console test (they take minutes to set up)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.console.scenario import Scenario

CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="package")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> Iterator[Scenario]:
    """Run A (kill + takeover) finished, B paused (spinning), C paused (budget); the console serving them."""
    sc = Scenario(tmp_path_factory.mktemp("console"), kafka_bootstrap, redis_url)
    try:
        sc.start()
        sc.run_with_kill()
        sc.run_spinning()
        sc.run_over_budget()
        yield sc
    finally:
        sc.close()


@pytest.fixture(scope="package")
def chromium_path() -> str:
    """Debian's chromium (browser downloads are not possible here); required when MESH_REQUIRE_CHROMIUM=1."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium") or ""
    if not path:
        if os.environ.get("MESH_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(
            "chromium is not installed (apt-get install chromium; MESH_CHROMIUM names another path)"
        )
    return path
