"""The DeadLetterClaims contract (subclass and provide ``claims``)."""

from __future__ import annotations

import asyncio
from collections import Counter

from mesh.store import DeadLetterClaims


class DeadLetterClaimsContract:
    """Behaviour every DeadLetterClaims must show: one winner per record, first come first served."""

    async def test_the_first_claim_wins_and_every_later_one_loses(
        self, claims: DeadLetterClaims
    ) -> None:
        assert await claims.claim("t", 0, 5) is True
        assert await claims.claim("t", 0, 5) is False
        assert await claims.claim("t", 0, 5) is False

    async def test_a_record_is_its_topic_partition_and_offset(
        self, claims: DeadLetterClaims
    ) -> None:
        assert await claims.claim("t", 0, 5)
        for other in [("t", 1, 5), ("t", 0, 6), ("t.other", 0, 5), ("t", 0, 50), ("t", 10, 5)]:
            assert await claims.claim(*other) is True, other

    async def test_exactly_one_concurrent_claimer_wins_each_record(
        self, claims: DeadLetterClaims
    ) -> None:
        records = [("t", p, o) for p in range(3) for o in range(20)]
        callers = [r for r in records for _ in range(8)]
        results = await asyncio.gather(*(claims.claim(*r) for r in callers))
        wins = Counter(r for r, won in zip(callers, results, strict=True) if won)
        assert wins == Counter(records)
        assert not await claims.claim("t", 0, 0)
        assert await claims.claim("other-topic", 0, 0)

    async def test_it_is_a_dead_letter_claims(self, claims: DeadLetterClaims) -> None:
        assert isinstance(claims, DeadLetterClaims)
