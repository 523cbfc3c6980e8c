"""Kafka target against a bare confluent-kafka loop, same broker, same run (Tansu, memory storage).

    python -m bench.kafka [--events 50000] [--batch-size 500] [--rate 5000]

Throughput: events/s through KafkaTarget.send, batch after batch, next to a bare loop that does the same work
with the same guarantees (idempotent producer, acks=all, produce every message of a batch, flush until
every delivery report is in). Latency: events become available at --rate/s; p99 of ack minus availability
(bench/broker_load.py). Ratios are target / bare. Rounds alternate target and bare;
the median of each figure is printed.
"""

from __future__ import annotations

import argparse

from bench.common import emit, table  # noqa: F401  (puts the repository on sys.path)
from bench.broker_load import make_events, median_figures, paced_latency, throughput
from tests.plugins.brokers import TansuBroker

from adapters.kafka import KafkaOptions, KafkaTarget, build_message
from agent.config import TargetSettings


def target_sender(bootstrap: str, topic: str):
    target = KafkaTarget(TargetSettings(name="bench", kind="kafka", options=KafkaOptions(
        bootstrap_servers=bootstrap, topic=topic)))
    target.open()

    def send(batch):
        assert not target.send(batch).rejected
    return send, target.close


def bare_sender(bootstrap: str, topic: str):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "log_level": 3})

    def send(batch):
        errors = []
        for ev in batch:
            m = build_message(ev, "cloudevents", topic)
            producer.produce(topic, value=m.value, key=m.key, headers=m.headers,
                             on_delivery=lambda err, _m: err and errors.append(err))
        producer.flush(30)
        assert not errors and not len(producer)
    return send, lambda: producer.flush(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    broker = TansuBroker().start()
    try:
        events = make_events(args.events)
        paced = events[: args.rate * 10]          # 10 s at the paced rate
        runs: dict[str, list[dict]] = {"target": [], "bare": []}
        # interleaved rounds, the median kept: the shared machine's noise (±30% between runs) hits both alike
        for n in range(args.rounds):
            for run in ("target", "bare"):
                topic = f"bench-{run}-{n}"
                send, close = (target_sender if run == "target" else bare_sender)(broker.bootstrap, topic)
                send(events[:1000])                                        # warm up: metadata, producer id
                rate = throughput(send, events, args.batch_size)
                lat = paced_latency(send, paced, args.rate, args.batch_size)
                close()
                runs[run].append({"events_per_s": round(rate), **{f"{k}_at_{args.rate}": v for k, v in lat.items()}})
        results = {run: median_figures(rs) for run, rs in runs.items()}
        ratio = round(results["target"]["events_per_s"] / results["bare"]["events_per_s"], 2)
        emit({"scenario": "kafka", "events": args.events, "batch_size": args.batch_size, **results,
              "throughput_ratio": ratio})
        table([(run, r["events_per_s"], r[f"p50_ms_at_{args.rate}"], r[f"p99_ms_at_{args.rate}"])
               for run, r in results.items()],
              ("run", "events/s", f"p50 ms at {args.rate}/s", f"p99 ms at {args.rate}/s"))
        print(f"throughput ratio target/bare: {ratio}")
    finally:
        broker.destroy()


if __name__ == "__main__":
    main()
