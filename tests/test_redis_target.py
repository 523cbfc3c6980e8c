"""The redis target: stream entries (pure), delivery against the machine's Redis (XADD in MULTI/EXEC, the id
as a field, MAXLEN ~), an oversized event refused by a private server with a small proto-max-bulk-len, WAIT
for replicas, bad configs, and the end-to-end crash test against a private Redis (AOF, appendfsync always)
killed and started again mid-stream."""

from __future__ import annotations

import signal
import uuid

import orjson
import pytest

from adapters.redis import RedisTarget, stream_fields
from agent.errors import TargetUnavailable
from tests.agentproc import wait_for
from tests.brokers_b_support import check_bad_config, crash_workload, event, settings


def test_structured_entry_has_the_id_and_the_cloudevent():
    ev = event(1)
    fields, _ = stream_fields(ev, "cloudevents")
    assert fields == {"id": ev.id, "event": ev.body}


def test_binary_entry_has_one_field_per_attribute_and_the_data():
    ev = event(2)
    fields, source = stream_fields(ev, "cloudevents-binary")
    assert source == "cdc-agent://erp/public.customers"
    assert fields["id"] == ev.id and fields["type"] == "customer.updated" and fields["specversion"] == "1.0"
    assert fields["datacontenttype"] == "application/json"
    assert orjson.loads(fields["data"]) == orjson.loads(ev.body)["data"]


@pytest.fixture
def redis_client(machine_redis):
    import redis
    client = redis.Redis.from_url(machine_redis)
    made: list[str] = []
    yield client, made
    if made:
        client.delete(*made)
    client.close()


def test_a_batch_lands_in_order_in_the_rendered_streams(redis_client, machine_redis):
    client, made = redis_client
    prefix = "cdc-test-" + uuid.uuid4().hex[:8]
    made += [f"{prefix}.customers", f"{prefix}.orders"]
    target = RedisTarget(settings("redis", url=machine_redis, stream=prefix + ".{table}"))
    batch = [event(i, table="public.orders" if i % 2 else "public.customers", subject=str(i % 5))
             for i in range(1, 201)]
    try:
        assert target.send(batch).rejected == []
    finally:
        target.close()
    for table in ("customers", "orders"):
        entries = client.xrange(f"{prefix}.{table}")
        want = [e for e in batch if e.body.find(f"public.{table}".encode()) > 0]
        assert [f[b"id"].decode() for _, f in entries] == [e.id for e in want]
        assert [f[b"event"] for _, f in entries] == [e.body for e in want]


def test_maxlen_trims_approximately(redis_client, machine_redis):
    client, made = redis_client
    stream = "cdc-test-" + uuid.uuid4().hex[:8]
    made.append(stream)
    target = RedisTarget(settings("redis", url=machine_redis, stream=stream, maxlen=100))
    try:
        for k in range(10):
            assert target.send([event(k * 100 + i) for i in range(100)]).rejected == []
    finally:
        target.close()
    length = client.xlen(stream)
    assert 100 <= length < 1000          # "~": trimmed, to whole macro nodes, never below maxlen
    assert client.xrevrange(stream, count=1)[0][1][b"id"].decode() == event(999).id


def test_an_oversized_event_is_rejected_and_the_rest_delivered(make_redis_server):
    import redis
    server = make_redis_server(**{"proto-max-bulk-len": "1mb"})
    target = RedisTarget(settings("redis", url=server.url, stream="s"))
    batch = [event(1), event(2, pad=2 << 20), event(3)]
    try:
        result = target.send(batch)
        assert [r.seq for r in result.rejected] == [2]
        assert "proto-max-bulk-len (1048576 bytes)" in result.rejected[0].reason
        assert target.send([event(4)]).rejected == []       # the connection is fine afterwards
    finally:
        target.close()
    client = redis.Redis.from_url(server.url)
    assert [f[b"id"].decode() for _, f in client.xrange("s")] == [batch[0].id, batch[2].id, event(4).id]


def test_wait_replicas_without_replicas_is_unavailable(machine_redis, redis_client):
    _, made = redis_client
    stream = "cdc-test-" + uuid.uuid4().hex[:8]
    made.append(stream)
    target = RedisTarget(settings("redis", url=machine_redis, stream=stream, wait_replicas=1, timeout_seconds=0.2))
    try:
        with pytest.raises(TargetUnavailable, match="0 of 1 replica"):
            target.send([event(1)])
    finally:
        target.close()


def test_a_server_that_is_down_or_a_key_of_another_type_is_unavailable(redis_client, machine_redis):
    client, made = redis_client
    key = "cdc-test-" + uuid.uuid4().hex[:8]
    made.append(key)
    client.set(key, "a string, not a stream")
    target = RedisTarget(settings("redis", url=machine_redis, stream=key))
    try:
        with pytest.raises(TargetUnavailable, match="WRONGTYPE"):
            target.send([event(1)])
    finally:
        target.close()
    from tests.plugins import free_port
    down = RedisTarget(settings("redis", url=f"redis://127.0.0.1:{free_port()}/0", stream="s"))
    with pytest.raises(TargetUnavailable, match="cannot connect"):
        down.send([event(1)])


@pytest.mark.parametrize("toml,key,words", [
    ('name = "bus"\nkind = "redis"\nurl = "amqp://h:6379"\nstream = "x"', "targets[0].url", "redis:// or rediss://"),
    ('name = "bus"\nkind = "redis"\nurl = "redis://h:6379"\nstream = "cdc.{table"', "targets[0].stream",
     "not a valid template"),
    ('name = "bus"\nkind = "redis"\nurl = "redis://h:6379"\nstream = "x"\nmaxlen = 0', "targets[0].maxlen",
     "greater than zero"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, toml, key, words):
    check_bad_config(tmp_path, toml, key, words)


def test_crash_safe_delivery_through_a_broker_crash(pg_db, tmp_path, make_redis_server):
    """Concurrent PostgreSQL writers; the agent SIGKILLed 3 times; the private Redis (appendfsync always)
    SIGKILLed and started again mid-stream. XRANGE over the stream returns every change, each subject in
    order, repeated entries only with the same id and content."""
    import redis
    server = make_redis_server()

    def entries() -> list[dict]:
        try:
            client = redis.Redis.from_url(server.url)
            got = client.xrange("erp-test.items")
            client.close()
        except redis.RedisError:
            return []
        out = []
        for _, fields in got:
            ev = orjson.loads(fields[b"event"])
            assert fields[b"id"].decode() == ev["id"]
            out.append(ev)
        return out

    def crash_server() -> None:
        before = wait_for(entries, 30, what="the agent's first deliveries")    # mid-stream
        server.restart(signal.SIGKILL)
        after = entries()
        # every entry the server had answered for (appendfsync always) is there after the crash
        assert after[:len(before)] == before

    crash_workload(pg_db, tmp_path, f"""name = "bus"
kind = "redis"
url = "{server.url}"
stream = "{{agent}}.{{table}}"
timeout_seconds = 5""", entries, crash_server)


def test_the_password_never_shows_in_errors(make_redis_server, monkeypatch):
    from tests.plugins.leaks import secret
    server = make_redis_server(requirepass="right-pw-1234")
    monkeypatch.setenv("BB_REDIS_PW", secret("wrong-pw-5678"))
    target = RedisTarget(settings("redis", url=f"redis://:${{BB_REDIS_PW}}@127.0.0.1:{server.port}/0", stream="s"))
    with pytest.raises(TargetUnavailable) as ei:
        target.send([event(1)])
    assert "WRONGPASS" in str(ei.value) or "invalid" in str(ei.value)
    assert "wrong-pw-5678" not in str(ei.value) and "127.0.0.1" in str(ei.value)
    monkeypatch.setenv("BB_REDIS_PW", "right-pw-1234")
    ok = RedisTarget(settings("redis", url=f"redis://:${{BB_REDIS_PW}}@127.0.0.1:{server.port}/0", stream="s"))
    try:
        assert ok.send([event(1)]).rejected == []
    finally:
        ok.close()


def test_parsing_a_config_with_these_brokers_imports_no_broker_client(tmp_path):
    """The clients are optional extras (cdc-agent[rabbitmq,redis,mqtt]): reading a config must not need them."""
    import subprocess
    import sys

    from tests.agentproc import ROOT
    p = tmp_path / "agent.toml"
    p.write_text("""
[agent]
name = "erp"
[source]
kind = "postgres"
dsn = "postgresql://u@127.0.0.1/db"
tables = ["public.customers"]
snapshot = "never"          # these tests count the events of their own writes
[[targets]]
name = "a"
kind = "rabbitmq"
url = "amqp://h/"
routing_key = "{table}"
[[targets]]
name = "b"
kind = "redis"
url = "redis://h/0"
stream = "{table}"
[[targets]]
name = "c"
kind = "mqtt"
url = "mqtt://h"
topic = "{table}"
format = "cloudevents-binary"
""")
    code = (f"import sys; from agent import config; c = config.load({str(p)!r}); "
            "from adapters import build_target; [build_target(t) for t in c.targets]; "
            "print(sorted(m for m in ('pika', 'redis', 'paho') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
