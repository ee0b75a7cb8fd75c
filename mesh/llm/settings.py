"""Reasoner settings, read from the environment.

``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` keep the names the Anthropic tooling uses;
everything else is ``MESH_LLM_*``.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.llm.pricing import PriceTable

__all__ = ["DEFAULT_MODEL", "ReasonerSettings"]

DEFAULT_MODEL = "claude-sonnet-4-6"
"""Model used when ``MESH_LLM_MODEL`` is not set."""


class ReasonerSettings(BaseSettings):
    """Which reasoner to build and how it talks to its provider."""

    model_config = SettingsConfigDict(env_prefix="MESH_LLM_", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "MESH_LLM_API_KEY")
    )
    """Anthropic API key (``ANTHROPIC_API_KEY``); without one the rule reasoner is used."""

    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "MESH_LLM_BASE_URL")
    )
    """API base URL (``ANTHROPIC_BASE_URL``); ``None`` means the SDK's default."""

    model: str = DEFAULT_MODEL
    """Model name (``MESH_LLM_MODEL``)."""

    timeout_s: float = Field(default=60.0, gt=0)
    """Per-request timeout in seconds, including reading the answer (``MESH_LLM_TIMEOUT_S``)."""

    sdk_max_retries: int = Field(default=2, ge=0)
    """Retries the SDK itself makes on 408/409/429/5xx/529 and connection errors."""

    send_temperature: bool = False
    """Send the request's temperature (``MESH_LLM_SEND_TEMPERATURE``); API version 2026-10-21 rejects it."""

    retry_attempts: int = Field(default=3, ge=1)
    """Attempts our policy makes on top of the SDK's, each after the SDK gave up."""

    retry_base_delay_s: float = Field(default=1.0, ge=0)
    """First delay of our retry policy, in seconds."""

    retry_max_delay_s: float = Field(default=20.0, ge=0)
    """Largest delay of our retry policy, in seconds."""

    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Price overrides (``MESH_LLM_PRICES``, JSON ``{"model": [usd_per_mtok_in, usd_per_mtok_out]}``),
    merged over ``mesh.llm.DEFAULT_PRICES``; a model is matched by its longest prefix, else ``"*"``."""

    rpm: int = Field(default=0, ge=0)
    """Requests per rate window for all agents of the mesh together (``MESH_LLM_RPM``; 0: no limit).
    Needs Redis (the shared limiter); see ``mesh.llm.RedisRateLimiter``."""

    tpm: int = Field(default=0, ge=0)
    """Input plus output tokens per rate window for all agents together (``MESH_LLM_TPM``; 0: no limit)."""

    rate_window_s: float = Field(default=60.0, gt=0)
    """Length of the rate window in seconds (``MESH_LLM_RATE_WINDOW_S``; 60: per minute)."""

    def price_table(self) -> PriceTable:
        """The price table: defaults with ``prices`` on top."""
        return PriceTable.with_overrides(self.prices)

    tool_prefill: str | None = None
    """Assistant prefill sent after a decision prompt (``MESH_LLM_TOOL_PREFILL``), e.g.
    ``"<tool_call>\n"`` for a small local Qwen model behind llama-server; unset for Claude."""

    max_decision_tokens: int = Field(default=0, ge=0)
    """Cap on the output tokens of a decision (``MESH_LLM_MAX_DECISION_TOKENS``; 0: no cap). A
    small local model behind llama-server writes one tool call after another until
    ``max_tokens`` (the server's tool grammar allows several; the first is taken), so its
    decisions cost the cap, not the runtime's 1024 (``mesh dev llm`` sets 96)."""
