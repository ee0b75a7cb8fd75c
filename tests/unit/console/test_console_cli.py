"""``mesh console`` refuses to serve other machines unless told to, and then only with a token."""

from __future__ import annotations

import pytest

import mesh.console
from mesh.cli import run


def test_binding_a_public_address_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["console", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MESH_CONSOLE_ALLOW_REMOTE" in err


def test_allow_remote_without_a_token_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_CONSOLE_ALLOW_REMOTE", "1")
    monkeypatch.delenv("MESH_CONSOLE_TOKEN", raising=False)
    monkeypatch.delenv("MESH_CONSOLE_TOKEN_FILE", raising=False)
    assert run(["console", "--host", "0.0.0.0"]) == 2
    assert "needs a bearer token" in capsys.readouterr().err


def test_the_console_package_surface_is_pinned() -> None:
    assert sorted(mesh.console.__all__) == sorted(
        [
            "ConsoleSettings",
            "build_app",
            "create_app",
            "serve",
            "ConsoleData",
            "TimelineEvent",
            "decode_checkpoint",
            "decode_context_map",
            "Decide",
            "DecisionRequest",
            "mesh_decide",
        ]
    )
    assert all(hasattr(mesh.console, name) for name in mesh.console.__all__)
