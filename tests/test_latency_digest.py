"""What the delivery child relays instead of every event's latency (agent/monitor.py `DeliveryDigest`,
agent/history.py `Reservoir`): histogram bucket counts exactly as if each value had been observed, and
uniform samples that merge into uniform samples, so /metrics, /health's event_types p95 and the SLA
reasons read the same in the parent as in one process. Pure: no database, no process."""

from __future__ import annotations

import bisect
import random
import time

from agent.history import Reservoir, ThinnedSample, _subset, by_type
from agent.monitor import LATENCY_BUCKETS, Monitor, bucket_counts


def observe_one_by_one(values: list[float]) -> tuple[list[int], float]:
    """The histogram's rule, value by value: bucket i holds buckets[i-1] < v <= buckets[i]; negative as 0."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for v in values:
        v = max(0.0, v)
        counts[bisect.bisect_left(LATENCY_BUCKETS, v)] += 1
        total += v
    return counts, total


def test_bucket_counts_match_observing_each_value():
    rnd = random.Random(7)
    values = [b * f for b in (0.0, *LATENCY_BUCKETS) for f in (1.0, 0.999, 1.001)]   # on and next to bounds
    values += [-0.5, -0.001, 4000.0, 1e9] + [rnd.uniform(-1, 5000) for _ in range(2000)]
    rnd.shuffle(values)
    counts, total = bucket_counts(values)
    want_counts, want_total = observe_one_by_one(values)
    assert counts == want_counts
    assert abs(total - want_total) < 1e-6 * want_total
    assert bucket_counts([]) == ([0] * (len(LATENCY_BUCKETS) + 1), 0)


def test_a_full_reservoir_skipping_ahead_stays_uniform():
    """Fed in batches, as deliveries come: the sample holds early and late values alike (a sampler that
    restarted its skip state per batch would keep mostly the late ones)."""
    r = Reservoir(cap=1000)
    for start in range(0, 200_000, 1000):
        r.add_many([float(i) for i in range(start, start + 1000)])
    assert r.seen == 200_000 and len(r.samples) == 1000
    early = sum(1 for v in r.samples if v < 100_000) / 1000
    assert 0.42 < early < 0.58
    assert len(set(r.samples)) == 1000                        # each value kept at most once


def test_a_thinned_sample_stays_uniform_and_bounded():
    t = ThinnedSample(cap=500)
    t.add_many([1.0, 2.0])
    assert t.samples == [1.0, 2.0] and t.seen == 2                # below the cap: every value
    t = ThinnedSample(cap=500)
    for start in range(0, 200_000, 700):
        t.add_many([float(i) for i in range(start, min(start + 700, 200_000))])
    assert t.seen == 200_000 and 500 <= len(t.samples) <= 1000
    early = sum(1 for v in t.samples if v < 100_000) / len(t.samples)
    assert 0.4 < early < 0.6
    merged = Reservoir(cap=500)                                     # and it merges like a reservoir's sample
    merged.merge(t.samples, t.seen)
    assert len(merged.samples) == 500 and merged.seen == 200_000


def test_merged_reservoirs_weigh_each_side_by_what_it_saw():
    mine, theirs = Reservoir(cap=1000), Reservoir(cap=1000)
    mine.add_many([0.0] * 3000)
    theirs.add_many([1.0] * 1000)
    mine.merge(theirs.samples, theirs.seen)
    assert mine.seen == 4000 and len(mine.samples) == 1000
    assert 0.18 < sum(mine.samples) / 1000 < 0.32             # a quarter of the values were theirs
    mine.add_many([2.0] * 4000)                              # and values added after a merge count as much
    assert mine.seen == 8000
    assert 0.42 < sum(1 for v in mine.samples if v == 2.0) / 1000 < 0.58
    small = Reservoir(cap=1000)
    small.add_many([1.0, 2.0])
    small.merge([3.0], 1)                                     # below the cap: nothing dropped
    assert sorted(small.samples) == [1.0, 2.0, 3.0] and small.seen == 3


def test_a_subset_is_uniform_whether_it_keeps_few_or_most():
    # merge keeps a uniform k of n: drawing the n - k to drop (k > n / 2) or the k to keep; every value is in
    # it with probability k / n, no value twice, and every size comes out exact
    rng = random.Random(7)
    values = [float(i) for i in range(20)]
    for k in (0, 3, 10, 11, 17, 19, 20):
        hits = [0] * 20
        for _ in range(4000):
            got = _subset(rng, values, k)
            assert len(got) == k and len(set(got)) == k and set(got) <= set(values)
            for v in got:
                hits[int(v)] += 1
        want = 4000 * k / 20
        assert all(abs(h - want) <= 0.1 * 4000 * 0.5 + 1 for h in hits), (k, hits)
    pairs = {}                                  # pairs too: (0, 1) kept together as often as (0, 19)
    for _ in range(20000):
        got = set(_subset(rng, values, 15))
        for pair in ((0.0, 1.0), (0.0, 19.0)):
            pairs[pair] = pairs.get(pair, 0) + (pair[0] in got and pair[1] in got)
    assert abs(pairs[(0.0, 1.0)] - pairs[(0.0, 19.0)]) < 0.06 * 20000


def test_by_type_groups_in_order():
    assert by_type([1.0, 2.0], ["a", "a"]) == {"a": [1.0, 2.0]}
    assert by_type([1.0, 2.0, 3.0], ["a", "b", "a"]) == {"a": [1.0, 3.0], "b": [2.0]}


def relayed_monitor() -> tuple[Monitor, Monitor]:
    """(child, parent): the child adds deliveries up and relays digests into the parent, as
    agent/delivery.py wires them through its queue."""
    parent = Monitor("a", "postgres")
    child = Monitor("a", "postgres")
    child.digests = {}
    child.relay = parent.merge_digest
    return child, parent


def test_relayed_digests_give_the_parent_the_same_histogram_and_type_counts():
    child, parent = relayed_monitor()
    direct = Monitor("a", "postgres")
    rnd = random.Random(3)
    for _ in range(50):
        lat = [rnd.uniform(-0.01, 20.0) for _ in range(200)]
        types = [rnd.choice(["order.placed", "order.status.changed"]) for _ in lat]
        child.delivered_latencies("f", lat, types)
        direct.delivered_latencies("f", lat, types)
    child.caught_up("f")                                      # idle: whatever is left goes now
    buckets, total, count = parent.histogram("f").snapshot()
    want_buckets, want_total, want_count = direct.histogram("f").snapshot()
    assert (buckets, count) == (want_buckets, want_count) == (want_buckets, 10_000)
    assert abs(total - want_total) < 1e-6 * want_total
    got, want = parent.tracker.type_p95(), direct.tracker.type_p95()
    assert {t: n for t, (_, n) in got.items()} == {t: n for t, (_, n) in want.items()}
    assert sum(n for _, n in got.values()) == 10_000
    assert abs(got["order.placed"][0] - want["order.placed"][0]) < 2.0        # p95 of uniform(0, 20): 19
    assert child.digests == {}                                                # nothing held back


def test_a_busy_target_relays_at_most_every_digest_interval_and_an_idle_one_at_once():
    child, parent = relayed_monitor()
    child.delivered_latencies("f", [0.1] * 10, ["t"] * 10)     # the first relays at once
    assert parent.histogram("f").count == 10
    child.delivered_latencies("f", [0.1] * 5, ["t"] * 5)       # within DIGEST_SECONDS: held
    assert parent.histogram("f").count == 10
    child.caught_up("f")
    assert parent.histogram("f").count == 15
    p95, n = parent.tracker.type_p95(now=time.time())["t"]
    assert (p95, n) == (0.1, 15)


def test_the_sla_p95_reads_the_same_through_the_relay():
    """The 90/10 case test_alerts uses: one slow event in ten puts the p95 on the slow value."""
    child, parent = relayed_monitor()
    child.delivered_latencies("f", [0.1] * 90 + [3.0] * 10, ["order.status.changed"] * 100)
    child.caught_up("f")
    assert parent.tracker.type_p95()["order.status.changed"] == (3.0, 100)
