"""mesh.context's errors sit in the mesh hierarchy (its names are pinned in tests/unit/test_public_surface.py)."""

import mesh.context


def test_errors_belong_to_the_mesh_hierarchy() -> None:
    from mesh.errors import ConfigError, MeshError, PermanentError

    assert issubclass(mesh.context.ContextBudgetError, PermanentError)
    assert issubclass(mesh.context.ContextError, MeshError)
    assert issubclass(mesh.context.EncodingUnavailableError, ConfigError)
    assert mesh.context.ContextBudgetError.retryable is False
