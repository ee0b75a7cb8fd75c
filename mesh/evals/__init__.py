"""Evaluations of the design's claims, run by ``mesh eval`` (``mesh/evals/cli.py``).

Tooling, not runtime: no product module of ``mesh`` imports this package (a test pins it); it
sits above ``mesh.llm``, ``mesh.context`` and ``mesh.runtime`` and drives them, with the fake
Messages API of ``mesh.testing`` when no real model is asked.

* position recall (``mesh eval position``): is a planted fact recalled wherever it sits in a long
  prompt, in a naive layout and in the priority stack;
* cognitive offloading (``mesh eval offload``): one task with parameter injection and validation
  on, then off;
* p^k retries (``mesh eval retry``): N-step workflows through the real retry layer against
  ``(1-p^k)^N``.

Each reports trials and a 95% Wilson interval (``wilson_interval``).
"""

from typing import TYPE_CHECKING

from mesh.evals._offload import (
    MODES,
    OffloadEvalOptions,
    OffloadModeResult,
    OffloadTask,
    make_task,
    run_offload_eval,
)
from mesh.evals._position import (
    LAYOUTS,
    Needle,
    PositionEvalOptions,
    PositionEvalReport,
    PositionPoint,
    build_history,
    make_needle,
    naive_prompt,
    run_position_eval,
    stack_prompt,
)
from mesh.evals._stats import wilson_interval

if TYPE_CHECKING:
    from mesh.evals._retry import RetryEvalResult, run_retry_eval

__all__ = [  # grouped by evaluation
    # position recall
    "run_position_eval",
    "PositionEvalOptions",
    "PositionEvalReport",
    "PositionPoint",
    "LAYOUTS",
    "Needle",
    "make_needle",
    "build_history",
    "naive_prompt",
    "stack_prompt",
    # cognitive offloading
    "run_offload_eval",
    "OffloadEvalOptions",
    "OffloadModeResult",
    "OffloadTask",
    "MODES",
    "make_task",
    # p^k retries
    "run_retry_eval",
    "RetryEvalResult",
    # statistics
    "wilson_interval",
]


def __getattr__(name: str) -> object:
    # The retry evaluation drives AnthropicReasoner, and the anthropic SDK takes about a second to
    # import: load it only when it is used, so `mesh` (which imports mesh.evals.cli) starts fast.
    if name in ("run_retry_eval", "RetryEvalResult"):
        from mesh.evals import _retry

        return getattr(_retry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
