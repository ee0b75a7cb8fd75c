"""The reasoner's rate limiter, re-exported: the seam is a store (``mesh.store.RateLimiter``).

``RateLimiter`` and ``RateTicket`` are defined in ``mesh.store.base``, ``RedisRateLimiter`` in
``mesh.store.redis`` (the only package that imports redis) and ``InMemoryRateLimiter``, its twin
for the tasks of one process, in ``mesh.store.memory``; this module names the same objects.
"""

from __future__ import annotations

from mesh.store import InMemoryRateLimiter, RateLimiter, RateTicket, RedisRateLimiter

__all__ = ["InMemoryRateLimiter", "RateLimiter", "RateTicket", "RedisRateLimiter"]
