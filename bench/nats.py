"""NATS target against a bare nats-py loop, same server, same run (a private nats-server, JetStream file
storage).

    python -m bench.nats [--events 20000] [--batch-size 100] [--rate 5000] [--rounds 3]

Throughput: events/s through NatsTarget.send, batch after batch, next to a bare loop with the same guarantee
(each JetStream publish awaited for its PubAck before the next, `Nats-Msg-Id` set), and, for reference, a
pipelined bare loop (a batch's publishes in flight together, acks awaited at the end) that the target does not
use (see docs/brokers.md: it could reorder a subject after a reconnect). Latency: events become available at
--rate/s; p99 of ack minus availability (bench/broker_load.py). Rounds alternate the runs; medians printed.
"""

from __future__ import annotations

import argparse
import asyncio
import threading

from bench.common import emit, table  # noqa: F401  (puts the repository on sys.path)
from bench.broker_load import make_events, median_figures, paced_latency, throughput
from tests.plugins.brokers import NatsServer

from adapters.nats import NatsOptions, NatsTarget, build_message
from agent.config import TargetSettings


def target_sender(url: str, subject: str):
    target = NatsTarget(TargetSettings(name="bench", kind="nats", options=NatsOptions(url=url, subject=subject)))
    target.open()

    def send(batch):
        assert not target.send(batch).rejected
    return send, target.close


def bare_sender(url: str, subject: str, pipelined: bool = False):
    import nats
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    nc = asyncio.run_coroutine_threadsafe(nats.connect(url), loop).result(10)
    js = nc.jetstream(timeout=10)

    async def publish(batch):
        msgs = [build_message(ev, "cloudevents", subject) for ev in batch]
        if pipelined:
            await asyncio.gather(*(js.publish(m.subject, m.payload, headers=m.headers) for m in msgs))
        else:
            for m in msgs:
                await js.publish(m.subject, m.payload, headers=m.headers)

    def send(batch):
        asyncio.run_coroutine_threadsafe(publish(batch), loop).result(60)

    def close():
        asyncio.run_coroutine_threadsafe(nc.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
    return send, close


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = NatsServer().start()
    try:
        import nats
        from nats.js.api import StorageType

        async def add_stream():
            nc = await nats.connect(server.url)
            await nc.jetstream().add_stream(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE,
                                            duplicate_window=600)
            await nc.close()
        asyncio.run(add_stream())
        events = make_events(args.events)
        paced = events[: args.rate * 6]          # 6 s at the paced rate
        makers = {"target": target_sender, "bare": bare_sender,
                  "bare pipelined": lambda url, subject: bare_sender(url, subject, pipelined=True)}
        runs: dict[str, list[dict]] = {k: [] for k in makers}
        for n in range(args.rounds):
            for run, make in makers.items():
                # a new subject per run, so no run's Nats-Msg-Ids fall in another's duplicate window
                subject = f"bench.{run.replace(' ', '-')}.{n}"
                send, close = make(server.url, subject)
                send(events[:500])                   # warm up (these ids count as duplicates later: skipped)
                rate = throughput(send, events[500:], args.batch_size)
                lat = paced_latency(send, _fresh(paced, f"{run}-{n}"), args.rate, args.batch_size)
                close()
                runs[run].append({"events_per_s": round(rate), **{f"{k}_at_{args.rate}": v for k, v in lat.items()}})
        results = {run: median_figures(rs) for run, rs in runs.items()}
        ratio = round(results["target"]["events_per_s"] / results["bare"]["events_per_s"], 2)
        ratio_pipelined = round(results["target"]["events_per_s"] / results["bare pipelined"]["events_per_s"], 2)
        emit({"scenario": "nats", "events": args.events, "batch_size": args.batch_size, **results,
              "throughput_ratio": ratio, "throughput_ratio_pipelined": ratio_pipelined})
        table([(run, r["events_per_s"], r[f"p50_ms_at_{args.rate}"], r[f"p99_ms_at_{args.rate}"])
               for run, r in results.items()],
              ("run", "events/s", f"p50 ms at {args.rate}/s", f"p99 ms at {args.rate}/s"))
        print(f"throughput ratio target/bare: {ratio}; target/bare pipelined: {ratio_pipelined}")
    finally:
        server.destroy()


def _fresh(events, tag: str):
    """The same events with other ids, so the paced run is not answered from the duplicate window."""
    from agent.interfaces import SpooledEvent
    return [SpooledEvent(e.seq, f"{tag}-{e.id}", e.type, e.subject, e.body, e.commit_ts, e.position) for e in events]


if __name__ == "__main__":
    main()
