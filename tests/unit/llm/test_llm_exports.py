"""mesh.llm's errors sit in the mesh hierarchy (its names are pinned in tests/unit/test_public_surface.py)."""

from __future__ import annotations

import mesh.llm


def test_errors_sit_in_the_mesh_hierarchy() -> None:
    from mesh.errors import MeshError, PermanentError, TransientError, UsageError

    assert issubclass(mesh.llm.ReasonerUnavailable, TransientError)
    assert issubclass(mesh.llm.DecisionFormatError, PermanentError)
    assert issubclass(mesh.llm.ReasonerRequestError, PermanentError)
    assert issubclass(mesh.llm.ReasonerAuthError, UsageError)
    assert issubclass(mesh.llm.ReasonerError, MeshError)
