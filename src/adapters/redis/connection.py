"""Redis clients for the adapters: built on demand (never at import), with bounded timeouts."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff


def redis_client(
    url: str,
    *,
    socket_timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
    retries: int = 1,
    client_name: str | None = None,
    health_check_interval_s: int = 0,
) -> Redis:
    """A client whose commands fail within seconds when Redis is gone, instead of hanging.

    `retries=0` hands every connection error straight to the caller (the Pub/Sub supervisor
    wants that: it owns reconnection); commands otherwise retry once after a short jittered pause.
    """
    retry = (
        Retry(NoBackoff(), 0)
        if retries == 0
        else Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries)
    )
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        retry=retry,
        client_name=client_name,
        health_check_interval=health_check_interval_s,
    )
