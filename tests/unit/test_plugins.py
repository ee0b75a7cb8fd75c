"""``mesh.plugins``: roles modules and commands found through entry points, with clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mesh.errors import ConfigError
from mesh.plugins import load_roles, roles_modules
from mesh.runtime.agent import load_role


def test_a_named_roles_module_is_loaded() -> None:
    module, roles = load_roles("agents.roles")
    assert module == "agents.roles" and "fetch" in roles
    assert load_role("fetch", "agents.roles").name == "fetch"


def test_an_unknown_role_names_the_roles_there_are() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown role 'nope'; agents.roles defines: fetch, identity, report, validate",
    ):
        load_role("nope", "agents.roles")


def test_a_module_without_roles_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "no_roles_here.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="has no ROLES mapping"):
        load_roles("no_roles_here")
    with pytest.raises(ConfigError, match=r"cannot import roles module 'no\.such\.module'"):
        load_roles("no.such.module")
    sys.modules.pop("no_roles_here", None)


def test_the_registered_roles_module_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A distribution on sys.path that registers its own roles module, as a user's package would.
    dist = tmp_path / "my_roles_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-roles-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[agent_mesh.roles]\nmine = my_roles_mod\n")
    (tmp_path / "my_roles_mod.py").write_text(
        "from mesh.roles import Role\nROLES = {'solo': Role('solo', {})}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my_roles_mod" in roles_modules()  # found through the package metadata
    # The choice among registered modules, whatever else this environment has installed:
    monkeypatch.setattr("mesh.plugins.roles_modules", lambda: ["my_roles_mod"])
    assert load_role("solo").name == "solo"
    monkeypatch.setattr("mesh.plugins.roles_modules", lambda: ["my_roles_mod", "agents.roles"])
    with pytest.raises(ConfigError, match="several roles modules are registered"):
        load_role("solo")
    monkeypatch.setattr("mesh.plugins.roles_modules", lambda: [])
    with pytest.raises(ConfigError, match="no roles module: pass --roles-module"):
        load_role("solo")
    sys.modules.pop("my_roles_mod", None)


def test_observer_plugins_are_built_for_the_agent_and_broken_ones_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mesh.plugins import load_observers
    from mesh.runtime.observers import TurnObserver
    from tests.observer_plugin import install

    monkeypatch.syspath_prepend(str(install(tmp_path)))
    observers = load_observers("fetch-7", "fetch")
    assert len(observers) == 2 and all(isinstance(o, TurnObserver) for o in observers)
    made = {(o.agent_id, o.role) for o in observers}  # type: ignore[attr-defined]
    assert made == {("fetch-7", "fetch"), ("?", "?")}  # the factory got the agent; the class, no arguments
    err = capsys.readouterr().err
    assert "observer plugin broken-import" in err and "ModuleNotFoundError" in err
    assert "observer plugin not-an-observer" in err and "not a mesh.runtime.observers.TurnObserver" in err
    sys.modules.pop("turn_log_plugin", None)
