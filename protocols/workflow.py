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
from protocols.limits import LimitExceeded, Limits, check_structure, current_limits

__all__ = [
    "StepLimits",
    "StepSpec",
    "WorkflowBudget",
    "WorkflowSpec",
    "WorkflowSpecError",
    "load_workflow_spec",
    "parse_workflow_spec",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class WorkflowSpecError(ValueError):
    """A workflow spec that cannot run; the message says what is wrong and where.

    ``reason`` is a short code: ``syntax``, ``encoding``, ``too_deep``, ``too_large``,
    ``too_many_steps``, ``fan_in`` or ``schema``.
    """

    def __init__(self, message: str, *, reason: str = "schema") -> None:
        super().__init__(message)
        self.reason = reason


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


class WorkflowBudget(BaseModel):
    """What a workflow may spend on reasoner calls, all steps together.

    Before every reasoner call, a step adds what the workflow spent (all steps, as the log tells)
    and the size of the prompt it is about to send; if that crosses a limit, the step pauses with
    an escalation of kind ``budget`` instead (fail closed: no further call). The answer's output
    tokens cannot be known in advance, so the last call may overshoot by its output. An operator
    who resumes a budget pause allows that step one more budget's worth from what was spent then;
    ``reject`` fails the step.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    """Input plus output tokens of every reasoner call of the workflow."""

    max_cost_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Estimated cost in US dollars (the agents' price table, per model)."""

    @model_validator(mode="after")
    def _one_limit(self) -> WorkflowBudget:
        if self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("a budget needs max_tokens, max_cost_usd or both")
        return self


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

    budget: WorkflowBudget | None = None
    """Token and/or cost budget of the whole workflow; None: unlimited."""

    @model_validator(mode="before")
    @classmethod
    def _check_limits(cls, data: Any) -> Any:
        # Before any field is validated: bound depth, size, step count and fan-in of the raw
        # data, so nothing below (pydantic, the DAG checks, a repr in an error) meets a giant.
        _check_spec_limits(data, current_limits())
        return data

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
                        f"known steps: {_some(sorted(seen))}"
                    )
        cycle = _find_cycle({s.id: s.depends_on for s in self.steps})
        if cycle:
            path = [*cycle, cycle[0]]
            if len(path) > _NAMES_SHOWN:
                path = [*path[: _NAMES_SHOWN - 1], f"... ({len(cycle) - _NAMES_SHOWN + 1} more)", cycle[0]]
            raise ValueError("dependency cycle: " + " -> ".join(path))
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
        order = _postorder(deps, deps[step_id], set())
        return order

    def topological_order(self) -> list[str]:
        """All step ids, dependencies first (stable in declaration order)."""
        deps = {s.id: s.depends_on for s in self.steps}
        return _postorder(deps, [s.id for s in self.steps], set())

    @classmethod
    def parse(cls, data: Any, *, source: str = "<spec>") -> WorkflowSpec:
        """Validate plain data; raise ``WorkflowSpecError`` naming the source and the field."""
        try:
            _check_spec_limits(data, current_limits())
            return cls.model_validate(data)
        except LimitExceeded as exc:
            raise WorkflowSpecError(f"invalid workflow spec {source}: {exc}", reason=exc.reason) from None
        except ValidationError as exc:
            raise WorkflowSpecError(format_validation_error(exc, prefix=f"invalid workflow spec {source}")) from None


def _check_spec_limits(data: Any, limits: Limits) -> None:
    """Raise ``LimitExceeded`` when raw spec data is too deep, too large, too long or too wide."""
    check_structure(data, what="workflow spec", limits=limits)
    if not isinstance(data, Mapping):
        return  # pydantic says what is wrong with it
    steps = data.get("steps")
    if isinstance(steps, list | tuple):
        if len(steps) > limits.max_steps:
            raise LimitExceeded(
                f"workflow spec has {len(steps)} steps, more than the limit of {limits.max_steps} "
                "(MESH_MAX_SPEC_STEPS)",
                reason="too_many_steps",
            )
        for index, step in enumerate(steps):
            deps = step.get("depends_on") if isinstance(step, Mapping) else None
            if isinstance(deps, list | tuple) and len(deps) > limits.max_dependencies:
                raise LimitExceeded(
                    f"steps[{index}] depends on {len(deps)} steps, more than the limit of "
                    f"{limits.max_dependencies} (MESH_MAX_STEP_DEPENDENCIES)",
                    reason="fan_in",
                )


def _postorder(deps: Mapping[str, tuple[str, ...]], roots: Any, done: set[str]) -> list[str]:
    """Nodes reachable from ``roots`` (and the roots), dependencies first; iterative DFS."""
    order: list[str] = []
    for root in roots:
        if root in done:
            continue
        done.add(root)
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack[-1]
            children = deps[node]
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if child not in done:
                    done.add(child)
                    stack.append((child, 0))
            else:
                stack.pop()
                order.append(node)
    return order


_NAMES_SHOWN = 12  # step ids an error names at most: a hostile spec chooses how many there are


def _some(names: list[str]) -> str:
    """Up to ``_NAMES_SHOWN`` names, then how many more."""
    if len(names) <= _NAMES_SHOWN:
        return ", ".join(names)
    return ", ".join(names[:_NAMES_SHOWN]) + f", ... ({len(names) - _NAMES_SHOWN} more)"


def _find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """One dependency cycle as a list of step ids, or [] when the graph is acyclic.

    Iterative three-colour DFS: a chain as long as the step limit allows never recurses.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for start in deps:
        if color[start] != white:
            continue
        color[start] = grey
        path: list[str] = [start]
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack[-1]
            children = deps[node]
            if i < len(children):
                stack[-1] = (node, i + 1)
                dep = children[i]
                state = color.get(dep)
                if state == grey:
                    # Report in dependency-flow order: a -> b means a depends on b.
                    return path[path.index(dep):]
                if state == white:
                    color[dep] = grey
                    path.append(dep)
                    stack.append((dep, 0))
            else:
                stack.pop()
                path.pop()
                color[node] = black
    return []


def load_workflow_spec(path: str | Path) -> WorkflowSpec:
    """Load a spec from a YAML (``.yaml``/``.yml``) or JSON file; ``WorkflowSpecError`` on any fault."""
    path = Path(path)
    limit = current_limits().max_spec_bytes
    try:
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise WorkflowSpecError(f"cannot read workflow spec {path}: {exc.strerror}", reason="io") from None
    return parse_workflow_spec(raw, source=str(path), fmt="json" if path.suffix.lower() == ".json" else "yaml")


def parse_workflow_spec(text: str | bytes, *, source: str = "<spec>", fmt: str = "yaml") -> WorkflowSpec:
    """Parse a spec from YAML (``fmt="yaml"``) or JSON text; any fault is a ``WorkflowSpecError``.

    What a user can hand in (binary files, invalid UTF-8, syntax errors, nesting thousands deep,
    alias bombs, huge step chains) comes back as one error that names ``source`` and the place,
    never as a foreign exception.
    """
    limits = current_limits()
    if len(text) > limits.max_spec_bytes:
        raise WorkflowSpecError(
            f"{source}: workflow spec is larger than {limits.max_spec_bytes} bytes (MESH_MAX_SPEC_BYTES)",
            reason="too_large",
        )
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowSpecError(
                f"{source}: workflow spec is not UTF-8 text (byte {exc.start}: {exc.reason}); is it a binary file?",
                reason="encoding",
            ) from None
    if "\x00" in text:
        raise WorkflowSpecError(f"{source}: workflow spec contains NUL bytes; is it a binary file?", reason="encoding")
    data = _load_text(text, source=source, fmt=fmt)
    if not isinstance(data, dict):
        raise WorkflowSpecError(f"{source}: a workflow spec must be a mapping, got {type(data).__name__}")
    return WorkflowSpec.parse(data, source=source)


def _load_text(text: str, *, source: str, fmt: str) -> Any:
    try:
        if fmt == "json":
            return json.loads(text)
        if fmt != "yaml":
            raise WorkflowSpecError(f"{source}: unknown spec format {fmt!r} (yaml or json)", reason="syntax")
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except WorkflowSpecError:
        raise
    except LimitExceeded as exc:
        raise WorkflowSpecError(f"{source}: {exc}", reason=exc.reason) from None
    except json.JSONDecodeError as exc:
        raise WorkflowSpecError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}", reason="syntax") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowSpecError(f"{where}: invalid YAML: {str(problem)[:300]}", reason="syntax") from None
    except RecursionError:
        # json's C scanner and PyYAML's composer recurse per level; _BoundedLoader stops YAML
        # far earlier, this is the backstop.
        raise WorkflowSpecError(f"{source}: workflow spec nests too deep to parse", reason="too_deep") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # Values the YAML constructors refuse (a timestamp out of range, an unhashable key...).
        raise WorkflowSpecError(f"{source}: invalid {fmt.upper()}: {str(exc)[:300]}", reason="syntax") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nesting past the depth limit or using too many aliases.

    PyYAML composes nodes recursively, so depth is checked while composing, before it recurses;
    aliases are counted so a billion-laughs document cannot expand into millions of nodes.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        limits = current_limits()
        self._max_depth = limits.max_depth
        self._depth = 0
        self._aliases_left = 1000

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases_left -= 1
            if self._aliases_left < 0:
                raise LimitExceeded("workflow spec uses more than 1000 YAML aliases", reason="too_large")
        self._depth += 1
        try:
            if self._depth > self._max_depth + 1:
                raise LimitExceeded(f"workflow spec nests deeper than {self._max_depth} levels", reason="too_deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
