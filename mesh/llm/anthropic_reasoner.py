"""Reasoner backed by the Anthropic Messages API through the official ``anthropic`` SDK.

Decisions use tool use: every allowed action becomes one tool and ``tool_choice`` is
``{"type": "any"}``, so the model must call exactly one of them; the first ``tool_use`` block
is the decision. The SDK retries 408/409/429/5xx/529 and connection errors itself
(``sdk_max_retries``, honouring ``retry-after``); our ``RetryPolicy`` retries
``ReasonerUnavailable`` on top, after the SDK gave up, waiting at least the provider's
``retry-after``. With a ``rate_limiter`` (``mesh.llm.RedisRateLimiter``, shared by the agents of a
mesh) every attempt first takes its turn in the shared window, the provider's usage replaces the
estimate afterwards, and a ``retry-after`` on 429/529 holds every agent of the mesh, not just
this one; give it ``sdk_max_retries=0`` so that no attempt bypasses it.

Temperature: the SDK (2.x) speaks API version 2026-10-21, which removed the sampling
parameters (``temperature``, ``top_p``, ``top_k``) and answers 400 when one is sent; the SDK
no longer accepts them either. ``ReasonerRequest.temperature`` is therefore only sent (as an
extra body field) when ``send_temperature=True``, for gateways and older models that honour it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from typing import Any

import anthropic
from pydantic import SecretStr

from mesh.llm.backoff import ExponentialBackoff, RetryPolicy
from mesh.llm.decision import Decision, ReasonerRequest, ReasonerResult, Usage
from mesh.llm.errors import (
    DecisionFormatError,
    ReasonerAuthError,
    ReasonerError,
    ReasonerRequestError,
    ReasonerUnavailable,
)
from mesh.llm.rate_limit import RateLimiter
from mesh.llm.reasoner import UsageCallback
from mesh.llm.settings import DEFAULT_MODEL, ReasonerSettings

__all__ = ["AnthropicReasoner"]

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Client-side statuses that mean "try later"; every 5xx (incl. 529 overloaded) is retryable too."""

UNPARSEABLE_OUTPUT_MESSAGE = "The model produced output that does not match the expected"
"""Start of llama-server's HTTP 500 message when its chat-format parser rejects the model's output
(``common_chat_peg_parse`` in llama.cpp 11434; a call cut off by ``max_tokens`` is *not* such a
case, it comes back as a 200 with ``stop_reason: max_tokens``). The server is fine and the same
prompt gives the same answer: it is a format error to repair, not an outage to retry."""

_REPAIR_TEMPLATE = (
    "\n\nYour previous answer could not be used: {hint}\n"
    "Answer again by calling exactly one of the provided tools with valid parameters."
)


class AnthropicReasoner:
    """Decides and writes text with a Claude model; translates every SDK error into ``mesh.llm`` errors."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        sdk_max_retries: int = 2,
        retry: RetryPolicy | None = None,
        send_temperature: bool = False,
        on_usage: UsageCallback | None = None,
        tool_prefill: str | None = None,
        rate_limiter: RateLimiter | None = None,
        max_decision_tokens: int = 0,
    ) -> None:
        if not api_key:
            raise ReasonerAuthError("AnthropicReasoner needs an API key (ANTHROPIC_API_KEY)")
        self.model = model
        self.name = f"anthropic/{model}"
        self.base_url = base_url
        self._retry = retry if retry is not None else RetryPolicy()
        self._on_usage = on_usage
        self._limiter = rate_limiter
        self._send_temperature = send_temperature
        # Small local models (llama-server) write a tool call as text unless the answer is
        # already inside the call format; real Claude models need no prefill.
        self._tool_prefill = tool_prefill or None
        # llama-server's tool grammar lets a small model write call after call until max_tokens
        # (the first one is taken); a cap bounds that waste. 0: the request's max_tokens as is.
        self._max_decision_tokens = max_decision_tokens
        # Kept only so error messages can be scrubbed of it; SecretStr keeps it out of reprs.
        self._secret = SecretStr(api_key)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=sdk_max_retries,
            timeout=timeout_s,
        )

    @classmethod
    def from_settings(
        cls,
        settings: ReasonerSettings,
        *,
        on_usage: UsageCallback | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> AnthropicReasoner:
        """Build from ``ReasonerSettings``; raises ``ReasonerAuthError`` when no key is set.

        With a ``rate_limiter`` the SDK's own retries are moved into our policy (same total), so
        that every attempt passes the shared limiter and every ``retry-after`` is shared.
        """
        if settings.api_key is None:
            raise ReasonerAuthError("ANTHROPIC_API_KEY is not set")
        sdk_retries, attempts = settings.sdk_max_retries, settings.retry_attempts
        if rate_limiter is not None:
            sdk_retries, attempts = 0, attempts + settings.sdk_max_retries
        return cls(
            api_key=settings.api_key.get_secret_value(),
            model=settings.model,
            base_url=settings.base_url,
            timeout_s=settings.timeout_s,
            sdk_max_retries=sdk_retries,
            rate_limiter=rate_limiter,
            retry=RetryPolicy(
                max_attempts=attempts,
                backoff=ExponentialBackoff(
                    base_s=settings.retry_base_delay_s, cap_s=settings.retry_max_delay_s
                ),
            ),
            send_temperature=settings.send_temperature,
            on_usage=on_usage,
            tool_prefill=settings.tool_prefill,
            max_decision_tokens=settings.max_decision_tokens,
        )

    def __repr__(self) -> str:
        return f"AnthropicReasoner(model={self.model!r}, base_url={self.base_url!r})"

    async def decide(self, request: ReasonerRequest) -> ReasonerResult:
        """Ask the model to call one of the request's actions as a tool."""
        tools = [
            {
                "name": action.name,
                "description": action.description,
                "input_schema": _object_schema(action.params_schema),
            }
            for action in request.actions
        ]
        prompt = request.prompt
        if request.repair_hint:
            prompt += _REPAIR_TEMPLATE.format(hint=request.repair_hint)
        estimated_text = "\n\n".join([request.system, prompt, json.dumps(tools)])
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        if self._tool_prefill:
            messages.append({"role": "assistant", "content": self._tool_prefill})
        max_tokens = request.max_tokens
        if self._max_decision_tokens:
            max_tokens = min(max_tokens, self._max_decision_tokens)
        message = await self._create(
            estimated_text,
            max_tokens=max_tokens,
            temperature=request.temperature,
            system=request.system,
            messages=messages,
            tools=tools,
            tool_choice={"type": "any"},
        )
        try:
            decision, raw = _decision_from(message, request.action_names())
        except DecisionFormatError as err:
            err.usage = _usage_of(message)  # an unusable answer still cost tokens
            raise
        return ReasonerResult(
            decision=decision, usage=_usage_of(message), model=message.model, raw=raw
        )

    async def complete(
        self, system: str, prompt: str, *, max_tokens: int, temperature: float = 0.2
    ) -> str:
        """Free-text answer (summaries, LLM-judge): the concatenated text blocks."""
        message = await self._create(
            f"{system}\n\n{prompt}",
            max_tokens=max_tokens,
            temperature=temperature,
            system=system,
            messages=[{"role": "user", "content": prompt}],
        )
        return "".join(block.text for block in message.content if block.type == "text")

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()

    async def _create(self, estimated_text: str, *, temperature: float, **kwargs: Any) -> Any:
        if self._send_temperature:
            kwargs["extra_body"] = {"temperature": temperature}
        attempt = 1
        while True:
            ticket = None
            if self._limiter is not None:
                ticket = await self._limiter.acquire(len(estimated_text) // 4)
            try:
                message = await self._call_sdk(**kwargs)
            except ReasonerError as err:
                retry_after_s = getattr(err, "retry_after_s", None) or 0.0
                if self._limiter is not None and ticket is not None:
                    await self._limiter.settle(ticket, 0)  # refused: it used no tokens
                    if retry_after_s and err.status_code in (429, 529):
                        await self._limiter.hold(retry_after_s)  # every agent of the mesh waits
                if not err.retryable or attempt >= self._retry.max_attempts:
                    raise
                delay_s = max(self._retry.backoff.delay_s(attempt), retry_after_s)
                log.warning(
                    "reasoner %s unavailable (attempt %d/%d), retrying in %.3fs: %s",
                    self.name,
                    attempt,
                    self._retry.max_attempts,
                    delay_s,
                    err,
                )
                await asyncio.sleep(delay_s)
                attempt += 1
                continue
            if self._limiter is not None and ticket is not None and (usage := _usage_of(message)) is not None:
                await self._limiter.settle(ticket, usage.input_tokens + usage.output_tokens)
            self._report_usage(message, estimated_text)
            return message

    async def _call_sdk(self, **kwargs: Any) -> Any:
        try:
            return await self._client.messages.create(model=self.model, **kwargs)
        except anthropic.AnthropicError as err:
            # `from None`: the SDK error holds the request and its x-api-key header; our
            # error keeps what matters (status, type, message) and nothing secret.
            raise self._translate(err) from None

    def _translate(self, err: anthropic.AnthropicError) -> ReasonerError:
        if isinstance(err, anthropic.APIStatusError):
            status = err.status_code
            detail = self._scrub(f"{err.type or 'error'}: {err.api_message or err.message}")
            text = f"{self.name} answered HTTP {status} ({detail})"
            if status in (401, 403):
                return ReasonerAuthError(text, status_code=status)
            if status == 500 and (err.api_message or "").startswith(UNPARSEABLE_OUTPUT_MESSAGE):
                return DecisionFormatError(
                    f"the answer was not a complete tool call ({detail}); call one tool, briefly",
                    status_code=status,
                )
            if status in _RETRYABLE_STATUS or status >= 500:
                return ReasonerUnavailable(text, status_code=status, retry_after_s=_retry_after_s(err.response))
            return ReasonerRequestError(text, status_code=status)
        if isinstance(err, anthropic.APITimeoutError):
            return ReasonerUnavailable(f"{self.name} timed out")
        if isinstance(err, anthropic.APIConnectionError):
            return ReasonerUnavailable(f"{self.name} unreachable: {self._scrub(str(err))}")
        if isinstance(err, anthropic.APIResponseValidationError):
            return ReasonerUnavailable(f"{self.name} sent a malformed response")
        return ReasonerAuthError(f"{self.name} client error: {type(err).__name__}")

    def _scrub(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "[redacted]") if secret else text

    def _report_usage(self, message: Any, estimated_text: str) -> None:
        usage = _usage_of(message)
        if self._on_usage is None or usage is None:
            return
        try:
            self._on_usage(message.model, estimated_text, usage)
        except Exception:
            log.exception("on_usage callback of %s failed; ignored", self.name)


def _retry_after_s(response: Any) -> float | None:
    """The provider's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if any."""
    headers = getattr(response, "headers", None) or {}
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The API wants an object schema; an empty one means "no parameters". Never mutates input."""
    if schema.get("type") == "object":
        return schema
    return {"properties": {}, **schema, "type": "object"}


def _usage_of(message: Any) -> Usage | None:
    usage = getattr(message, "usage", None)
    if usage is None:
        return None
    cached = getattr(usage, "cache_read_input_tokens", None) or 0
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=(usage.input_tokens or 0) + cached + written,
        output_tokens=usage.output_tokens or 0,
        cached_input_tokens=cached,
    )


def _decision_from(message: Any, allowed: list[str]) -> tuple[Decision, str]:
    """First ``tool_use`` block -> Decision; anything else is a ``DecisionFormatError``."""
    texts = [block.text for block in message.content if block.type == "text"]
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    reasoning = "\n".join(texts).strip()
    if not tool_uses:
        why = "hit max_tokens before" if message.stop_reason == "max_tokens" else "answered without"
        raise DecisionFormatError(
            f"the model {why} calling a tool; call one of: {', '.join(allowed)}",
            raw=reasoning,
        )
    block = tool_uses[0]
    raw_input = block.input
    raw = "\n".join(
        [*texts, f"tool_use {block.name} {json.dumps(raw_input, default=str, sort_keys=True)}"]
    ).strip()
    if block.name not in allowed:
        raise DecisionFormatError(
            f"unknown action {block.name!r}; call one of: {', '.join(allowed)}", raw=raw
        )
    if not isinstance(raw_input, dict):
        raise DecisionFormatError(
            f"parameters of {block.name!r} must be a JSON object, got {type(raw_input).__name__}",
            raw=raw,
        )
    return Decision(action=block.name, params=dict(raw_input), reasoning=reasoning), raw
