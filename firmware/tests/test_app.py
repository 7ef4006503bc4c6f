"""The app's tasks against an in-memory broker, in real time across a tick wrap (both runtimes)."""

import asyncio
import json

from fakes import FakeBroker, FakeHAL, near_wrap_clock, run_async

from homesync import mqtt, protocol
from homesync.app import App, broker_list

BASE = "homesync/h/nodes/n/"


def make_app(**overrides):
    cfg = {
        "home_id": "h",
        "node_id": "n",
        "heartbeat_interval": 1,
        "telemetry_interval": 1,
        "measure_interval_ms": 50,
        "watchdog_s": 2,
        "stall_timeout_s": 0.3,
        "mqtt": {"keepalive": 1, "backoff_min_s": 0.02, "backoff_max_s": 0.05},
    }
    for key, value in overrides.items():
        if key == "mqtt":
            for sub in value:
                cfg["mqtt"][sub] = value[sub]
        else:
            cfg[key] = value
    hal = FakeHAL(clock=near_wrap_clock(500))
    broker = FakeBroker()
    app = App(hal, cfg, "9.9.9")
    app.opener = broker.open
    return app, hal, broker


def published(conn, suffix=None):
    out = []
    for ptype, flags, body in conn.packets:
        if ptype != mqtt.PUBLISH:
            continue
        topic, payload, qos, retain, _dup, _pid = mqtt.parse_publish(flags, body)
        if suffix is None or topic == BASE + suffix:
            out.append((topic, json.loads(payload), qos, retain))
    return out


async def until(predicate, timeout=3.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def start(app):
    task = asyncio.create_task(app.run())
    assert await until(lambda: app.mqtt is not None and app.mqtt.connected and app.node.connects)
    return task


def finish(app, broker):
    app.kill()
    broker.stop()


def test_birth_subscriptions_heartbeat_and_telemetry():
    async def main():
        app, hal, broker = make_app()
        await start(app)
        assert await until(lambda: len(published(broker.conn, "status/heartbeat")) >= 2, 4.0)
        first = published(broker.conn)[0]
        assert first[0] == BASE + "status/online"
        assert first[1]["online"] is True
        assert first[1]["firmware"] == "9.9.9"
        assert first[2:] == (1, True)
        subs = broker.conn.of_type(mqtt.SUBSCRIBE)
        assert len(subs) == 1
        assert b"homesync/h/nodes/n/command/+" in subs[0][2]
        assert b"homesync/h/nodes/n/status/online" in subs[0][2]
        beats = published(broker.conn, "status/heartbeat")
        assert beats[0][1]["seq"] == 0
        assert beats[1][1]["seq"] == 1
        assert beats[0][1]["interval"] == 1
        assert beats[0][2:] == (1, False)  # QoS 1 (docs/protocol.md, "Heartbeat QoS")
        assert published(broker.conn, "telemetry/energy")
        assert hal.feeds > 0
        assert hal.wdt_ms == 2000
        finish(app, broker)

    run_async(main)


def test_relay_command_round_trip_puback_after_response():
    async def main():
        app, hal, broker = make_app()
        await start(app)
        body = {"action": "on", "request_id": "r-1", "timestamp": protocol.iso_utc(hal.unix)}
        broker.publish(BASE + "command/relay", protocol.encode(body), qos=1, pid=42)
        assert await until(lambda: broker.conn.of_type(mqtt.PUBACK))
        assert hal.relay is True
        kinds = []
        for ptype, flags, pkt in broker.conn.packets:
            if ptype == mqtt.PUBACK:
                kinds.append("puback")
            elif ptype == mqtt.PUBLISH:
                kinds.append(mqtt.parse_publish(flags, pkt)[0][len(BASE) :])
        assert kinds.index("response/command") < kinds.index("puback")
        resp = published(broker.conn, "response/command")[0][1]
        assert resp["status"] == "success"
        assert resp["request_id"] == "r-1"
        assert published(broker.conn, "status/relay")[-1][1]["state"] == "on"
        finish(app, broker)

    run_async(main)


def test_freeze_stops_heartbeat_but_not_keepalive_and_starves_watchdog():
    async def main():
        app, hal, broker = make_app()
        await start(app)
        assert await until(lambda: published(broker.conn, "status/heartbeat"), 3.0)
        hal.frozen = True
        await asyncio.sleep(0.2)
        beats = len(published(broker.conn, "status/heartbeat"))
        pings = len(broker.conn.of_type(mqtt.PINGREQ))
        feeds = hal.feeds
        await asyncio.sleep(2.0)
        assert len(published(broker.conn, "status/heartbeat")) == beats
        assert len(broker.conn.of_type(mqtt.PINGREQ)) > pings  # MQTT keep-alive goes on
        assert app.mqtt.connected
        assert len(broker.conns) == 1
        assert hal.feeds <= feeds + 1  # supervisor stopped feeding the watchdog
        assert "no progress" in app.problem
        hal.frozen = False
        assert await until(lambda: len(published(broker.conn, "status/heartbeat")) > beats, 3.0)
        assert await until(lambda: app.problem is None, 2.0)
        finish(app, broker)

    run_async(main)


def test_meter_failure_means_no_heartbeat():
    async def main():
        app, hal, broker = make_app()
        hal.meter_error = OSError("uart silent")
        await start(app)
        await asyncio.sleep(1.5)
        assert published(broker.conn, "status/heartbeat") == []
        assert app.meter_errors > 5
        hal.meter_error = None
        assert await until(lambda: published(broker.conn, "status/heartbeat"), 3.0)
        finish(app, broker)

    run_async(main)


def test_own_will_seen_while_connected_triggers_rebirth():
    async def main():
        app, _hal, broker = make_app()
        await start(app)
        assert await until(lambda: published(broker.conn, "status/online"))
        broker.publish(BASE + "status/online", protocol.encode(protocol.will()), qos=1, pid=9)
        assert await until(lambda: len(published(broker.conn, "status/online")) == 2)
        assert published(broker.conn, "status/online")[1][1]["online"] is True
        finish(app, broker)

    run_async(main)


def test_graceful_stop_publishes_shutdown_then_disconnects():
    async def main():
        app, _hal, broker = make_app()
        task = await start(app)
        await app.stop()
        await until(lambda: task.done())
        last = published(broker.conn, "status/online")[-1]
        assert last[1]["online"] is False
        assert last[1]["reason"] == "shutdown"
        assert last[2:] == (1, True)
        assert broker.conn.packets[-1][0] == mqtt.DISCONNECT
        broker.stop()

    run_async(main)


def test_dead_task_is_a_health_problem():
    async def main():
        app, hal, broker = make_app()
        await start(app)
        app.tasks["commands"].cancel()
        await asyncio.sleep(0.05)
        assert app.health_problem() == "task commands died"
        feeds = hal.feeds
        await asyncio.sleep(1.0)
        assert hal.feeds == feeds
        finish(app, broker)

    run_async(main)


def test_reconnect_publishes_reconnect_birth_and_skips_subscribe_with_session():
    async def main():
        app, _hal, broker = make_app()
        await start(app)
        assert await until(lambda: published(broker.conn, "status/firmware"))
        broker.session_present = True
        broker.cut()
        assert await until(lambda: len(broker.conns) == 2 and app.mqtt.connected)
        assert await until(lambda: published(broker.conn, "status/online"))
        assert published(broker.conn, "status/online")[0][1]["reason"] == "reconnect"
        await asyncio.sleep(0.1)
        assert broker.conn.of_type(mqtt.SUBSCRIBE) == []
        finish(app, broker)

    run_async(main)


def test_connect_announces_led_and_rssi_and_subscribes_to_hub():
    async def main():
        app, _hal, broker = make_app()
        await start(app)
        assert await until(lambda: published(broker.conn, "status/rssi"))
        led = published(broker.conn, "status/led")[0]
        assert led[1]["state"] == "off"
        assert led[2:] == (1, True)
        subs = broker.conn.of_type(mqtt.SUBSCRIBE)
        assert b"homesync/h/hub/status" in subs[0][2]
        finish(app, broker)

    run_async(main)


def test_hub_announcement_reannounces_after_random_delay():
    async def main():
        app, hal, broker = make_app()
        hal.random = lambda: 0.0  # the spread's lower end: 0 s
        await start(app)
        assert await until(lambda: published(broker.conn, "status/rssi"))
        before = len(broker.conn.packets)
        broker.publish("homesync/h/hub/status", b'{"online": true}', qos=1, pid=3)
        assert await until(lambda: len(published(broker.conn, "status/online")) == 2)
        again = []
        for ptype, flags, body in broker.conn.packets[before:]:
            if ptype == mqtt.PUBLISH:
                again.append(mqtt.parse_publish(flags, body)[0][len(BASE) :])
        assert await until(lambda: len(published(broker.conn, "status/rssi")) == 2)
        for name in ("status/online", "status/relay", "status/led", "status/firmware"):
            assert name in again or len(published(broker.conn, name)) == 2, name
        assert published(broker.conn, "status/online")[1][1]["online"] is True
        finish(app, broker)

    run_async(main)


def test_rssi_republished_on_3_db_change():
    async def main():
        app, hal, broker = make_app(rssi_check_s=0.05)
        await start(app)
        assert await until(lambda: published(broker.conn, "status/rssi"))
        hal.rssi_value = -62  # 1 dB: no news
        await asyncio.sleep(0.3)
        assert len(published(broker.conn, "status/rssi")) == 1
        hal.rssi_value = -70
        assert await until(lambda: len(published(broker.conn, "status/rssi")) == 2)
        assert published(broker.conn, "status/rssi")[1][1]["value"] == -70
        finish(app, broker)

    run_async(main)


def test_broker_list_parsing():
    base = {"host": "10.0.0.1", "port": 1883}
    assert broker_list(base) == [("10.0.0.1", 1883)]
    mq = {"host": "x", "port": 1883, "brokers": ["127.0.0.1:1884", "127.0.0.2", "bad:port", 5]}
    assert broker_list(mq) == [("127.0.0.1", 1884), ("127.0.0.2", 1883)]
    assert broker_list({"host": "h", "port": 1, "brokers": []}) == [("h", 1)]


def test_client_rotates_brokers_after_failed_connect_and_dropped_link():
    async def main():
        first = FakeBroker()
        second = FakeBroker()
        first.refuse = 3  # server unavailable
        opened = []

        async def opener(host, port, ssl=None):
            opened.append(port)
            return await (first if port == 1 else second).open(host, port, ssl)

        app, _hal, _unused = make_app(mqtt={"brokers": ["127.0.0.1:1", "127.0.0.1:2"]})
        app.opener = opener
        await start(app)
        assert opened[:2] == [1, 2]
        assert app.mqtt.port == 2
        first.refuse = 0
        second.cut()
        assert await until(lambda: len(opened) >= 3 and app.mqtt.connected)
        assert opened[2] == 1
        app.kill()
        first.stop()
        second.stop()

    run_async(main)
