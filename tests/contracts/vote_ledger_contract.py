"""The VoteLedger contract (subclass and provide ``ledger``)."""

from __future__ import annotations

import asyncio

from mesh.store import Endorsement, VoteLedger


class VoteLedgerContract:
    """Behaviour every VoteLedger must show: atomic, first writer wins."""

    async def test_first_value_per_slot_and_epoch_wins(self, ledger: VoteLedger) -> None:
        assert await ledger.endorse("wf", "slot", 1, "h1") == Endorsement("ok", "h1", 1)
        assert await ledger.endorse("wf", "slot", 1, "h1") == Endorsement(
            "ok", "h1", 1
        )  # asking again
        assert await ledger.endorse("wf", "slot", 1, "h2") == Endorsement("taken", "h1", 1)

    async def test_a_later_epoch_fences_earlier_ones(self, ledger: VoteLedger) -> None:
        assert (await ledger.endorse("wf", "slot", 5, "h5")).status == "ok"
        assert await ledger.endorse("wf", "slot", 3, "h3") == Endorsement("stale", "", 5)
        assert await ledger.endorse("wf", "slot", 6, "h6") == Endorsement("ok", "h6", 6)

    async def test_slots_and_workflows_are_independent(self, ledger: VoteLedger) -> None:
        assert (await ledger.endorse("wf-a", "slot", 2, "x")).status == "ok"
        assert (await ledger.endorse("wf-a", "other", 1, "y")).status == "ok"
        assert (await ledger.endorse("wf-b", "slot", 1, "z")).status == "ok"

    async def test_ballot_recorded_once(self, ledger: VoteLedger) -> None:
        assert await ledger.recorded_ballot("wf", "p1") is None
        assert await ledger.record_ballot("wf", "p1", "accept", "checked") == ("accept", "checked")
        assert await ledger.record_ballot("wf", "p1", "reject", "changed my mind") == (
            "accept",
            "checked",
        )
        assert await ledger.recorded_ballot("wf", "p1") == ("accept", "checked")
        assert await ledger.recorded_ballot("wf-other", "p1") is None

    async def test_racing_endorsements_record_one_value(self, ledger: VoteLedger) -> None:
        answers = await asyncio.gather(
            *(ledger.endorse("wf", "slot", 1, f"h{i}") for i in range(10))
        )
        winners = {a.value_hash for a in answers}
        assert len(winners) == 1
        assert sum(a.status == "ok" for a in answers) == 1
