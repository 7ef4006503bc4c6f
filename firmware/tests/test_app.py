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
    assert await until(lambda: app.mqtt is not None and app.mqtt.connected and app.node.announced)
    return task


async def start_link(app):
    task = asyncio.create_task(app.run())
    assert await until(lambda: app.mqtt is not None)
    return task


def command(rid, action="on", name="relay", pad=None):
    """A command payload with the request id first (dict order differs on MicroPython)."""
    text = '{"request_id": "' + rid + '", "action": "' + action + '"'
    if pad is not None:
        text += ', "pad": "' + pad + '"'
    return BASE + "command/" + name, (text + "}").encode()


def responses(conn):
    return [m[1] for m in published(conn, "response/command")]


def pubacks(conn):
    return [mqtt.parse_pid(p[2]) for p in conn.of_type(mqtt.PUBACK)]


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


def test_subscribes_on_every_connect_even_when_the_session_is_present():
    """Issue 15.1: a session can exist without subscriptions (the first link died between
    CONNACK and SUBACK); skipping SUBSCRIBE on session_present=1 left the node deaf for good."""

    async def main():
        app, _hal, broker = make_app()
        broker.suback_code = 0x80  # the first SUBSCRIBE is refused ...
        await start_link(app)
        assert await until(lambda: len(broker.conns) >= 2)
        broker.suback_code = 1
        broker.session_present = True  # ... yet the broker keeps the session
        assert await until(lambda: app.mqtt.connected and app.node.announces == 1)
        assert broker.conn.of_type(mqtt.SUBSCRIBE)
        assert await until(lambda: published(broker.conn, "status/online"))
        assert published(broker.conn, "status/online")[0][1]["reason"] == "boot"
        broker.cut()
        assert await until(lambda: app.mqtt.connected and app.node.announces == 2)
        assert broker.conn.of_type(mqtt.SUBSCRIBE)
        assert await until(lambda: published(broker.conn, "status/online"))
        assert published(broker.conn, "status/online")[0][1]["reason"] == "reconnect"
        body = protocol.encode({"action": "on", "request_id": "heard"})
        broker.publish(BASE + "command/relay", body, qos=1, pid=5)
        assert await until(lambda: published(broker.conn, "response/command"))
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


# --------------------------------------------------------------------------- issue 15 defects


def test_oversize_commands_answered_with_error_and_acked():
    """Issue 15.2: one size limit (4096-byte commands); anything larger gets an error response
    (the request id is read from the first bytes) and its PUBACK, never silence."""

    async def main():
        app, hal, broker = make_app()
        await start(app)
        pad = "x" * 5000  # above the limit, below the client's packet size
        topic, body = command("big-5k", pad=pad)
        broker.publish(topic, body, qos=1, pid=21)
        topic, body = command("big-20k", pad="x" * 20000)  # above the packet size: skipped
        broker.publish(topic, body, qos=1, pid=22)
        assert await until(lambda: len(responses(broker.conn)) == 2)
        for resp in responses(broker.conn):
            assert resp["status"] == "error"
            assert "too large" in resp["error"]
        assert [r["request_id"] for r in responses(broker.conn)] == ["big-5k", "big-20k"]
        assert await until(lambda: pubacks(broker.conn) == [21, 22])
        assert hal.relay is False
        assert len(broker.conns) == 1  # the link stayed up
        assert app.mqtt.max_packet >= protocol.MAX_COMMAND_BYTES
        finish(app, broker)

    run_async(main)


def test_pubacks_follow_order_of_receipt_through_the_app():
    """Issue 15.5: an oversize message was acknowledged at once while an earlier command still
    waited in the inbox."""

    async def main():
        app, hal, broker = make_app()
        await start(app)
        hal.frozen = True  # the command task holds the first command
        broker.publish(*command("first"), qos=1, pid=31)
        broker.publish(*command("second", pad="x" * 20000), qos=1, pid=32)
        broker.publish(BASE + "command/relay", b"\xff not json", qos=1, pid=33)
        await asyncio.sleep(0.2)
        assert pubacks(broker.conn) == []
        hal.frozen = False
        assert await until(lambda: len(pubacks(broker.conn)) == 3)
        assert pubacks(broker.conn) == [31, 32, 33]
        finish(app, broker)

    run_async(main)


def test_poison_messages_are_contained():
    """Issue 15.9: a nested command, a MemoryError and a handler bug are each answered and
    acknowledged; the command task, the link and the node live on."""

    async def main():
        app, hal, broker = make_app()
        await start(app)
        deep = b'{"request_id": "deep", "action": "on", "x": ' + b"[" * 1900 + b"]" * 1900 + b"}"
        broker.publish(BASE + "command/relay", deep, qos=1, pid=41)
        real_set = hal.relay_set

        def broken(on):
            hal.relay_set = real_set
            raise MemoryError("memory allocation failed")

        hal.relay_set = broken
        broker.publish(*command("oom"), qos=1, pid=42)
        real_handle = app.node.handle

        def buggy(topic, payload, retain=False):
            app.node.handle = real_handle
            raise KeyError("bug")

        assert await until(lambda: len(responses(broker.conn)) == 2)
        app.node.handle = buggy
        broker.publish(*command("bug"), qos=1, pid=43)
        broker.publish(*command("after", "on"), qos=1, pid=44)
        assert await until(lambda: len(responses(broker.conn)) == 4)
        got = {r["request_id"]: r for r in responses(broker.conn)}
        assert got["deep"]["status"] == "error"
        assert got["oom"]["status"] == "error"
        assert got["bug"]["status"] == "error"
        assert got["after"]["status"] == "success"
        assert await until(lambda: pubacks(broker.conn) == [41, 42, 43, 44])
        assert not app.tasks["commands"].done()
        assert app.health_problem() is None
        assert len(broker.conns) == 1
        finish(app, broker)

    run_async(main)


def test_burst_every_command_answered_once_never_executed_twice():
    """Issue 15.10: a burst without broker flow control; every command is answered (success or
    busy), acknowledged, and a retry never executes twice."""

    async def main():
        app, hal, broker = make_app()
        await start(app)
        count = 200  # inbox + busy queue hold 288; beyond, the link drops and a real broker
        # (mosquitto sends at most 20 unacknowledged messages anyway) delivers them again
        base_changes = hal.relay_changes
        for i in range(count):
            broker.publish(*command("t{}".format(i), "toggle"), qos=1, pid=100 + i)
        for i in range(0, count, 6):  # retries of some of them, while the burst is handled
            broker.publish(*command("t{}".format(i), "toggle"), qos=1, pid=1000 + i)
        retries = len(range(0, count, 6))
        assert await until(lambda: len(pubacks(broker.conn)) == count + retries, 15.0)
        assert await until(lambda: len(responses(broker.conn)) >= count + retries, 5.0)
        seen = {}
        for resp in responses(broker.conn):
            seen.setdefault(resp["request_id"], []).append(resp)
        assert len(seen) == count  # every command answered, none silently dropped
        executed = 0
        for rid, answers in seen.items():
            kinds = {(r["status"], r.get("result"), r.get("error")) for r in answers}
            success = [k for k in kinds if k[0] == "success"]
            assert len(success) <= 1, (rid, kinds)  # never two different results
            for kind in kinds:
                assert kind[0] == "success" or kind[2] == "busy", (rid, kinds)
            if success:
                executed += 1
        assert hal.relay_changes - base_changes == executed  # each execution toggled once
        assert executed > 0
        assert not [line for line in hal.logs if "dropped" in line]
        finish(app, broker)

    run_async(main, 40)


def test_retained_command_is_acked_but_never_executed():
    async def main():
        app, hal, broker = make_app()
        await start(app)
        broker.conn.to_client.feed(
            mqtt.encode_publish(*command("kept"), qos=1, retain=True, pid=51)
        )
        assert await until(lambda: pubacks(broker.conn) == [51])
        await asyncio.sleep(0.1)
        assert responses(broker.conn) == []
        assert hal.relay is False
        finish(app, broker)

    run_async(main)


def test_command_right_after_subscribe_leaves_the_real_relay_state_retained():
    """Issue 15.12: the birth messages were built before they were published, so a command
    handled meanwhile was overwritten by a stale retained ``status/relay``."""

    async def main():
        app, hal, broker = make_app()
        broker.drain_s = 0.03  # a slow link: each publish takes a while
        early = mqtt.encode_publish(*command("early"), qos=1, pid=61)
        broker.after_topic[BASE + "status/online"] = [early]  # arrives during the birth
        await start(app)
        assert await until(lambda: responses(broker.conn), 5.0)
        assert await until(lambda: published(broker.conn, "status/rssi"), 5.0)
        await asyncio.sleep(0.2)
        assert hal.relay is True
        assert published(broker.conn, "status/relay")[-1][1]["state"] == "on"
        assert published(broker.conn, "status/led")[-1][1]["state"] == "on"
        finish(app, broker)

    run_async(main)


def test_config_intervals_validated_at_boot():
    """Issue 15.13: 0, -1, 1e9 or a string used to be taken as is (no heartbeat, or one)."""
    app, hal, broker = make_app(
        heartbeat_interval=0,
        telemetry_interval=-1,
        measure_interval_ms=1e9,
        watchdog_s="30",
        rssi_interval_s=True,
        relay_boot="sometimes",
        mqtt={"keepalive": -5, "backoff_max_s": 0},
    )
    assert app.cfg["heartbeat_interval"] == 30
    assert app.node.heartbeat_interval == 30
    assert app.cfg["telemetry_interval"] == 10
    assert app.cfg["measure_interval_ms"] == 1000
    assert app.cfg["watchdog_s"] == 30
    assert app.cfg["rssi_interval_s"] == 60
    assert app.cfg["relay_boot"] == "restore"
    assert app.cfg["mqtt"]["keepalive"] == 60
    assert app.cfg["mqtt"]["backoff_max_s"] == 60
    assert app.cfg["stall_timeout_s"] == 0.3  # valid values are kept
    text = "\n".join(hal.logs)
    for key in ("heartbeat_interval", "telemetry_interval", "measure_interval_ms", "mqtt.keep"):
        assert "config: " + key in text, key
    assert "using 30" in text
    broker.stop()


def test_bad_credentials_show_on_led_and_console():
    """Issue 15.7: a refusal is visible on the plug (fast LED blink) and once on the console."""

    async def main():
        app, hal, broker = make_app()
        broker.refuse = 4
        await start_link(app)
        assert await until(lambda: app.mqtt.refused == 4)
        levels = []
        for _ in range(40):
            levels.append(hal.led)
            await asyncio.sleep(0.025)
        assert hal.relay is False
        changes = sum(1 for i in range(1, len(levels)) if levels[i] != levels[i - 1])
        assert changes >= 3  # blinking although the relay (which the LED follows) is off
        assert len([line for line in hal.logs if "credentials" in line]) == 1
        broker.refuse = 0
        assert await until(lambda: app.mqtt.connected and app.node.announced, 5.0)
        await asyncio.sleep(0.2)
        assert hal.led is False  # back to following the relay
        finish(app, broker)

    run_async(main)


def test_full_inbox_under_a_frozen_command_task_keeps_the_link():
    """Reading pauses while 16 messages wait, but never so long that keep-alive fails: the link
    stays up, later commands are answered busy, the held ones once the task runs again."""

    async def main():
        app, hal, broker = make_app()
        await start(app)
        hal.frozen = True
        for i in range(20):
            broker.publish(*command("f{}".format(i)), qos=1, pid=300 + i)
        await asyncio.sleep(2.5)  # > 2 keep-alive periods of 1 s
        assert len(broker.conns) == 1
        assert app.mqtt.connected
        busy = [r for r in responses(broker.conn) if r.get("error") == "busy"]
        assert 1 <= len(busy) <= 4  # the rest waits in the inbox (one in the frozen task)
        hal.frozen = False
        assert await until(lambda: len(responses(broker.conn)) == 20, 5.0)
        statuses = [r["status"] for r in responses(broker.conn)]
        assert statuses.count("success") == 20 - len(busy)
        assert await until(lambda: pubacks(broker.conn) == list(range(300, 320)))
        finish(app, broker)

    run_async(main)
