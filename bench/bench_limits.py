"""Cost of one guard check (+ release) against a private Redis, next to a PING round trip.

Run: ``python bench/bench_limits.py [--iterations N]``. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import redis

from celery_defer.embedded_redis import RedisServer
from celery_defer.limits import (
    ConcurrencyGuard,
    Debounce,
    Idempotency,
    LimitBackend,
    MemoryLimitBackend,
    RateLimit,
    RedisLimitBackend,
    Singleton,
    Throttle,
)

Op = Callable[[int], object]
#: Limits high enough that every check proceeds: the bench measures cost, not waiting.
HUGE = 10**9


def measure_us(op: Op, iterations: int) -> float:
    """Mean microseconds per call of ``op(i)``, after a short warm-up."""
    for i in range(min(100, iterations)):
        op(-1 - i)
    start = time.perf_counter_ns()
    for i in range(iterations):
        op(i)
    return (time.perf_counter_ns() - start) / iterations / 1000


def guard_ops(backend: LimitBackend) -> dict[str, Op]:
    """One check (and release, where the guard holds something) per call."""
    concurrency = ConcurrencyGuard(backend, limit=1, lease_s=60)
    throttle = Throttle(backend, limit=HUGE, period_s=1)
    rate_limit = RateLimit(backend, limit=HUGE, period_s=1)
    idempotency = Idempotency(backend)
    singleton = Singleton(backend, mode="skip", lease_s=60)
    debounce = Debounce(backend, period_s=0.001)

    def concurrency_op(i: int) -> None:
        concurrency.check("b:concurrency", holder=f"run-{i}")
        concurrency.release("b:concurrency", holder=f"run-{i}", run_s=0.01)

    def singleton_op(i: int) -> None:
        singleton.check("b:singleton", holder=f"run-{i}")
        singleton.release("b:singleton", holder=f"run-{i}")

    def debounce_op(i: int) -> None:
        debounce.push("b:debounce", event_id=f"e-{i}", payload="{}")
        debounce.check("b:debounce", holder=f"e-{i}")

    return {
        "concurrency check+release": concurrency_op,
        "throttle check": lambda i: throttle.check("b:throttle"),
        "rate_limit check": lambda i: rate_limit.check("b:rate_limit"),
        "idempotency check": lambda i: idempotency.check(f"b:idem:{i}", holder=f"run-{i}"),
        "singleton check+release": singleton_op,
        "debounce push+check": debounce_op,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5000)
    iterations = parser.parse_args().iterations

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            noop_us = measure_us(lambda i: None, iterations)
            ping_us = measure_us(lambda i: client.ping(), iterations)
            redis_ops = guard_ops(RedisLimitBackend(client))
            memory_ops = guard_ops(MemoryLimitBackend())
            version = client.info("server")["redis_version"]
            print(f"redis-server {version}, {iterations} iterations, µs per op\n")
            print(f"{'operation':<28}{'redis µs':>10}{'x PING':>8}{'memory µs':>11}")
            print(f"{'no-op':<28}{noop_us:>10.2f}{noop_us / ping_us:>8.2f}{'':>11}")
            print(f"{'PING round trip':<28}{ping_us:>10.2f}{1:>8.2f}{'':>11}")
            for name, op in redis_ops.items():
                redis_us = measure_us(op, iterations)
                memory_us = measure_us(memory_ops[name], iterations)
                print(f"{name:<28}{redis_us:>10.2f}{redis_us / ping_us:>8.2f}{memory_us:>11.2f}")
        finally:
            client.close()


if __name__ == "__main__":
    main()
