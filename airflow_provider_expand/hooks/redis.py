"""Redis clients from Airflow connections: ``RedisHook``'s for tasks, an async one for the triggerer.

Both get socket timeouts, so a Redis that accepts and never answers fails the task or the trigger with a
clear error instead of hanging it."""

from __future__ import annotations

import datetime as dt

import redis
import redis.asyncio
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import BaseHook
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from airflow_provider_expand.engine.queues.pause import REDIS_RETRIES, QueueError, with_timeouts

REDIS_TIMEOUT = dt.timedelta(seconds=10)


def redis_client(redis_conn_id: str, timeout: dt.timedelta = REDIS_TIMEOUT) -> redis.Redis:
    """``RedisHook``'s client, with socket timeouts so a Redis that does not answer fails the task."""
    return with_timeouts(RedisHook(redis_conn_id=redis_conn_id).get_conn(), timeout)


_SSL_ARGS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")


async def async_redis_client(redis_conn_id: str) -> redis.asyncio.Redis:
    """An async client built from the Airflow connection the way ``RedisHook`` builds its sync one."""
    conn = await BaseHook.aget_connection(redis_conn_id)
    extra = conn.extra_dejson
    if extra.get("cluster"):
        raise QueueError(
            f"Redis connection {redis_conn_id!r} is a cluster: the deferrable drain does not support it "
            "(use deferrable=False)"
        )
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    return redis.asyncio.Redis(
        host=conn.host or "localhost",
        port=int(conn.port or 6379),
        username=conn.login or None,
        password=password,
        db=int(extra.get("db") or 0),
        socket_timeout=REDIS_TIMEOUT.total_seconds(),
        socket_connect_timeout=REDIS_TIMEOUT.total_seconds(),
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), REDIS_RETRIES),
        **{k: v for k, v in extra.items() if k in _SSL_ARGS},
    )
