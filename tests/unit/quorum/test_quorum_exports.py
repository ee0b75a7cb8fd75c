"""The public surface of mesh.quorum, pinned: changing it must be deliberate."""

from __future__ import annotations

import mesh.quorum as package


def test_quorum_public_names_are_pinned():
    assert sorted(package.__all__) == [
        "BallotOutcome",
        "BallotSigner",
        "BookLimits",
        "BookResult",
        "Checker",
        "CheckerRegistry",
        "DEFAULT_BALLOT_TTL_MS",
        "Decision",
        "Judge",
        "Outcome",
        "QuorumAgent",
        "QuorumBook",
        "Reputation",
        "ReputationOptions",
        "Tally",
        "Validator",
        "make_proposal",
        "max_faulty",
        "quorum_size",
        "resend_forever",
        "resend_pending",
        "verify_ballot",
    ]


def test_quorum_every_exported_name_exists_and_is_documented():
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("mesh."):
            assert obj.__doc__, f"{name} has no docstring"
