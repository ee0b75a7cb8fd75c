"""The README's "Writing a role" example, taken from the README itself, runs as documented."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mesh.roles import Role, check_role
from mesh.testing import InMemoryMesh

README = Path(__file__).resolve().parents[3] / "README.md"


def _section_blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n### {title}\n")
    end = text.index("\n#", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def _module(name: str, *sources: str) -> ModuleType:
    module = ModuleType(name)
    for source in sources:
        exec(compile(source, f"README.md ({name})", "exec"), module.__dict__)
    return module


def test_the_readme_role_section_has_one_example_role() -> None:
    [role_code] = _section_blocks("Writing a role")
    roles = _module("readme_roles", role_code).ROLES
    assert set(roles) == {"tally", "combine"}
    for role in roles.values():
        assert isinstance(role, Role)
        check_role(role)


async def test_the_readme_example_runs_a_diamond_workflow() -> None:
    [role_code] = _section_blocks("Writing a role")
    [test_code] = _section_blocks("Testing your roles")
    module = _module("readme_example", role_code, test_code)
    await module.test_diamond()


async def test_join_sees_an_ancestor_two_hops_away_by_its_outputs() -> None:
    # The same run, checked here rather than in the README's own asserts (which a README edit
    # could weaken): the seed's outputs reach the join step although join does not depend on it.
    [role_code] = _section_blocks("Writing a role")
    module: Any = _module("readme_roles_2", role_code, _section_blocks("Testing your roles")[0])
    async with InMemoryMesh(module.ROLES) as mesh:
        view = await mesh.run(module.DIAMOND, timeout_s=30)
    assert view.finished is not None and view.finished.status == "succeeded"
    assert view.completed["join"].outputs == {"grand_total": 19, "steps": ["left", "right", "seed"]}
    assert view.completed["left"].turns == 3 and view.completed["right"].turns == 4
    names = {v.name for v in view.completed["seed"].variables}
    assert names == {"seed_total"}


def test_an_unknown_injection_source_is_refused() -> None:
    [role_code] = _section_blocks("Writing a role")
    module: Any = _module("readme_roles_3", role_code)
    action = module.TALLY.actions["add"]
    bad = Role.of("bad", type(action)(action.spec, action.run, inject={"n": "mem:next"}))
    with pytest.raises(ValueError, match="unknown injection source 'mem:next'"):
        check_role(bad)
