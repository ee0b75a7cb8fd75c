"""The public surface of mesh.context is pinned: changing it is a deliberate act."""

import mesh.context


def test_all_is_pinned() -> None:
    assert sorted(mesh.context.__all__) == sorted(
        [
            "Action",
            "AssembledPrompt",
            "Attempt",
            "Block",
            "Budget",
            "CURRENT_HEADING",
            "CalibrationOptions",
            "CompressionOptions",
            "CompressionResult",
            "Compressor",
            "ContextBudgetError",
            "ContextError",
            "DEFAULT_ENCODING",
            "DecayManager",
            "DecayResult",
            "EncodingUnavailableError",
            "EvictionLedger",
            "ExtractiveSummarizer",
            "HISTORICAL_HEADING",
            "Kind",
            "LedgerEntry",
            "NoiseSignals",
            "Priority",
            "PromptBuilder",
            "REDACTED",
            "Redactor",
            "Region",
            "Summarizer",
            "TokenCounter",
            "assemble",
            "cold_key",
            "collapse_failures",
            "default_counter",
            "noise_score",
            "noise_signals",
            "redact",
            "sanitize_error",
        ]
    )


def test_every_name_resolves_and_is_documented() -> None:
    for name in mesh.context.__all__:
        obj = getattr(mesh.context, name)
        if callable(obj) and not isinstance(obj, str):
            assert obj.__doc__, f"{name} has no docstring"


def test_errors_belong_to_the_mesh_hierarchy() -> None:
    from mesh.errors import ConfigError, MeshError, PermanentError

    assert issubclass(mesh.context.ContextBudgetError, PermanentError)
    assert issubclass(mesh.context.ContextError, MeshError)
    assert issubclass(mesh.context.EncodingUnavailableError, ConfigError)
    assert mesh.context.ContextBudgetError.retryable is False
