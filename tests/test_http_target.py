"""The HTTP target against a real receiver on loopback: what it sends, how it signs, and how every kind of
answer (or silence) is classified."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time

import orjson
import pytest

from adapters.http import HttpTarget, retry_after_seconds
from agent import config as config_mod
from agent.errors import TargetRejected, TargetUnavailable
from agent.interfaces import SpooledEvent

TOKEN = "tok-3f9a1c77e2b84d0d9b1a"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def http_target(tmp_path, monkeypatch, url: str, **opts) -> HttpTarget:
    """An HttpTarget built through the config loader, so secrets come from the environment as users write them."""
    monkeypatch.setenv("T_TOKEN", TOKEN)
    monkeypatch.setenv("T_SECRET", opts.pop("secret", SECRET))
    target = {"name": "crm", "kind": "http", "url": url, "headers": {"Authorization": "Bearer ${T_TOKEN}"},
              "signing_secret": "${T_SECRET}", "timeout_seconds": 0.5, **opts}
    cfg = config_mod.parse({"agent": {"name": "t", "state_dir": "st"},
                            "source": {"kind": "postgres", "dsn": "postgresql://u@h/db", "tables": ["public.t"]},
                            "targets": [target]}, base=tmp_path)
    return HttpTarget(cfg.targets[0])


def events(n: int, start: int = 1) -> list[SpooledEvent]:
    out = []
    for i in range(start, start + n):
        eid = f"{i:032x}"
        body = orjson.dumps({"specversion": "1.0", "id": eid, "type": "customer.pricing.updated", "subject": str(i),
                             "data": {"op": "update", "key": {"customer_id": i}}})
        out.append(SpooledEvent(i, eid, "customer.pricing.updated", str(i), body, time.time()))
    return out


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> str:
    """An independent Standard Webhooks verifier (per the spec, not the adapter's code). Returns the msg id."""
    msg_id, ts, sigs = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    assert abs(time.time() - int(ts)) <= tolerance, "timestamp outside tolerance"
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body.decode()}".encode(), hashlib.sha256).digest())
    for sig in sigs.split(" "):              # the header may carry several space-separated signatures
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return msg_id
    raise AssertionError("no valid v1 signature")


def test_batch_is_one_post_of_a_json_array_with_signature(tmp_path, monkeypatch, http_receiver):
    t = http_target(tmp_path, monkeypatch, http_receiver.url)
    batch = events(3)
    assert t.send(batch).rejected == []
    t.send(batch)                                        # the same batch again (a retry)
    t.send(events(1, start=10))
    t.close()
    reqs = http_receiver.all_requests()
    assert len(reqs) == 3
    first = reqs[0]
    assert first.path == "/hooks/erp"
    assert first.headers["content-type"] == "application/cloudevents-batch+json"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert [e["id"] for e in orjson.loads(first.body)] == [e.id for e in batch]
    ids = [verify_standard_webhook(SECRET, r.headers, r.body) for r in reqs]
    assert ids[0] == ids[1], "a retried batch must carry the same webhook-id"
    assert ids[2] == f"{10:032x}", "a batch of one carries its event's id"
    assert len(set(ids)) == 2
    # a tampered body fails verification: the verifier is not a rubber stamp
    with pytest.raises(AssertionError):
        verify_standard_webhook(SECRET, first.headers, first.body.replace(b"pricing", b"pricinG"))


def test_plain_secret_is_used_as_its_bytes(tmp_path, monkeypatch, http_receiver):
    t = http_target(tmp_path, monkeypatch, http_receiver.url, secret="plain-shared-secret-42")
    t.send(events(2))
    r = http_receiver.all_requests()[0]
    verify_standard_webhook("plain-shared-secret-42", r.headers, r.body)
    with pytest.raises(AssertionError):
        verify_standard_webhook(SECRET, r.headers, r.body)


def test_bad_whsec_secret_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(config_mod.ConfigError, match="signing_secret.*not base64"):
        http_target(tmp_path, monkeypatch, "http://127.0.0.1:9/x", secret="whsec_not*base64!")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retriable_statuses_are_unavailable(tmp_path, monkeypatch, http_receiver, status):
    http_receiver.behave("status", status)
    t = http_target(tmp_path, monkeypatch, http_receiver.url)
    with pytest.raises(TargetUnavailable) as e:
        t.send(events(2))
    assert e.value.retry_after is None
    assert f"HTTP {status}" in str(e.value)


def test_retry_after_seconds_and_http_date(tmp_path, monkeypatch, http_receiver):
    t = http_target(tmp_path, monkeypatch, http_receiver.url)
    http_receiver.script("status", 429, retry_after="7")
    http_receiver.script("status", 503, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    http_receiver.script("status", 503, retry_after="soon")
    with pytest.raises(TargetUnavailable) as e:
        t.send(events(1))
    assert e.value.retry_after == 7
    with pytest.raises(TargetUnavailable) as e:
        t.send(events(1))
    assert 25 <= e.value.retry_after <= 31
    with pytest.raises(TargetUnavailable) as e:
        t.send(events(1))
    assert e.value.retry_after is None                   # unreadable: the backoff decides
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0   # in the past: now


def test_other_4xx_is_a_rejection_with_the_response_and_no_secret(tmp_path, monkeypatch, http_receiver):
    # a receiver that echoes what it got, credentials included, must not leak them into dead letters
    http_receiver.behave("status", 400, body=f'{{"error": "bad event", "you_sent": "Bearer {TOKEN}", '
                                             f'"secret": "{SECRET}", "pad": "{"x" * 2000}"}}')
    t = http_target(tmp_path, monkeypatch, http_receiver.url + "?token=" + TOKEN)
    with pytest.raises(TargetRejected) as e:
        t.send(events(1))
    msg = str(e.value)
    assert "HTTP 400" in msg and "bad event" in msg
    assert TOKEN not in msg and SECRET not in msg and SECRET[6:] not in msg
    assert len(msg) < 600, "the response body is truncated"
    for status in (409, 413, 422):
        http_receiver.behave("status", status)
        with pytest.raises(TargetRejected, match=f"HTTP {status}"):
            t.send(events(1))


@pytest.mark.parametrize("status", [401, 403, 404, 301])
def test_endpoint_refusals_are_retried_not_dead_lettered(tmp_path, monkeypatch, http_receiver, status):
    """A bad token or a wrong URL refuses every event alike: retry (health degraded), keep the order."""
    http_receiver.behave("status", status)
    t = http_target(tmp_path, monkeypatch, http_receiver.url)
    with pytest.raises(TargetUnavailable, match="check url and headers"):
        t.send(events(1))


def test_refused_connection_and_timeout_are_unavailable(tmp_path, monkeypatch, http_receiver):
    t = http_target(tmp_path, monkeypatch, http_receiver.url + "?token=" + TOKEN)
    http_receiver.refuse()
    with pytest.raises(TargetUnavailable) as e:
        t.send(events(1))
    assert TOKEN not in str(e.value) and "127.0.0.1" in str(e.value)
    http_receiver.accept()
    http_receiver.behave("hang", seconds=2)              # past the 0.5 s timeout
    with pytest.raises(TargetUnavailable, match="no answer in time") as e:
        t.send(events(1))
    assert TOKEN not in str(e.value)
    http_receiver.behave("ok")
    assert t.send(events(1)).rejected == []              # and it recovers on the same client
    assert len(http_receiver.events()) == 1
