"""RabbitMQ target benchmark (see bench/broker_bench.py): the target's send next to a bare pika loop with the
same guarantee (persistent messages, mandatory, publisher confirms for the whole batch), and commit-to-consumer
latency at 5,000 changes/s. Uses the machine's RabbitMQ (127.0.0.1:5672, guest/guest).

    python -m bench.rabbitmq [--events 50000] [--rate 5000] [--seconds 20]

Also printed: the BlockingChannel loop (one confirm awaited per publish), the simple pika way, for scale.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from bench import broker_bench as bb
from bench.common import emit

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
from adapters.rabbitmq import KIND  # noqa: E402

BATCH = KIND.batch_size          # the target's default batch size, for the bare loop too


class BareConfirmLoop:
    """pika SelectConnection: publish a batch, run the I/O loop until every confirm is in."""

    def __init__(self, queue: str):
        import pika
        self.pika, self.queue, self.acked = pika, queue, 0
        ready = []
        self.conn = pika.SelectConnection(pika.URLParameters(URL), on_open_callback=lambda c: c.channel(
            on_open_callback=lambda ch: self._channel(ch, ready)))
        self._run(lambda: ready)

    def _channel(self, ch, ready):
        self.ch = ch
        ch.confirm_delivery(ack_nack_callback=self._ack, callback=lambda _f: ready.append(1))

    def _ack(self, frame):
        m = frame.method
        self.acked = m.delivery_tag if m.multiple else max(self.acked, m.delivery_tag)

    def _run(self, done):
        loop = self.conn.ioloop
        while not done():
            t = loop.call_later(0.05, loop.stop)
            loop.start()
            loop.remove_timeout(t)

    def publish(self, evs: list) -> None:
        for e in evs:
            props = self.pika.BasicProperties(delivery_mode=2, message_id=e.id,
                                              content_type="application/cloudevents+json")
            self.ch.basic_publish("", self.queue, e.body, props, mandatory=True)
        self.sent = getattr(self, "sent", 0) + len(evs)
        self._run(lambda: self.acked >= self.sent)

    def rate(self, evs: list, batch: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(evs), batch):
            self.publish(evs[i:i + batch])
        return len(evs) / (time.perf_counter() - t0)


class Consumer(threading.Thread):
    def __init__(self, queue: str):
        super().__init__(daemon=True)
        self.queue, self.lat = queue, []

    def run(self) -> None:
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(URL))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)
        for _method, _props, body in ch.consume(self.queue, auto_ack=True):
            self.lat.append(bb.commit_latency(body, time.time()))


def main() -> None:
    import pika
    a = bb.args()
    os.environ.setdefault("BENCH_RMQ_PASSWORD", "guest")
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    queues = [f"cdc-bench-{uuid.uuid4().hex[:6]}-{k}" for k in ("bare", "target", "blocking", "latency")]
    for q in queues:
        ch.queue_declare(q, durable=True)
    try:
        evs = bb.events(a.events)
        bare = BareConfirmLoop(queues[0])
        from adapters.rabbitmq import RabbitmqTarget
        from tests.brokers_b_support import settings
        target = RabbitmqTarget(settings("rabbitmq", url="amqp://guest:${BENCH_RMQ_PASSWORD}@127.0.0.1:5672/%2F",
                                         routing_key=queues[1]))

        def bare_round() -> float:
            r = bare.rate(evs, BATCH)
            ch.queue_purge(queues[0])
            return r

        def target_round() -> float:
            r = bb.target_rate(target, evs, BATCH)
            ch.queue_purge(queues[1])
            return r

        bare_rate, target_rate = bb.best_rates(a.rounds, bare_round, target_round)

        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        k = min(3000, len(evs))
        t0 = time.perf_counter()
        for e in evs[:k]:
            ch.basic_publish("", queues[2], e.body, props, mandatory=True)
        emit({"scenario": "rabbitmq_blocking_channel_one_confirm_each", "events": k,
              "per_s": round(k / (time.perf_counter() - t0))})
        ch.queue_purge(queues[2])
        conn.close()

        bare_lat = bb.bare_latency(bare.publish, a.rate, min(a.seconds, 10), BATCH)
        target.open()
        target_lat = bb.bare_latency(target.send, a.rate, min(a.seconds, 10), BATCH)
        target.close()
        consumer = Consumer(queues[3])
        consumer.start()
        toml = f"""[[targets]]
name = "rmq"
kind = "rabbitmq"
url = "amqp://guest:${{BENCH_RMQ_PASSWORD}}@127.0.0.1:5672/%2F"
routing_key = "{queues[3]}"
"""
        lat_fig, lat = bb.agent_latency(toml, consumer, a.rate, a.seconds, "rabbitmq")
        bb.report("rabbitmq", len(evs), bare_rate, target_rate, lat_fig, lat, bare_lat, a.rate, target_lat)
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(URL))    # the first one idled through the latency run
        for q in queues:
            conn.channel().queue_delete(q)
        conn.close()


if __name__ == "__main__":
    main()
