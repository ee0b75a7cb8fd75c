"""Fixtures of the chaos tests that are not shared with the whole suite."""

from tests.redis_ha import make_redis_cluster, make_redis_sentinel  # noqa: F401
