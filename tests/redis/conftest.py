from __future__ import annotations

import pytest

from tests import redis_support

if not redis_support.available():  # pragma: no cover
    pytest.skip("redis-server is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def server() -> redis_support.RedisServer:
    return redis_support.standalone()


@pytest.fixture(scope="session")
def cluster() -> redis_support.RedisClusterServers:
    return redis_support.cluster()
