"""Cost estimates of reasoner calls: a price table per model, in US dollars per million tokens.

The table is configuration, not truth: providers change prices, gateways add margins, a local
model costs nothing. ``MESH_LLM_PRICES`` (JSON, ``{"model": [input_per_mtok, output_per_mtok]}``)
is merged over ``DEFAULT_PRICES``. A model is priced by its longest matching prefix, so dated
names (``claude-sonnet-4-5-20250929``) find their family; a model nothing matches is priced by the
``"*"`` entry (Sonnet's price by default, so an unknown model is never free by accident: budgets
stay fail-closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable"]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs."""

    input_per_mtok: float
    """US dollars per million input tokens."""

    output_per_mtok: float
    """US dollars per million output tokens."""


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # Anthropic list prices, USD per million tokens (input, output).
    "claude-opus-4-5": ModelPrice(5.0, 25.0),
    "claude-opus-4-1": ModelPrice(15.0, 75.0),
    "claude-opus-4-0": ModelPrice(15.0, 75.0),
    "claude-opus-4": ModelPrice(15.0, 75.0),
    "claude-sonnet-4": ModelPrice(3.0, 15.0),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0),
    "claude-3-5-haiku": ModelPrice(0.8, 4.0),
    "claude-3-haiku": ModelPrice(0.25, 1.25),
    # No provider: the rule reasoner (its name is ``rule`` or ``rule/<role>``).
    "rule": ModelPrice(0.0, 0.0),
    "*": ModelPrice(3.0, 15.0),
}
"""Built-in prices; ``"*"`` prices any model no other entry matches."""


@dataclass(frozen=True)
class PriceTable:
    """Prices per model (longest prefix match, else ``"*"``), and the cost of a call."""

    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    """Model name (or prefix) -> price."""

    @classmethod
    def with_overrides(
        cls, overrides: Mapping[str, tuple[float, float] | list[float]] | None
    ) -> PriceTable:
        """``DEFAULT_PRICES`` with ``{"model": (input_per_mtok, output_per_mtok)}`` entries on top."""
        prices = dict(DEFAULT_PRICES)
        for model, pair in (overrides or {}).items():
            if len(pair) != 2 or min(pair) < 0:
                raise ValueError(
                    f"price of {model!r} must be [input_per_mtok, output_per_mtok] >= 0, got {pair!r}"
                )
            prices[model] = ModelPrice(float(pair[0]), float(pair[1]))
        return cls(prices)

    def price_of(self, model: str) -> ModelPrice:
        """The price of ``model``: exact name, else the longest matching prefix, else ``"*"``."""
        name = model.removeprefix("anthropic/")
        best = ""
        for key in self.prices:
            if key != "*" and name.startswith(key) and len(key) > len(best):
                best = key
        if best:
            return self.prices[best]
        return self.prices.get("*", ModelPrice(0.0, 0.0))

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Estimated cost of a call, US dollars."""
        price = self.price_of(model)
        return (
            input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
        ) / 1_000_000
