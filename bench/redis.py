"""Redis target benchmark (see bench/broker_bench.py): the target's send next to a bare redis-py loop with the
same guarantee (one MULTI/EXEC pipeline of XADDs per batch, answered before the next), and commit-to-consumer
latency at 5,000 changes/s (an XREAD BLOCK consumer). Uses the machine's Redis (127.0.0.1:6379), whose
persistence settings are its own (`CONFIG GET appendfsync` is printed with the figures).

    python -m bench.redis [--events 50000] [--rate 5000] [--seconds 20]
"""

from __future__ import annotations

import threading
import time
import uuid

from bench import broker_bench as bb
from bench.common import emit

URL = "redis://127.0.0.1:6379/0"
from adapters.redis import KIND  # noqa: E402

BATCH = KIND.batch_size          # the target's default batch size, for the bare loop too


class Consumer(threading.Thread):
    def __init__(self, stream: str):
        super().__init__(daemon=True)
        self.stream, self.lat = stream, []

    def run(self) -> None:
        import redis
        client = redis.Redis.from_url(URL)
        last = "0-0"
        while True:
            for _, entries in client.xread({self.stream: last}, count=1000, block=1000) or []:
                now = time.time()
                for entry_id, fields in entries:
                    self.lat.append(bb.commit_latency(fields[b"event"], now))
                    last = entry_id


def main() -> None:
    import redis
    a = bb.args()
    client = redis.Redis.from_url(URL)
    names = [f"cdc-bench-{uuid.uuid4().hex[:6]}-{k}" for k in ("bare", "target", "latency")]
    try:
        emit({"scenario": "redis_server", **client.config_get("append*")})
        evs = bb.events(a.events)

        def bare_publish(batch: list) -> None:
            pipe = client.pipeline(transaction=True)
            for e in batch:
                pipe.xadd(names[0], {"id": e.id, "event": e.body})
            pipe.execute()

        def bare_round() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(evs), BATCH):
                bare_publish(evs[i:i + BATCH])
            r = len(evs) / (time.perf_counter() - t0)
            client.delete(names[0])
            return r

        from adapters.redis import RedisTarget
        from tests.brokers_b_support import settings
        target = RedisTarget(settings("redis", url=URL, stream=names[1]))

        def target_round() -> float:
            r = bb.target_rate(target, evs, BATCH)
            client.delete(names[1])
            return r

        bare_rate, target_rate = bb.best_rates(a.rounds, bare_round, target_round)
        bare_lat = bb.bare_latency(bare_publish, a.rate, min(a.seconds, 10), BATCH)
        target.open()
        target_lat = bb.bare_latency(target.send, a.rate, min(a.seconds, 10), BATCH)
        target.close()
        client.delete(names[1])
        client.delete(names[0])
        consumer = Consumer(names[2])
        consumer.start()
        toml = f"""[[targets]]
name = "redis"
kind = "redis"
url = "{URL}"
stream = "{names[2]}"
"""
        lat_fig, lat = bb.agent_latency(toml, consumer, a.rate, a.seconds, "redis")
        bb.report("redis", len(evs), bare_rate, target_rate, lat_fig, lat, bare_lat, a.rate, target_lat)
    finally:
        client.delete(*names)


if __name__ == "__main__":
    main()
