"""MQTT target benchmark (see bench/broker_bench.py): the target's send next to a bare paho loop with the
same guarantee (QoS 1, MQTT 5, user property ce_id, every PUBACK of a batch awaited), and commit-to-consumer
latency at 5,000 changes/s (a paho subscriber). Uses the machine's Mosquitto (127.0.0.1:1883), whose
Receive Maximum (`max_inflight_messages`, 20 by default) bounds any QoS 1 publisher; `--inflight N` runs the
same against a private Mosquitto allowing N messages in flight instead.

    python -m bench.mqtt [--events 50000] [--rate 5000] [--seconds 20] [--inflight 1000]
"""

from __future__ import annotations

import threading
import time
import uuid

from bench import broker_bench as bb

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"
INFLIGHT = 20
from adapters.mqtt import KIND  # noqa: E402

BATCH = KIND.batch_size          # the target's default batch size, for the bare loop too


class BareLoop:
    def __init__(self, topic: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.Properties, self.PacketTypes, self.topic = Properties, PacketTypes, topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-" + uuid.uuid4().hex[:6],
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(INFLIGHT)          # the broker's Receive Maximum, as the target
        self.client.connect(HOST, PORT)
        self.client.loop_start()

    def publish(self, evs: list) -> None:
        infos = []
        for e in evs:
            props = self.Properties(self.PacketTypes.PUBLISH)
            props.UserProperty = [("ce_id", e.id)]
            infos.append(self.client.publish(self.topic, e.body, qos=1, properties=props))
        for info in infos:
            info.wait_for_publish(30)

    def rate(self, evs: list) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(evs), BATCH):
            self.publish(evs[i:i + BATCH])
        return len(evs) / (time.perf_counter() - t0)


class Consumer:
    def __init__(self, topic: str):
        import paho.mqtt.client as mqtt
        self.lat = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub-" + uuid.uuid4().hex[:6],
                                  protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.lat.append(bb.commit_latency(m.payload, time.time()))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(HOST, PORT)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        subscribed.wait(10)


def main() -> None:
    global PORT, URL, INFLIGHT
    import sys
    server = None
    if "--inflight" in sys.argv:
        i = sys.argv.index("--inflight")
        INFLIGHT = int(sys.argv[i + 1])
        del sys.argv[i:i + 2]
        from tests.plugins.brokers_b import MosquittoServer
        server = MosquittoServer(max_inflight_messages=str(INFLIGHT), persistence="false").start()
        PORT, URL = server.port, server.url
    try:
        run()
    finally:
        if server is not None:
            server.destroy()


def run() -> None:
    a = bb.args()
    base = "cdc-bench/" + uuid.uuid4().hex[:6]
    evs = bb.events(a.events)
    bare = BareLoop(base + "/bare")
    from adapters.mqtt import MqttTarget
    from tests.brokers_b_support import settings
    target = MqttTarget(settings("mqtt", url=URL, topic=base + "/target"))
    bare_rate, target_rate = bb.best_rates(a.rounds, lambda: bare.rate(evs), lambda: bb.target_rate(target, evs, BATCH))
    bare_lat = bb.bare_latency(bare.publish, a.rate, min(a.seconds, 10), BATCH)
    target.open()
    target_lat = bb.bare_latency(target.send, a.rate, min(a.seconds, 10), BATCH)
    target.close()
    consumer = Consumer(base + "/latency")
    toml = f"""[[targets]]
name = "mqtt"
kind = "mqtt"
url = "{URL}"
topic = "{base}/latency"
"""
    lat_fig, lat = bb.agent_latency(toml, consumer, a.rate, a.seconds, "mqtt")
    bb.report("mqtt", len(evs), bare_rate, target_rate, lat_fig, lat, bare_lat, a.rate, target_lat)


if __name__ == "__main__":
    main()
