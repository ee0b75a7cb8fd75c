"""The ingress process: task topic in, signed ``WorkflowSubmitted`` out, bad events dead-lettered.

Trust boundary: the task topic is not signed. Whoever may write it may start workflows, so write
access to ``<prefix>.tasks`` is the permission to guard (Kafka ACLs); the ingress is the only
reader, and from there on every envelope is signed with the ingress's own agent key.

Delivery: records are processed in order and their offset committed only once the workflow is
submitted (or the event dead-lettered or dropped as a duplicate). A crash in between re-reads the
event; the dedupe record and deterministic ids make the replay harmless:

1. ``SET <prefix>:ingress:event:<digest(source, id)> "pending <wf>" NX EX ttl`` claims the event;
2. ``WorkflowSubmitted`` is published under the workflow id (derived from source and id unless
   the event names one) with a deterministic envelope id, so a second publish folds to nothing;
3. the record becomes ``"submitted <wf>"``. A later event with the same source and id finds it
   and is dropped; one finding ``pending`` (the previous attempt died at step 2) publishes again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mesh.bus import KafkaBus
from mesh.errors import MeshError, StoreError, TransientError
from mesh.ingress._validate import (
    DEFAULT_MAX_EVENT_BYTES,
    TaskEventRejected,
    TaskRequest,
    WorkflowCatalog,
    parse_task_event,
)
from mesh.runtime.client import MeshClient
from mesh.settings import MeshSettings
from mesh.store.redis import RedisClient, RedisConnection, redis_call
from mesh.telemetry import consume_span, setup_tracing, shutdown_tracing, workflow_root_context
from protocols import DeadLetter, Envelope, Topics

__all__ = ["Ingress", "IngressOptions", "Outcome", "default_workflows_dir", "run_ingress"]

log = logging.getLogger("mesh.ingress")

Outcome = Literal["submitted", "duplicate", "dead_lettered"]

_MAX_DEAD_LETTER_RAW = 64 * 1024


def default_workflows_dir() -> Path | None:
    """``MESH_INGRESS_WORKFLOWS_DIR``, else the example specs shipped in ``agents/workflows``."""
    configured = os.environ.get("MESH_INGRESS_WORKFLOWS_DIR", "").strip()
    if configured:
        return Path(configured)
    shipped = Path(__file__).resolve().parents[2] / "agents" / "workflows"
    return shipped if shipped.is_dir() else None


@dataclass(frozen=True)
class IngressOptions:
    """Options of one ingress process."""

    ingress_id: str = ""
    """Agent id (and signing identity); defaults to ``ingress-<host>-<pid>``."""
    workflows_dir: Path | None = field(default_factory=default_workflows_dir)
    """Specs a task event may name by ``data.workflow``."""
    dedupe_ttl_s: int = 7 * 24 * 3600
    """How long an event id is remembered (seconds); a duplicate later than this runs again."""
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    """Larger events are dead-lettered as ``oversize``."""
    retry_delay_s: float = 1.0
    """Pause before retrying an event after Kafka or Redis failed (seconds)."""

    def resolved_id(self) -> str:
        """The ingress id, defaulted."""
        return self.ingress_id or f"ingress-{socket.gethostname()}-{os.getpid()}"


class Ingress:
    """Handles task events one at a time: validate, dedupe, submit or dead-letter."""

    def __init__(
        self,
        client: MeshClient,
        redis: RedisClient,
        catalog: WorkflowCatalog,
        *,
        topics: Topics,
        options: IngressOptions,
    ) -> None:
        """Submit through ``client`` (signed by its key); remember event ids in ``redis``."""
        self.client = client
        self.redis = redis
        self.catalog = catalog
        self.topics = topics
        self.options = options
        self.ingress_id = options.resolved_id()
        self.counts: dict[str, int] = {"submitted": 0, "duplicate": 0, "dead_lettered": 0}

    @property
    def group(self) -> str:
        """The ingress consumer group (members split the task topic's partitions)."""
        return f"{self.topics.prefix}.ingress"

    def _dedupe_key(self, request: TaskRequest) -> str:
        return f"{self.topics.prefix}:ingress:event:{request.dedupe_id}"

    async def handle(
        self, value: bytes | None, *, key: bytes | None = None, partition: int = 0, offset: int = 0
    ) -> Outcome:
        """Process one record of the task topic; raises only ``TransientError`` (retry it later)."""
        try:
            request = parse_task_event(value, self.catalog, max_bytes=self.options.max_event_bytes)
        except TaskEventRejected as exc:
            await self._dead_letter(value, key, partition, offset, exc)
            return "dead_lettered"
        with consume_span(
            self.topics.tasks, partition=partition, offset=offset, consumer_group=self.group,
            message_id=request.event_id, parent=workflow_root_context(request.workflow_id),
        ) as span:
            span.set_many({"mesh.workflow.id": request.workflow_id, "cloudevents.event_source": request.source,
                           "cloudevents.event_id": request.event_id})
            outcome = await self._submit_once(request)
            span.set("mesh.ingress.outcome", outcome)
        self.counts[outcome] += 1
        return outcome

    async def _submit_once(self, request: TaskRequest) -> Outcome:
        key, ttl = self._dedupe_key(request), self.options.dedupe_ttl_s
        workflow_id = request.workflow_id
        try:
            claimed = await redis_call("ingress dedupe", self.redis.set(key, f"pending {workflow_id}", nx=True, ex=ttl))
            if not claimed:
                prior = (await redis_call("ingress dedupe", self.redis.get(key)) or b"").decode(errors="replace")
                state, _, prior_wf = prior.partition(" ")
                if state == "submitted":
                    log.info("duplicate task event (source %r, id %r) of workflow %s dropped",
                             request.source, request.event_id, prior_wf)
                    return "duplicate"
                # An earlier attempt claimed it and died before publishing: publish (again).
                workflow_id = prior_wf or workflow_id
        except StoreError as exc:
            raise TransientError(f"redis: {exc}") from None
        await self.client.submit(request.spec, workflow_id=workflow_id, variables=request.variables)
        try:
            await redis_call("ingress dedupe", self.redis.set(key, f"submitted {workflow_id}", ex=ttl))
        except StoreError as exc:
            raise TransientError(f"redis: {exc}") from None
        log.info("task event (source %r, id %r) submitted workflow %s (%s)",
                 request.source, request.event_id, workflow_id, request.spec.name)
        return "submitted"

    async def _dead_letter(
        self, value: bytes | None, key: bytes | None, partition: int, offset: int, exc: TaskEventRejected
    ) -> None:
        letter = DeadLetter(
            source_topic=self.topics.tasks, partition=partition, offset=offset, reason=exc.reason,
            error=str(exc), key=key, raw=(value or b"")[:_MAX_DEAD_LETTER_RAW], consumer=self.ingress_id,
        )
        await self.client.bus.publish(
            self.topics.dead_letter, Envelope.of(letter, sender=self.ingress_id), key=f"{self.topics.tasks}-{partition}"
        )
        self.counts["dead_lettered"] += 1
        log.warning("task event at %s[%d]@%d dead-lettered (%s): %s",
                    self.topics.tasks, partition, offset, exc.reason, exc)

    async def run(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, committing each record once it is handled."""
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=50)
            except KafkaError as exc:
                log.warning("polling %s failed: %s; retrying", self.topics.tasks, exc)
                await asyncio.sleep(self.options.retry_delay_s)
                continue
            for tp, records in batches.items():
                for record in records:
                    if stop.is_set():
                        return
                    if not await self._handle_and_commit(consumer, tp, record):
                        # Not handled: rewind so the next poll hands it (and what follows) over again.
                        consumer.seek(tp, record.offset)
                        await asyncio.sleep(self.options.retry_delay_s)
                        break

    async def _handle_and_commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: object) -> bool:
        value, key = getattr(record, "value", None), getattr(record, "key", None)
        offset = int(getattr(record, "offset", 0))
        try:
            await self.handle(value, key=key, partition=tp.partition, offset=offset)
        except TransientError as exc:
            log.warning("task event at %s[%d]@%d not handled yet: %s", tp.topic, tp.partition, offset, exc)
            return False
        except MeshError as exc:
            log.warning("task event at %s[%d]@%d not handled yet: %s", tp.topic, tp.partition, offset, exc)
            return False
        try:
            await consumer.commit({tp: offset + 1})
        except KafkaError as exc:  # the next owner re-reads it; dedupe makes that harmless
            log.warning("commit of %s[%d]@%d failed: %s", tp.topic, tp.partition, offset, exc)
        return True


async def run_ingress(
    options: IngressOptions,
    settings: MeshSettings | None = None,
    *,
    on_ready: Callable[[Ingress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> Ingress:
    """Run the ingress until SIGTERM/SIGINT (or ``stop``); returns it (with its counts)."""
    import signal

    settings = settings or MeshSettings()
    topics = Topics(prefix=settings.topic_prefix)
    ingress_id = options.resolved_id()
    setup_tracing("agent-mesh", agent_id=ingress_id, role="ingress")
    catalog = WorkflowCatalog.from_dir(options.workflows_dir)
    client = await MeshClient.connect(settings, client_id=ingress_id)
    redis = RedisConnection.from_settings(settings).client(socket_timeout_s=5)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ingress = Ingress(client, redis, catalog, topics=topics, options=options)
    consumer: AIOKafkaConsumer | None = None
    try:
        if isinstance(client.bus, KafkaBus):
            await client.bus.ensure_topics([topics.tasks, topics.dead_letter])
        consumer = AIOKafkaConsumer(
            topics.tasks, bootstrap_servers=settings.kafka_bootstrap, group_id=ingress.group,
            client_id=ingress_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(options.max_event_bytes + 1024, 1_048_576),
        )
        await consumer.start()
        log.info("ingress %s reading %s (group %s); workflows: %s", ingress_id, topics.tasks, ingress.group,
                 ", ".join(catalog.names()) or "none (inline specs only)")
        if on_ready is not None:
            on_ready(ingress)
        await ingress.run(consumer, stop)
    finally:
        if consumer is not None:
            await consumer.stop()
        await redis.aclose()
        await client.aclose()
        shutdown_tracing()
        log.info("ingress %s stopped: %s", ingress_id, ingress.counts)
    return ingress
