"""WorkflowSpec: a DAG of steps, each with a role, its dependencies, parameters and limits."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.codec import format_validation_error

__all__ = ["StepLimits", "StepSpec", "WorkflowSpec", "WorkflowSpecError", "load_workflow_spec"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class WorkflowSpecError(ValueError):
    """A workflow spec that cannot run; the message says what is wrong and where."""


class StepLimits(BaseModel):
    """Bounds on one step's work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_turns: int = Field(default=20, ge=1, le=10_000)
    """Turns after which the step fails instead of looping forever."""

    max_repairs: int = Field(default=3, ge=0, le=20)
    """Repair attempts for an invalid decision before the turn counts as failed."""

    max_retries: int = Field(default=5, ge=0, le=100)
    """Retries of a retryable action failure within one turn."""

    spin_window: int = Field(default=3, ge=2, le=100)
    """Identical consecutive decisions, or turns without progress, that count as spinning."""

    turn_timeout_s: float = Field(default=120.0, gt=0)
    """Wall-clock limit of one turn, in seconds."""


class StepSpec(BaseModel):
    """One node of the workflow DAG."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Unique id within the workflow."""

    role: str
    """Agent role that runs it (a consumer group)."""

    depends_on: tuple[str, ...] = ()
    """Ids of steps that must complete first; their outputs and variables flow into this step."""

    params: Mapping[str, Any] = Field(default_factory=dict)
    """Role-specific parameters."""

    task: str = ""
    """What the step must achieve, in words; the bottom of its prompt."""

    limits: StepLimits = Field(default_factory=StepLimits)
    """Turn, repair, retry and spinning bounds."""

    @field_validator("id", "role")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return value


class WorkflowSpec(BaseModel):
    """A workflow: a mission, rules, and a DAG of steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Human name of the workflow (not its id: one spec can run many times)."""

    mission: str = ""
    """The overall goal; the top of every step's prompt."""

    rules: tuple[str, ...] = ()
    """Rules every step must follow; the top of every step's prompt."""

    variables: Mapping[str, Any] = Field(default_factory=dict)
    """Initial context variables (non-secret) shared by every step."""

    steps: tuple[StepSpec, ...]
    """The steps, in any order; dependencies define the order of execution."""

    @model_validator(mode="after")
    def _check_dag(self) -> WorkflowSpec:
        if not self.steps:
            raise ValueError("a workflow needs at least one step")
        seen: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.id in seen:
                raise ValueError(
                    f"duplicate step id {step.id!r} (steps[{seen[step.id]}] and steps[{index}])"
                )
            seen[step.id] = index
        for index, step in enumerate(self.steps):
            for dep in step.depends_on:
                if dep == step.id:
                    raise ValueError(f"step {step.id!r} (steps[{index}]) depends on itself")
                if dep not in seen:
                    raise ValueError(
                        f"step {step.id!r} (steps[{index}]) depends on unknown step {dep!r}; "
                        f"known steps: {', '.join(sorted(seen))}"
                    )
        cycle = _find_cycle({s.id: s.depends_on for s in self.steps})
        if cycle:
            raise ValueError("dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
        return self

    def step(self, step_id: str) -> StepSpec:
        """The step with this id; ``KeyError`` if there is none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def ancestors(self, step_id: str) -> list[str]:
        """Every step this one depends on, directly or not, in a topological order."""
        deps = {s.id: s.depends_on for s in self.steps}
        order: list[str] = []
        seen: set[str] = set()

        def visit(node: str) -> None:
            for dep in deps[node]:
                if dep not in seen:
                    seen.add(dep)
                    visit(dep)
                    order.append(dep)

        visit(step_id)
        return order

    def topological_order(self) -> list[str]:
        """All step ids, dependencies first (stable in declaration order)."""
        order: list[str] = []
        done: set[str] = set()
        for step in self.steps:
            for node in [*self.ancestors(step.id), step.id]:
                if node not in done:
                    done.add(node)
                    order.append(node)
        return order

    @classmethod
    def parse(cls, data: Any, *, source: str = "<spec>") -> WorkflowSpec:
        """Validate plain data; raise ``WorkflowSpecError`` naming the source and the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WorkflowSpecError(format_validation_error(exc, prefix=f"invalid workflow spec {source}")) from None


def _find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """One dependency cycle as a list of step ids, or [] when the graph is acyclic."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def dfs(node: str) -> list[str]:
        color[node] = grey
        stack.append(node)
        for dep in deps[node]:
            if color.get(dep) == grey:
                return stack[stack.index(dep):]
            if color.get(dep) == white:
                found = dfs(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return []

    for node in deps:
        if color[node] == white:
            found = dfs(node)
            if found:
                # Report in dependency-flow order: a -> b means a depends on b.
                return found
    return []


def load_workflow_spec(path: str | Path) -> WorkflowSpec:
    """Load a spec from a YAML (``.yaml``/``.yml``) or JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowSpecError(f"cannot read workflow spec {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise WorkflowSpecError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowSpecError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise WorkflowSpecError(f"{path}: a workflow spec must be a mapping, got {type(data).__name__}")
    return WorkflowSpec.parse(data, source=str(path))
