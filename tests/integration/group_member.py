"""A consumer-group member run as a separate process by the SIGKILL failover test.

Usage: python group_member.py BOOTSTRAP PREFIX GROUP MEMBER LOGFILE DELAY_S

It appends ``<turns> <member>`` to LOGFILE (flushed and fsync'd) for each message *before*
committing its offset, so the log lists every message whose effects were durable.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mesh.bus import KafkaBus, SubscriptionOptions
from protocols import Topics


async def main() -> None:
    bootstrap, prefix, group, member, logfile, delay = sys.argv[1:7]
    topics = Topics(prefix=prefix)
    bus = KafkaBus(bootstrap, topics=topics, client_id=member, create_topics=[])
    await bus.start()
    sub = await bus.subscribe(
        [topics.workflow_events], group=group, member=member,
        options=SubscriptionOptions(session_timeout_ms=6000, heartbeat_interval_ms=500),
    )
    print("joined", flush=True)
    with open(logfile, "a", buffering=1) as log:  # noqa: ASYNC230 - a test helper, one open at start
        while True:
            for d in await sub.poll(timeout_ms=200):
                await asyncio.sleep(float(delay))
                log.write(f"{d.envelope.payload['turns']} {member}\n")
                log.flush()
                os.fsync(log.fileno())
                await sub.commit(d)


if __name__ == "__main__":
    asyncio.run(main())
