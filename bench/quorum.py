"""Memory of a quorum book under a flood of junk ballots: capped (ours) vs uncapped (the old book).

Run ``python -m bench.quorum`` (``--ballots N``, ``--quick`` for 20,000, ``--check`` to exit 1
on a missed target). The baseline is the same ``QuorumBook`` with every cap lifted, which is
what the book did before ``BookLimits``: it buffered every ballot for an unknown proposal.
Memory is what tracemalloc sees retained after the flood (the ballots' own objects included).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Sequence

from bench.common import Target, exit_code, print_header, print_table, print_targets
from mesh.quorum import BookLimits, QuorumBook
from protocols import Ballot

UNCAPPED = BookLimits(
    max_buffered=sys.maxsize, max_buffered_per_sender=sys.maxsize, max_buffered_per_proposal=sys.maxsize
)


def flood(limits: BookLimits, ballots: int, senders: int = 100) -> tuple[float, float, int, int]:
    """Send ``ballots`` junk ballots; return (retained MiB, seconds, held, dropped)."""
    validators = [f"val-{i}" for i in range(senders)]
    book = QuorumBook(set(validators), limits=limits)
    reasons = ["x" * (i * 3) for i in range(64)]
    signatures = [bytes([i]) * 64 for i in range(64)]
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    for i in range(ballots):
        book.add_ballot(
            Ballot(
                proposal_id=f"{i:032x}", voter=validators[(i * 7919) % senders], verdict="accept",
                value_hash=f"{i * 31:032x}", reason=reasons[i % 64], epoch=i % 5,
                expires_at_ms=2**62, signature=signatures[i % 64],
            )
        )
    elapsed = time.perf_counter() - started
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dropped = sum(n for k, n in book.stats.items() if k.startswith("dropped_"))
    return (current - base) / 2**20, elapsed, book.buffered, dropped


def main(argv: Sequence[str] | None = None) -> int:
    """Run the flood against both books and print them side by side."""
    parser = argparse.ArgumentParser(prog="python -m bench.quorum", description=__doc__)
    parser.add_argument("--ballots", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 ballots")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.ballots
    print_header("quorum book under a junk-ballot flood", "bench.quorum", argv, f"{n:,} ballots, 100 validators")
    ours = flood(BookLimits(), n)
    base = flood(UNCAPPED, n)
    print_table(
        "retained memory after the flood",
        ["book", "retained MiB", "seconds", "ballots held", "dropped (counted)"],
        [["ours (BookLimits defaults)", round(ours[0], 1), round(ours[1], 2), ours[2], ours[3]],
         ["baseline: caps lifted (old book)", round(base[0], 1), round(base[1], 2), base[2], base[3]]],
    )
    targets = [Target("ours retains <= 16 MiB whatever the flood size", ours[0] <= 16, f"{ours[0]:.1f} MiB")]
    print_targets(targets)
    return exit_code(targets, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
