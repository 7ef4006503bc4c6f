"""Load generator for bench_system: N HomeSync nodes from ONE paho client, loopback only.

``python benchmarks/_loadgen.py --port P --home H --nodes 1000 --seconds 60 --mode changing``

Every node publishes, once per second, a heartbeat and 5 telemetry readings (power, voltage,
current, energy, temperature): 6 messages per node per second, 6 000 msg/s for 1 000 nodes,
QoS 0, spread evenly over the second in 10 ms slices. ``--mode changing``: every reading moves
each second; ``--mode same``: every reading repeats. At start each node publishes its birth
(``status/online``, retained, QoS 1) and its relay state (retained), like the firmware does.

Bounded: runs ``--seconds`` and exits; publishes only to 127.0.0.1. Prints one JSON line with
the messages published and the rate achieved. Not a benchmark itself (no ``bench_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from paho.mqtt import client as paho

METRICS = (
    ("power", "W", 40.0),
    ("voltage", "V", 230.0),
    ("current", "A", 0.2),
    ("energy", "kWh", 12.0),
    ("temperature", "°C", 24.0),
)
SLICE_S = 0.01
INTERVAL_S = 1


def births(client: paho.Client, base: list[str]) -> None:
    """Birth and relay state of every node (retained, QoS 1), as the firmware at connect."""
    infos = []
    for topic in base:
        birth = {"online": True, "reason": "boot", "uptime": 0, "firmware": "1.0.0"}
        infos.append(client.publish(topic + "status/online", json.dumps(birth), qos=1, retain=True))
        relay = {"state": "off", "source": "boot"}
        infos.append(client.publish(topic + "status/relay", json.dumps(relay), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--mode", choices=("changing", "same"), default="changing")
    parser.add_argument("--births-only", action="store_true", help="births and relay, then exit")
    args = parser.parse_args()
    if not 0 < args.seconds <= 3600:
        parser.error("--seconds must be in (0, 3600]")

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{args.home}")
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        print("loadgen: could not connect", file=sys.stderr)
        return 1
    base = [f"homesync/{args.home}/nodes/node-{i:04d}/" for i in range(args.nodes)]
    boot = int(time.time())
    births(client, base)
    if args.births_only:
        client.disconnect()
        client.loop_stop()
        print(json.dumps({"births": args.nodes}))
        return 0

    slices = round(INTERVAL_S / SLICE_S)
    published = 0
    start = time.monotonic()
    second = 0
    while time.monotonic() - start < args.seconds:
        for s in range(slices):
            due = start + second * INTERVAL_S + s * SLICE_S
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            for i in range(s, args.nodes, slices):
                topic = base[i]
                seq = second + 1
                uptime = int(time.time()) - boot + 1
                client.publish(
                    topic + "status/heartbeat",
                    f'{{"seq": {seq}, "uptime": {uptime}, "interval": {INTERVAL_S}}}',
                )
                step = ((seq + i) % 50) / 10 if args.mode == "changing" else 0.0
                for name, unit, base_value in METRICS:
                    value = base_value + step
                    client.publish(
                        topic + "telemetry/" + name, f'{{"value": {value}, "unit": "{unit}"}}'
                    )
                published += 1 + len(METRICS)
        second += 1
    elapsed = time.monotonic() - start
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps(
            {
                "published": published,
                "seconds": round(elapsed, 2),
                "rate": round(published / elapsed),
                "last_seq": second,  # seq of the last round (seq = 0-based second + 1)
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
