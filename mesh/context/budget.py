"""The token budget a prompt is assembled into."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.context.tokens import TokenCounter
from mesh.errors import ConfigError

__all__ = ["Budget"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Token budget of one prompt: ``usable = window - system - output_reserve - margin``.

    All figures are in tokens as the counter measures them; ``margin`` absorbs the difference
    between that and what the provider bills (see :meth:`for_model`).
    """

    window: int
    """The model's context window."""

    system: int = 0
    """Tokens the provider adds outside the assembled text (system parameter, tool schemas,
    message framing). Leave 0 when the system prompt is itself a block."""

    output_reserve: int = 4096
    """Tokens kept free for the model's answer."""

    margin: int = 0
    """Safety margin for counting error (tiktoken undercounts some providers' tokenizers)."""

    def __post_init__(self) -> None:
        for name in ("window", "system", "output_reserve", "margin"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"Budget.{name} must be a non-negative int, got {value!r}")
        if self.usable <= 0:
            raise ConfigError(
                f"Budget leaves no room for the prompt: window {self.window} - system "
                f"{self.system} - output_reserve {self.output_reserve} - margin {self.margin} "
                f"= {self.usable}"
            )

    @property
    def usable(self) -> int:
        """Tokens the assembled text may take."""
        return self.window - self.system - self.output_reserve - self.margin

    @classmethod
    def for_model(
        cls,
        counter: TokenCounter,
        model: str,
        *,
        window: int,
        system: int = 0,
        output_reserve: int = 4096,
    ) -> Budget:
        """A budget whose margin comes from the counter's calibration for ``model``."""
        return cls(
            window=window,
            system=system,
            output_reserve=output_reserve,
            margin=counter.margin_for(model, window),
        )
