"""Publisher for bench_brokers: HomeSync-shaped messages at a fixed rate, one paho client.

``python benchmarks/_brokerload.py --port P --rate 5000 --seconds 8 --qos 0 --nodes 1000``

Round-robin over ``--nodes`` node ids and the firmware's telemetry names (topic
``homesync/bench/nodes/plug-0001/telemetry/power``, ~60-byte JSON payload like the firmware's),
spread evenly over each second in 10 ms slices. Loopback only, bounded by ``--seconds``.
Prints one JSON line: messages published and the rate achieved. Not a benchmark itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from paho.mqtt import client as paho

NAMES = ("power", "voltage", "current", "energy", "frequency", "temperature", "heartbeat")
SLICE_S = 0.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--client-id", default="bench-publisher")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600 or not 0 < args.rate <= 200_000:
        parser.error("--seconds in (0, 600], --rate in (0, 200000]")

    topics = []
    for i in range(args.nodes):
        for name in NAMES:
            category = "status" if name == "heartbeat" else "telemetry"
            topics.append(f"homesync/bench/nodes/plug-{i:04d}/{category}/{name}")
    payload = json.dumps(
        {"value": 231.4, "unit": "V", "timestamp": "2026-12-01T12:00:00Z"}
    ).encode()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    per_slice = args.rate * SLICE_S
    sent = 0
    owed = 0.0
    start = time.monotonic()
    next_slice = start
    infos = []
    while (now := time.monotonic()) - start < args.seconds:
        owed += per_slice
        while owed >= 1:
            info = client.publish(topics[sent % len(topics)], payload, qos=args.qos)
            if args.qos:
                infos.append(info)
            sent += 1
            owed -= 1
        next_slice += SLICE_S
        if (delay := next_slice - time.monotonic()) > 0:
            time.sleep(delay)
        elif now - next_slice > 1:  # cannot keep up: do not burst to catch up
            next_slice = time.monotonic()
    elapsed = time.monotonic() - start
    for info in infos:
        info.wait_for_publish(30)
    acked = time.monotonic() - start
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"sent": sent, "seconds": elapsed, "rate": sent / elapsed, "acked_s": acked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
