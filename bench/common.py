"""Helpers shared by the service benchmarks: percentiles, rich tables, targets, service bring-up.

The pure helpers (``percentile``, ``Stats``, ``ratio``, ``Target``, ``render_targets``) need no
services and are unit-tested; ``services`` brings up (or finds) Kafka and Redis.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

__all__ = [
    "Services",
    "Stats",
    "Target",
    "broker_config",
    "command_line",
    "console",
    "delete_keys",
    "delete_topics",
    "exit_code",
    "machine_line",
    "percentile",
    "print_header",
    "print_table",
    "print_targets",
    "ratio",
    "render_targets",
    "run_id",
    "services",
]

# Piped output (CI logs, files) gets a width wide enough that tables do not wrap.
console = Console(width=None if sys.stdout.isatty() else 170, highlight=False)


# -- statistics ----------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of a list of samples (same unit as the samples)."""

    n: int
    """Number of samples."""
    mean: float
    """Arithmetic mean."""
    p50: float
    """Median."""
    p95: float
    """95th percentile."""
    p99: float
    """99th percentile."""
    min: float
    """Smallest sample."""
    max: float
    """Largest sample."""

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Summarize ``samples`` (at least one)."""
        return cls(
            n=len(samples),
            mean=sum(samples) / len(samples) if samples else math.nan,
            p50=percentile(samples, 50),
            p95=percentile(samples, 95),
            p99=percentile(samples, 99),
            min=min(samples),
            max=max(samples),
        )


def ratio(baseline: float, ours: float) -> float:
    """How many times ``ours`` beats ``baseline`` for a lower-is-better figure (``baseline / ours``)."""
    if ours <= 0:
        return math.inf
    return baseline / ours


# -- targets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One pass/fail target of a benchmark."""

    name: str
    """What is promised, e.g. ``ours p95 <= 2 ms at 20 KB``."""
    ok: bool
    """Whether the run met it."""
    value: str
    """What was measured, with its unit."""


def render_targets(targets: Iterable[Target]) -> list[str]:
    """One ``PASS``/``FAIL`` line per target."""
    return [f"{'PASS' if t.ok else 'FAIL'}  {t.name}: {t.value}" for t in targets]


def exit_code(targets: Sequence[Target], *, check: bool) -> int:
    """1 when ``check`` is set and a target was missed, else 0."""
    return 1 if check and not all(t.ok for t in targets) else 0


def print_targets(targets: Sequence[Target]) -> None:
    """Print the targets section."""
    console.print("\n[bold]targets[/bold]")
    for line in render_targets(targets):
        console.print(line, style="green" if line.startswith("PASS") else "red")


# -- output --------------------------------------------------------------------------------------


def machine_line() -> str:
    """Cores and load average: timings inflate with load on a shared box, so every header says it."""
    try:
        one, five, fifteen = os.getloadavg()
        load = f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"
    except OSError:
        load = "load average unknown"
    return f"{os.cpu_count()} cores, {load}"


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The exact command that reproduces this run."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", module, *map(shlex.quote, args)])


def print_header(title: str, module: str, argv: Sequence[str] | None, *lines: str) -> None:
    """Title, command and machine line, then any extra context lines."""
    console.rule(f"[bold]{title}[/bold]")
    console.print(f"command: {command_line(module, argv)}")
    console.print(f"machine: {machine_line()}")
    for line in lines:
        console.print(line)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    command: str = "",
    caption: str = "",
) -> None:
    """A rich table: text columns left-aligned, number columns right-aligned."""
    rows = [list(row) for row in rows]
    full_title = f"{title}\n[dim]{command}[/dim]" if command else title
    table = Table(title=full_title, title_justify="left")
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows if i < len(r))
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(fmt(cell) for cell in row))
    console.print(table)
    if caption:  # below the table at full width (a rich caption wraps at the table's width)
        console.print(caption, style="dim")


def fmt(value: object) -> str:
    """Numbers with a sensible number of digits; everything else as ``str``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


# -- services ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Services:
    """Where the benchmark's Kafka and Redis are."""

    kafka_bootstrap: str
    """Kafka bootstrap address."""
    redis_url: str
    """Redis URL."""
    source: str
    """``env`` (MESH_* variables) or ``mesh dev`` (local services, started if needed)."""


def services(*, need: Sequence[str] = ("redis", "kafka")) -> Services:
    """Use ``MESH_KAFKA_BOOTSTRAP`` / ``MESH_REDIS_URL`` when set, else bring up ``mesh dev`` services.

    ``DevServices.up`` is idempotent: services already running (other engineers', test sessions')
    are left alone, so a benchmark never restarts what it did not start.
    """
    kafka = os.environ.get("MESH_KAFKA_BOOTSTRAP", "")
    redis = os.environ.get("MESH_REDIS_URL", "")
    missing = [name for name, value in (("kafka", kafka), ("redis", redis)) if name in need and not value]
    if not missing:
        return Services(kafka, redis, "env")
    from mesh.dev import DevServices

    dev = DevServices()
    dev.up(services=missing)
    return Services(kafka or dev.kafka_bootstrap, redis or dev.redis_url, "mesh dev")


def run_id(name: str) -> str:
    """A unique prefix for this run's topics and keys, e.g. ``bench-bus-1a2b3c4d``."""
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (this run's); returns their names."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete every Redis key that starts with ``prefix`` (this run's); returns how many."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()


async def broker_config(bootstrap: str, names: Sequence[str]) -> dict[str, str]:
    """Effective values of broker settings (``describe_configs`` on the first broker), by name."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        broker_id = str(cluster["brokers"][0]["node_id"])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)])
        found: dict[str, str] = {}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] in names:
                        found[entry[0]] = str(entry[1])
        return found
    finally:
        await admin.close()
