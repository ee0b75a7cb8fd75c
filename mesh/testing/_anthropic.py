"""A local, scriptable stand-in for the Anthropic Messages API, spoken to by the real SDK.

It serves ``POST /v1/messages`` on localhost with the JSON shapes the ``anthropic`` SDK parses
(``message`` with ``text``/``tool_use`` blocks and ``usage``; ``{"type": "error", ...}`` bodies
with 401/429/500/529 and ``retry-after`` headers; 400 for sampling parameters, which the
API version the SDK speaks rejects, unless ``reject_sampling_params=False``). Tests queue replies with ``script()``; when
the queue is empty a responder callable answers. Every request body is recorded (API-key
headers are not), so tests can check temperature, tools and system prompt::

    with FakeAnthropicServer() as srv:
        srv.script(FakeReply.overloaded(), FakeReply.tool_use("fetch", {"id": 1}))
        reasoner = AnthropicReasoner(api_key="test", base_url=srv.base_url)
        ...
        assert len(srv.requests) == 2

As a process (for demos and workflow tests that run agents as separate processes)::

    python -m mesh.testing.fake_anthropic --port 8765 [--mode first-tool|needle] [--seed 0]

prints ``fake-anthropic listening on http://127.0.0.1:8765`` and serves until SIGINT/SIGTERM.

``first-tool`` mode calls the first offered tool with parameters made up from its schema, and
answers free-text requests with the leading sentences of the prompt. ``needle`` mode answers
"What is the X?" questions by looking for "the X is V" in the prompt, with a deliberately
position-sensitive, deterministic attention model (see ``NeedleResponder``). Its recall curve
only exercises the evaluation machinery; real numbers come from a real model (``mesh dev llm``).

``flavor="llama-server"`` (``--flavor llama-server``) answers as llama.cpp's ``llama-server``
(build 11434, ``tools/server``) does at ``/v1/messages``, measured against the real server of
``mesh dev llm``: it ignores the API key (none configured) and accepts ``temperature``; the
message id is ``chatcmpl-<32 chars>``, tool-use ids are 32 bare characters, ``model`` is the
server's alias whatever the request asked for; ``usage`` splits the prompt into
``cache_read_input_tokens`` (the prefix shared with the previous request, kept in the one slot's
KV cache) and ``input_tokens`` (the rest, at least one); tool arguments that are not valid JSON
become ``{}``; output its chat-format parser rejects is a 500 (``FakeReply.unparseable_output``,
read from ``common_chat_peg_parse``; not seen here: a call cut off by ``max_tokens`` came back as
a 200 with ``stop_reason: max_tokens`` and no tool use); a body without ``messages`` is a 500
(not a 400); error bodies are
``{"error": {"code", "message", "type"}}`` without ``request-id``
or ``retry-after`` headers (``server_error`` 500, ``unavailable_error`` 503 while the model
loads, see ``loading``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import signal
import string
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from mesh.llm._text import example_object, extractive_summary

__all__ = [
    "FakeAnthropicServer",
    "FakeReply",
    "NeedleResponder",
    "RecordedRequest",
    "Responder",
    "first_tool_responder",
    "main",
]

log = logging.getLogger(__name__)

_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
_CHARS_PER_TOKEN = 4

Flavor = Literal["anthropic", "llama-server"]
"""Whose wire behaviour the fake copies."""

_LLAMA_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
"""``error.type`` llama-server sends per status (``format_error_response``)."""
_ALNUM = string.digits + string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class FakeReply:
    """One answer of the fake server: a message (status 200) or an API error."""

    status: int = 200
    """HTTP status."""

    content: tuple[Mapping[str, Any], ...] = ()
    """Content blocks of a successful message (``text`` / ``tool_use``; ids are filled in)."""

    stop_reason: str = "end_turn"
    """``stop_reason`` of a successful message."""

    error_type: str = "api_error"
    """``error.type`` of an error body."""

    error_message: str = ""
    """``error.message`` of an error body."""

    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers (``retry-after``, ``retry-after-ms``, ...)."""

    delay_s: float = 0.0
    """Seconds to wait before answering; longer than the client timeout makes it time out."""

    usage: tuple[int, int] | None = None
    """``(input_tokens, output_tokens)`` to report; estimated from sizes when ``None``."""

    @classmethod
    def text(cls, text: str, **overrides: Any) -> FakeReply:
        """A plain text answer (a decision request answered this way has no tool use)."""
        return cls(content=({"type": "text", "text": text},), **overrides)

    @classmethod
    def tool_use(
        cls, name: str, tool_input: Any, *, text: str | None = None, **overrides: Any
    ) -> FakeReply:
        """A tool call, optionally preceded by text; ``tool_input`` is sent as given (any JSON)."""
        blocks: list[Mapping[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks.append({"type": "tool_use", "name": name, "input": tool_input})
        return cls(content=tuple(blocks), stop_reason="tool_use", **overrides)

    @classmethod
    def error(
        cls,
        status: int,
        error_type: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        **overrides: Any,
    ) -> FakeReply:
        """An API error body; ``retry_after_s`` sets ``retry-after`` and ``retry-after-ms``."""
        headers = dict(overrides.pop("headers", {}))
        if retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(retry_after_s)))
            # The SDK prefers the precise header, which keeps test retries fast.
            headers["retry-after-ms"] = str(int(retry_after_s * 1000))
        return cls(
            status=status,
            error_type=error_type,
            error_message=message,
            headers=headers,
            **overrides,
        )

    @classmethod
    def overloaded(cls, *, retry_after_s: float = 0.005) -> FakeReply:
        """529 ``overloaded_error``."""
        return cls.error(529, "overloaded_error", "Overloaded", retry_after_s=retry_after_s)

    @classmethod
    def rate_limited(cls, *, retry_after_s: float = 0.005) -> FakeReply:
        """429 ``rate_limit_error`` with ``retry-after``."""
        return cls.error(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
            retry_after_s=retry_after_s,
        )

    @classmethod
    def server_error(cls, *, retry_after_s: float = 0.005) -> FakeReply:
        """500 ``api_error``."""
        return cls.error(500, "api_error", "Internal server error", retry_after_s=retry_after_s)

    @classmethod
    def unparseable_output(cls, chat_format: str = "peg-native") -> FakeReply:
        """llama-server's 500 when its chat-format parser rejects the model's output."""
        return cls.error(
            500,
            "server_error",
            f"The model produced output that does not match the expected {chat_format} format",
        )

    @classmethod
    def loading(cls) -> FakeReply:
        """503 ``unavailable_error`` "Loading model", as llama-server answers before it is ready."""
        return cls.error(503, "unavailable_error", "Loading model")

    @classmethod
    def unauthorized(cls) -> FakeReply:
        """401 ``authentication_error``."""
        return cls.error(401, "authentication_error", "invalid x-api-key")

    def delayed(self, delay_s: float) -> FakeReply:
        """The same reply, sent after ``delay_s`` seconds."""
        return dataclasses.replace(self, delay_s=delay_s)


Responder = Callable[[dict[str, Any]], FakeReply]
"""Builds a reply from a request body; called when no scripted reply is queued."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received."""

    method: str
    """HTTP method."""

    path: str
    """Request path, e.g. ``/v1/messages``."""

    headers: Mapping[str, str]
    """Request headers, lower-cased, without ``x-api-key`` and ``authorization``."""

    body: dict[str, Any]
    """Parsed JSON body (``{}`` when it was not JSON)."""


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", "")) for block in content if isinstance(block, Mapping)
        )
    return ""


def _system_text(body: Mapping[str, Any]) -> str:
    return _content_text(body.get("system") or "")


def first_tool_responder(body: dict[str, Any]) -> FakeReply:
    """Call the first offered tool with schema-derived parameters; else echo leading sentences."""
    tools = body.get("tools") or []
    if tools:
        tool = tools[0]
        return FakeReply.tool_use(
            tool["name"],
            example_object(tool.get("input_schema") or {}),
            text=f"Calling {tool['name']}.",
        )
    max_chars = int(body.get("max_tokens", 256)) * _CHARS_PER_TOKEN
    return FakeReply.text(extractive_summary(_last_user_text(body), max_chars=max_chars))


_SPAN = re.compile(r"[^.!?\n]+[.!?]*")
_QUESTION = re.compile(r"What is (?:the )?([^?\n]+?)\s*\?", re.IGNORECASE)


class NeedleResponder:
    """Answers "What is the X?" by finding "the X is V" in the part of the prompt it "sees".

    The attention model is deterministic and deliberately U-shaped, after "Lost in the
    Middle": the prompt is the system prompt plus the user messages, split into sentences;
    a sentence starting in the first ``head_fraction`` or the last ``tail_fraction`` of the
    characters is always seen; a sentence in between is seen with probability
    ``middle_recall``, drawn from a generator seeded with ``seed`` and the prompt's SHA-256
    (the same prompt always gets the same answer). Requests with tools get
    ``first_tool_responder``'s answer.
    """

    def __init__(
        self,
        *,
        head_fraction: float = 0.30,
        tail_fraction: float = 0.20,
        middle_recall: float = 0.25,
        seed: int = 0,
    ) -> None:
        if not (0 <= head_fraction <= 1 and 0 <= tail_fraction <= 1 and 0 <= middle_recall <= 1):
            raise ValueError("fractions and middle_recall must be within [0, 1]")
        self.head_fraction = head_fraction
        self.tail_fraction = tail_fraction
        self.middle_recall = middle_recall
        self.seed = seed

    def visible_sentences(self, text: str) -> list[str]:
        """The sentences of ``text`` this responder sees, in order."""
        if not text:
            return []
        digest = hashlib.sha256(text.encode()).hexdigest()
        rng = random.Random(f"{self.seed}:{digest}")
        seen: list[str] = []
        for span in _SPAN.finditer(text):
            sentence = span.group().strip()
            if not sentence:
                continue
            where = span.start() / len(text)
            in_edges = where < self.head_fraction or where >= 1.0 - self.tail_fraction
            if in_edges or rng.random() < self.middle_recall:
                seen.append(sentence)
        return seen

    def answer(self, text: str) -> str:
        """The answer to the last visible "What is the X?" question of ``text``."""
        visible = self.visible_sentences(text)
        questions = [m for s in visible if (m := _QUESTION.search(s))]
        if not questions:
            return "I do not see a question."
        subject = questions[-1].group(1).strip()
        fact = re.compile(rf"\bthe {re.escape(subject)} is ([^\s.,;]+)", re.IGNORECASE)
        for sentence in reversed(visible):  # the newest statement of a fact wins
            if _QUESTION.search(sentence):
                continue
            if match := fact.search(sentence):
                return f"The {subject} is {match.group(1)}."
        return f"I cannot find the {subject} in the context."

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        """Answer one request body."""
        if body.get("tools"):
            return first_tool_responder(body)
        return FakeReply.text(self.answer(f"{_system_text(body)}\n\n{_last_user_text(body)}"))


def _api_key_of(headers: Mapping[str, str]) -> str | None:
    """The key from ``x-api-key`` or ``Authorization: Bearer`` (SDK 2.x sends the latter).

    ``headers`` has lower-cased names.
    """
    if key := headers.get("x-api-key"):
        return key
    auth = headers.get("authorization") or ""
    return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply: FakeReply | None = None
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError:
            body = {}
            reply = FakeReply.error(400, "invalid_request_error", "body must be a JSON object")
        all_headers = {k.lower(): v for k, v in self.headers.items()}
        kept = {k: v for k, v in all_headers.items() if k not in _SECRET_HEADERS}
        fake._record(RecordedRequest("POST", self.path, kept, body))
        if reply is None:
            reply = fake._reply_for(self.path, _api_key_of(all_headers), body)
        if reply.delay_s > 0 and fake._stopping.wait(reply.delay_s):
            return  # shutting down: drop the request as a dead server would
        self._send(reply, body, fake._next_id())

    def _send(self, reply: FakeReply, body: Mapping[str, Any], number: int) -> None:
        fake = self.server.fake
        llama = fake.flavor == "llama-server"
        request_id = f"req_fake_{number:06d}"
        headers = dict(reply.headers)
        if reply.status == 200:
            content = [fake._block(block, number, i) for i, block in enumerate(reply.content)]
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{fake._random_id()}" if llama else f"msg_fake_{number:06d}",
                "type": "message",
                "role": "assistant",
                "model": fake.served_model if llama else body.get("model", "fake-model"),
                "content": content,
                "stop_reason": reply.stop_reason,
                "stop_sequence": None,
                "usage": fake._usage(reply, body, content),
            }
        elif llama:
            error_type = _LLAMA_ERROR_TYPES.get(reply.status, reply.error_type)
            payload = {
                "error": {"code": reply.status, "message": reply.error_message, "type": error_type}
            }
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("retry-after")}
        else:
            payload = {
                "type": "error",
                "error": {"type": reply.error_type, "message": reply.error_message},
                "request_id": request_id,
            }
        data = json.dumps(payload).encode()
        try:
            self.send_response(reply.status)
            self.send_header(
                "content-type", "application/json; charset=utf-8" if llama else "application/json"
            )
            self.send_header("content-length", str(len(data)))
            if not llama:
                self.send_header("request-id", request_id)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-anthropic: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a delay must not keep the process alive
    fake: FakeAnthropicServer


class FakeAnthropicServer:
    """The Messages API on ``127.0.0.1``, answering from a script queue, then a responder."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        reject_sampling_params: bool | None = None,
        flavor: Flavor = "anthropic",
        served_model: str = "local-model",
    ) -> None:
        self.responder: Responder = responder if responder is not None else first_tool_responder
        self.flavor: Flavor = flavor
        """Whose wire behaviour to copy: the Anthropic API or llama-server (module docstring)."""
        self.served_model = served_model
        """``model`` of every llama-server answer (its ``--alias``)."""
        self.loading = False
        """llama-server flavor: answer 503 "Loading model" to every request while True."""
        if reject_sampling_params is None:
            reject_sampling_params = flavor == "anthropic"
        self._host = host
        self._port = port
        self._api_key = api_key
        self.reject_sampling_params = reject_sampling_params
        """Answer 400 to ``temperature``/``top_p``/``top_k``, as API version 2026-10-21 does."""
        self._lock = threading.Lock()
        self._script: deque[FakeReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._count = 0
        self._stopping = threading.Event()
        self._cached_prompt = ""  # llama-server flavor: what the slot's KV cache holds
        self._rng = random.Random()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` to pass as the SDK's ``base_url``."""
        if self._server is None:
            raise RuntimeError("FakeAnthropicServer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def script(self, *replies: FakeReply) -> None:
        """Queue replies; each request takes the oldest one, then the responder answers."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> FakeAnthropicServer:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeAnthropicServer already started")
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropicServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def _reply_for(self, path: str, api_key: str | None, body: dict[str, Any]) -> FakeReply:
        if self.flavor == "llama-server" and self.loading:
            return FakeReply.loading()
        if self._api_key is not None and api_key != self._api_key:
            if self.flavor == "llama-server":
                return FakeReply.error(401, "authentication_error", "Invalid API Key")
            return FakeReply.unauthorized()
        if path.split("?")[0] != "/v1/messages":
            message = "File Not Found" if self.flavor == "llama-server" else f"no route {path}"
            return FakeReply.error(404, "not_found_error", message)
        if self.flavor == "llama-server" and "messages" not in body:
            # llama-server throws a plain runtime_error here, which its handler turns into a 500.
            return FakeReply.error(500, "server_error", "'messages' is required")
        if body.get("stream"):
            return FakeReply.error(400, "invalid_request_error", "streaming is not supported")
        if self.reject_sampling_params:
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    return FakeReply.error(
                        400, "invalid_request_error", f"{name}: Extra inputs are not permitted"
                    )
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        try:
            return self.responder(body)
        except Exception as err:  # a broken responder should look like a server bug, not hang
            log.exception("fake-anthropic responder failed")
            return FakeReply.error(500, "api_error", f"responder failed: {type(err).__name__}")

    def _random_id(self) -> str:
        with self._lock:
            return "".join(self._rng.choice(_ALNUM) for _ in range(32))

    def _block(self, block: Mapping[str, Any], number: int, index: int) -> dict[str, Any]:
        out = dict(block)
        if out.get("type") != "tool_use":
            return out
        if self.flavor == "llama-server":
            out.setdefault("id", self._random_id())
            # llama-server parses the generated arguments; text that is not JSON becomes {}.
            tool_input = out.get("input")
            if isinstance(tool_input, str):
                try:
                    out["input"] = json.loads(tool_input)
                except ValueError:
                    out["input"] = {}
        else:
            out.setdefault("id", f"toolu_fake_{number:06d}_{index}")
        return out

    def _usage(
        self, reply: FakeReply, body: Mapping[str, Any], content: list[Any]
    ) -> dict[str, int]:
        sent = json.dumps([body.get("system"), body.get("tools"), body.get("messages")])
        if reply.usage is not None:
            input_tokens, output_tokens = reply.usage
        else:
            input_tokens = max(1, len(sent) // _CHARS_PER_TOKEN)
            output_tokens = max(1, len(json.dumps(content)) // _CHARS_PER_TOKEN)
        if self.flavor != "llama-server":
            return {"input_tokens": input_tokens, "output_tokens": output_tokens}
        with self._lock:
            shared = len(os.path.commonprefix([self._cached_prompt, sent]))  # noqa: RUF071 (characters, not paths)
            self._cached_prompt = sent
        # The last prompt token is always evaluated again, so at least one token is "new".
        cached = max(0, min(shared // _CHARS_PER_TOKEN, input_tokens - 1))
        return {
            "cache_read_input_tokens": cached,
            "input_tokens": input_tokens - cached,
            "output_tokens": output_tokens,
        }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake server as a process until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh.testing.fake_anthropic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--mode", choices=("first-tool", "needle"), default="first-tool")
    parser.add_argument("--seed", type=int, default=0, help="seed of the needle attention model")
    parser.add_argument("--api-key", default=None, help="require this API key (401 otherwise)")
    parser.add_argument(
        "--flavor",
        choices=("anthropic", "llama-server"),
        default="anthropic",
        help="answer as the Anthropic API or as llama-server's /v1/messages does",
    )
    parser.add_argument(
        "--accept-sampling-params",
        action="store_true",
        help="accept temperature/top_p/top_k instead of answering 400",
    )
    args = parser.parse_args(argv)
    responder: Responder = (
        NeedleResponder(seed=args.seed) if args.mode == "needle" else first_tool_responder
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    fake = FakeAnthropicServer(
        responder,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        reject_sampling_params=False if args.accept_sampling_params else None,
        flavor=args.flavor,
    )
    with fake as srv:
        print(f"fake-anthropic listening on {srv.base_url} (mode {args.mode})", flush=True)
        done.wait()
    return 0
