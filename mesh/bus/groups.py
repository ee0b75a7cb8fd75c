"""Who is consuming: live members of Kafka consumer groups, through the admin API.

``mesh submit`` uses it to warn when no agent serves a role a workflow needs (each role is the
consumer group ``<prefix>.role.<role>``). aiokafka errors become ``BusError`` here.

Why not ``AIOKafkaAdminClient.describe_consumer_groups``: aiokafka 0.13 negotiates DescribeGroups
v3 with Kafka 4.x and misreads the answer (a ``Buffer underrun`` for a group that does not exist,
empty names otherwise). DescribeGroups v1 carries everything needed here (state and members) and
every Kafka from 0.10 to 4.x answers it, so this module sends v1, one request per coordinator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest_v1
from aiokafka.protocol.api import Request
from aiokafka.protocol.group import MemberAssignment

from mesh.bus.kafka import _translate
from mesh.errors import BusError

__all__ = ["GroupMember", "delete_topics_with_prefix", "describe_group_members", "group_member_counts"]


class _DescribeGroupsV1(Request[DescribeGroupsRequest_v1]):
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[DescribeGroupsRequest_v1]) -> DescribeGroupsRequest_v1:
        return request_struct_class(self._groups)


async def group_member_counts(
    bootstrap_servers: str, groups: Sequence[str], *, client_id: str = "mesh-admin", timeout_ms: int = 10000
) -> dict[str, int]:
    """Live members per consumer group (0 for a group that is empty or was never joined)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id=client_id, request_timeout_ms=timeout_ms,
    )
    counts = dict.fromkeys(groups, 0)
    try:
        await admin.start()
        by_node: dict[int, list[str]] = defaultdict(list)
        for group in groups:
            by_node[await admin.find_coordinator(group)].append(group)
        for node, names in by_node.items():
            response = await admin._send_request(_DescribeGroupsV1(names), node)
            for described in _groups(response):
                if described.get("group") in counts:
                    counts[described["group"]] = len(described.get("members") or ())
    except (TimeoutError, KafkaError, OSError) as exc:
        raise _translate(exc, "describe consumer groups") from exc
    finally:
        try:
            await admin.close()
        except (KafkaError, OSError):
            pass
    return counts


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One live member of a consumer group and the partitions it was assigned."""

    group: str
    client_id: str
    """The member's Kafka client id (an agent's id)."""
    host: str
    partitions: tuple[tuple[str, int], ...]
    """(topic, partition) pairs of its current assignment."""


async def describe_group_members(
    bootstrap_servers: str, groups: Sequence[str], *, client_id: str = "mesh-admin", timeout_ms: int = 10000
) -> dict[str, list[GroupMember]]:
    """Live members of each group with their assigned partitions (empty list for an idle group)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id=client_id, request_timeout_ms=timeout_ms,
    )
    found: dict[str, list[GroupMember]] = {g: [] for g in groups}
    try:
        await admin.start()
        by_node: dict[int, list[str]] = defaultdict(list)
        for group in groups:
            by_node[await admin.find_coordinator(group)].append(group)
        for node, names in by_node.items():
            response = await admin._send_request(_DescribeGroupsV1(names), node)
            for described in _groups(response):
                name = described.get("group")
                if name not in found:
                    continue
                for member in described.get("members") or ():
                    found[name].append(GroupMember(
                        group=name, client_id=str(member.get("client_id", "")),
                        host=str(member.get("client_host", "")).lstrip("/"),
                        partitions=_assigned(member.get("member_assignment") or b""),
                    ))
    except (TimeoutError, KafkaError, OSError) as exc:
        raise _translate(exc, "describe consumer groups") from exc
    finally:
        try:
            await admin.close()
        except (KafkaError, OSError):
            pass
    return found


def _assigned(raw: bytes) -> tuple[tuple[str, int], ...]:
    # The consumer protocol's assignment bytes; a group mid-rebalance has none yet.
    if not raw:
        return ()
    try:
        decoded = MemberAssignment.decode(raw)
    except Exception:  # bytes from a non-consumer group: show no partitions rather than fail
        return ()
    return tuple(sorted((str(topic), int(p)) for topic, parts in decoded.assignment for p in parts))


def _groups(response: Any) -> list[dict[str, Any]]:
    try:
        return list(response.to_object().get("groups", ()))
    except Exception as exc:  # an unexpected response layout is the bus's problem, said plainly
        raise BusError(f"describe consumer groups: unreadable response: {type(exc).__name__}: {exc}") from None


async def delete_topics_with_prefix(bootstrap_servers: str, prefix: str, *, client_id: str = "mesh-admin") -> list[str]:
    """Delete every topic whose name starts with ``<prefix>.``; return their names (a run's cleanup)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id)
    try:
        await admin.start()
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(f"{prefix}."))
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    except (TimeoutError, KafkaError, OSError) as exc:
        raise _translate(exc, f"delete topics {prefix}.*") from exc
    finally:
        try:
            await admin.close()
        except (KafkaError, OSError):
            pass
