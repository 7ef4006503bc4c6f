"""MQTT 3.1.1 framing and client behaviour against an in-memory broker (both runtimes)."""

import asyncio

from fakes import FakeBroker, FakeHAL, Pipe, near_wrap_clock, raises, run_async

from homesync import mqtt


def test_varint_round_trip_and_limits():
    for value, encoded in (
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ):
        assert mqtt.encode_varint(value) == encoded
        assert mqtt.decode_varint(encoded) == (value, len(encoded))
    raises(ValueError, mqtt.encode_varint, 268435456)
    raises(ValueError, mqtt.decode_varint, b"\xff\xff\xff\xff\x01")
    raises(ValueError, mqtt.decode_varint, b"\x80")


def test_connect_packet_bytes():
    will = ("t/w", b"bye", 1, True)
    pkt = mqtt.encode_connect("cid", 60, False, will, "user", "pw")
    expected = (
        b"\x10\x23"
        + b"\x00\x04MQTT\x04"
        + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04,))  # user, password, will retain+qos1+flag
        + b"\x00\x3c"
        + b"\x00\x03cid"
        + b"\x00\x03t/w"
        + b"\x00\x03bye"
        + b"\x00\x04user"
        + b"\x00\x02pw"
    )
    assert pkt == expected
    clean = mqtt.encode_connect("c", 0, True)
    assert clean[9] == 0x02


def test_publish_round_trip():
    pkt = mqtt.encode_publish("a/b", b'{"x":1}', qos=1, retain=True, pid=513)
    assert pkt[0] == 0x33
    packets, rest = mqtt.split_packets(pkt + b"\x30")
    assert rest == b"\x30"
    ptype, flags, body = packets[0]
    assert ptype == mqtt.PUBLISH
    assert mqtt.parse_publish(flags, body) == ("a/b", b'{"x":1}', 1, True, False, 513)
    dup = mqtt.set_dup(pkt)
    assert dup[0] == 0x3B
    assert mqtt.parse_publish(dup[0] & 0x0F, dup[2:])[4] is True
    qos0 = mqtt.encode_publish("t", "hi")
    assert qos0 == b"\x30\x05\x00\x01thi"


def test_subscribe_and_acks():
    pkt = mqtt.encode_subscribe(10, [("a/+", 1), ("b", 0)])
    assert pkt == b"\x82\x0c\x00\x0a\x00\x03a/+\x01\x00\x01b\x00"
    assert mqtt.encode_puback(258) == b"\x40\x02\x01\x02"
    assert mqtt.parse_connack(b"\x01\x00") == (True, 0)
    assert mqtt.parse_connack(b"\x00\x05") == (False, 5)
    assert mqtt.parse_suback(b"\x00\x0a\x01\x80") == (10, [1, 128])


def test_read_packet_discards_oversize_body():
    async def main():
        pipe = Pipe()
        big = mqtt.encode_publish("t/x", b"z" * 3000, qos=1, pid=7)
        pipe.feed(big + b"\xd0\x00")
        ptype, flags, info = await mqtt.read_packet(pipe, max_size=1000)
        assert ptype == mqtt.PUBLISH
        assert flags & mqtt.OVERSIZE
        assert info.pid == 7  # still acknowledgeable
        assert info.topic == "t/x"
        assert info.size == 3000
        assert info.head == b"z" * mqtt.HEAD_KEEP
        assert (await mqtt.read_packet(pipe))[0] == mqtt.PINGRESP

    run_async(main)


def test_backoff_is_randomized_exponential_and_capped():
    assert mqtt.backoff_delay(0, 0.0) == 0.5
    assert mqtt.backoff_delay(0, 1.0) == 1.0
    assert mqtt.backoff_delay(3, 0.0) == 4.0
    assert mqtt.backoff_delay(3, 1.0) == 8.0
    assert mqtt.backoff_delay(10, 1.0) == 60.0
    assert mqtt.backoff_delay(40, 0.0) == 30.0
    assert mqtt.backoff_delay(1, 0.25) != mqtt.backoff_delay(1, 0.75)


def _client(broker, keepalive=60):
    hal = FakeHAL(clock=near_wrap_clock())
    client = mqtt.MQTTClient(
        hal,
        "homesync_h_n_abc",
        "127.0.0.1",
        keepalive=keepalive,
        will=("w/t", b"gone", 1, True),
        opener=broker.open,
        backoff_base=0.02,
        backoff_cap=0.05,
    )
    return client, hal


async def _until(predicate, timeout=3.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def test_client_connects_with_will_and_persistent_session():
    async def main():
        broker = FakeBroker()
        client, _ = _client(broker)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        ptype, _flags, body = broker.conn.packets[0]
        assert ptype == mqtt.CONNECT
        flags = body[7]
        assert not flags & 0x02  # clean_session false
        assert flags & 0x04  # will
        assert flags & 0x20  # will retained
        assert (flags >> 3) & 3 == 1  # will QoS 1
        assert body[8:10] == b"\x00\x3c"  # keep-alive 60
        await client.disconnect()
        assert broker.conn.packets[-1][0] == mqtt.DISCONNECT
        runner.cancel()
        broker.stop()

    run_async(main)


def test_qos1_resent_with_dup_after_reconnect():
    async def main():
        broker = FakeBroker()
        broker.auto_puback = False
        client, _ = _client(broker)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        pid = await client.publish("a/b", b"payload", qos=1)
        assert await _until(lambda: broker.conn.of_type(mqtt.PUBLISH))
        first = broker.conn.of_type(mqtt.PUBLISH)[0]
        assert not first[1] & 0x08
        assert client.inflight() == 1
        broker.session_present = True
        broker.auto_puback = True
        broker.cut()  # link dies before the PUBACK
        assert await _until(lambda: len(broker.conns) == 2 and client.connected)
        assert await _until(lambda: client.inflight() == 0)
        again = broker.conns[1].of_type(mqtt.PUBLISH)[0]
        assert again[1] & 0x08  # DUP
        assert mqtt.parse_publish(again[1], again[2])[5] == pid  # same packet id
        assert mqtt.parse_publish(again[1], again[2])[1] == b"payload"
        assert client.session_present is True
        runner.cancel()
        broker.stop()

    run_async(main)


def test_qos1_published_while_offline_is_sent_on_connect():
    async def main():
        broker = FakeBroker()
        client, hal = _client(broker)
        hal.wifi = False
        runner = asyncio.create_task(client.run())
        pid = await client.publish("a/b", b"later", qos=1)
        assert await client.publish("a/c", b"qos0") is False  # QoS 0 is dropped while offline
        await asyncio.sleep(0.05)
        assert not broker.conns
        hal.wifi = True
        assert await _until(lambda: client.connected and client.inflight() == 0)
        published = broker.conn.of_type(mqtt.PUBLISH)
        assert len(published) == 1
        assert mqtt.parse_publish(published[0][1], published[0][2])[5] == pid
        runner.cancel()
        broker.stop()

    run_async(main)


def test_keepalive_pings_when_idle():
    async def main():
        broker = FakeBroker()
        client, _ = _client(broker, keepalive=1)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        assert await _until(lambda: len(broker.conn.of_type(mqtt.PINGREQ)) >= 2, 3.0)
        assert client.stats["pongs"] >= 1
        assert len(broker.conns) == 1  # the link stayed up
        runner.cancel()
        broker.stop()

    run_async(main)


def test_dead_link_detected_and_reconnected():
    async def main():
        broker = FakeBroker()
        broker.answer_pings = False  # half-open: the broker never answers
        client, _ = _client(broker, keepalive=1)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        assert await _until(lambda: len(broker.conns) >= 2, 4.0)
        assert "keep-alive" in client.last_reason
        assert broker.conns[0].closed  # closed without DISCONNECT
        assert not broker.conns[0].of_type(mqtt.DISCONNECT)
        runner.cancel()
        broker.stop()

    run_async(main)


def test_wifi_loss_drops_socket_without_disconnect():
    async def main():
        broker = FakeBroker()
        client, hal = _client(broker)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        hal.wifi = False
        assert await _until(lambda: not client.connected, 3.0)
        assert broker.conn.closed
        assert not broker.conn.of_type(mqtt.DISCONNECT)
        hal.wifi = True
        assert await _until(lambda: client.connected and len(broker.conns) == 2, 4.0)
        runner.cancel()
        broker.stop()

    run_async(main)


def test_incoming_qos1_acked_only_by_application():
    async def main():
        broker = FakeBroker()
        client, _ = _client(broker)
        got = []
        client.on_message = lambda topic, payload, retain, token: got.append((topic, token))
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        broker.publish("c/relay", b"{}", qos=1, pid=77)
        assert await _until(lambda: got)
        await asyncio.sleep(0.05)
        assert not broker.conn.of_type(mqtt.PUBACK)
        assert await client.ack(got[0][1])
        assert await _until(lambda: broker.conn.of_type(mqtt.PUBACK))
        assert mqtt.parse_pid(broker.conn.of_type(mqtt.PUBACK)[0][2]) == 77
        runner.cancel()
        broker.stop()

    run_async(main)


def test_stale_ack_after_reconnect_is_not_sent():
    async def main():
        broker = FakeBroker()
        client, _ = _client(broker)
        got = []
        client.on_message = lambda topic, payload, retain, token: got.append(token)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        broker.publish("c/relay", b"{}", qos=1, pid=5)
        assert await _until(lambda: got)
        broker.cut()
        assert await _until(lambda: len(broker.conns) == 2 and client.connected)
        assert await client.ack(got[0]) is False  # pid 5 belongs to the dead connection
        runner.cancel()
        broker.stop()

    run_async(main)


def test_subscribe_and_refused_connect():
    async def main():
        broker = FakeBroker()
        client, _ = _client(broker)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        codes = await client.subscribe([("x/+", 1)])
        assert codes == [1]
        runner.cancel()
        client.abort()
        broker.stop()

        refusing = FakeBroker()
        refusing.refuse = 5
        client2, _ = _client(refusing)
        runner2 = asyncio.create_task(client2.run())
        assert await _until(lambda: len(refusing.conns) >= 2)
        assert "not authorized" in client2.last_reason
        assert not client2.connected
        runner2.cancel()
        refusing.stop()

    run_async(main)


# --------------------------------------------------------------------------- issue 15 defects


def test_oversize_publish_with_long_topic_is_skipped_cleanly():
    """A topic longer than what is kept must not break parsing (a poison message)."""

    async def main():
        pipe = Pipe()
        topic = "homesync/h/nodes/n/command/" + "x" * 600
        big = mqtt.encode_publish(topic, b'{"request_id": "r-9", "pad": "' + b"z" * 3000, 1, pid=9)
        pipe.feed(big + b"\xd0\x00")
        ptype, flags, info = await mqtt.read_packet(pipe, max_size=1000)
        assert ptype == mqtt.PUBLISH
        assert flags & mqtt.OVERSIZE
        assert info.topic is None  # too long to keep
        assert info.pid == 9  # still acknowledgeable
        assert info.size > 3000
        assert (await mqtt.read_packet(pipe))[0] == mqtt.PINGRESP

    run_async(main)


def test_oversize_packet_shorter_than_kept_prefix_reads_only_itself():
    """An oversize body shorter than 512 bytes (a CONNACK read with a 64-byte limit)."""

    async def main():
        pipe = Pipe()
        pipe.feed(mqtt.encode_publish("t/x", b"y" * 100, qos=1, pid=4) + b"\xd0\x00")
        ptype, flags, info = await mqtt.read_packet(pipe, max_size=64)
        assert ptype == mqtt.PUBLISH
        assert flags & mqtt.OVERSIZE
        assert info.topic == "t/x"
        assert info.pid == 4
        assert info.head == b"y" * 100
        assert (await mqtt.read_packet(pipe, max_size=64))[0] == mqtt.PINGRESP

    run_async(main)


def test_first_send_of_message_queued_offline_has_no_dup():
    """MQTT 3.1.1 section 3.3.1.1: DUP is 0 on the first attempt to send a PUBLISH."""

    async def main():
        broker = FakeBroker()
        client, hal = _client(broker)
        hal.wifi = False
        runner = asyncio.create_task(client.run())
        await client.publish("a/b", b"queued while offline", qos=1)
        hal.wifi = True
        assert await _until(lambda: client.connected and client.inflight() == 0)
        sent = broker.conn.of_type(mqtt.PUBLISH)
        assert len(sent) == 1
        assert not sent[0][1] & 0x08
        runner.cancel()
        broker.stop()

    run_async(main)


def test_pubacks_follow_order_of_receipt():
    """MQTT-4.6.0-2: a handler error or an oversize message is not acknowledged before the
    earlier message the application still holds."""

    async def main():
        broker = FakeBroker()
        client, _ = _client(broker)
        client.max_packet = 1000
        held = []
        acks = []

        def on_message(topic, payload, retain, token):
            if topic == "c/boom":
                raise RuntimeError("handler bug")
            if isinstance(payload, mqtt.Oversize):
                acks.append(asyncio.create_task(client.ack(token)))  # the app answers at once
                return
            held.append(token)

        client.on_message = on_message
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)
        broker.publish("c/relay", b"{}", qos=1, pid=1)
        broker.publish("c/boom", b"{}", qos=1, pid=2)
        broker.publish("c/big", b"z" * 2000, qos=1, pid=3)
        assert await _until(lambda: held)
        await asyncio.sleep(0.1)
        assert broker.conn.of_type(mqtt.PUBACK) == []  # 2 and 3 wait for 1
        await client.ack(held[0])
        assert await _until(lambda: len(broker.conn.of_type(mqtt.PUBACK)) == 3)
        order = [mqtt.parse_pid(p[2]) for p in broker.conn.of_type(mqtt.PUBACK)]
        assert order == [1, 2, 3]
        runner.cancel()
        broker.stop()

    run_async(main)


def test_backoff_resets_once_connection_proves_healthy():
    async def main():
        broker = FakeBroker()
        broker.refuse = 3  # server unavailable: the outage
        client, _ = _client(broker)
        client.stable_ms = 60000
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.fails >= 3)
        broker.refuse = 0
        assert await _until(lambda: client.connected)
        await client.subscribe([("x/+", 1)])
        await client.publish("x/birth", b"1", qos=1)  # one round trip: PUBACK
        assert await _until(lambda: client.fails == 0)
        runner.cancel()
        broker.stop()

    run_async(main)


def test_bad_credentials_back_off_further_and_are_logged_once():
    async def main():
        broker = FakeBroker()
        broker.refuse = 5
        client, hal = _client(broker)
        client.auth_backoff_cap = 0.4
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: len(broker.conns) >= 6, 5.0)
        assert client.refused == 5
        assert client.last_delay > client.backoff_cap  # backs off beyond the normal cap
        refusals = [line for line in hal.logs if "not authorized" in line]
        assert len(refusals) == 1, hal.logs
        assert "credentials" in refusals[0]
        broker.refuse = 4  # a change is logged again
        assert await _until(lambda: client.refused == 4, 3.0)
        assert len([line for line in hal.logs if "bad user name" in line]) == 1
        broker.refuse = 0
        assert await _until(lambda: client.connected, 3.0)
        assert client.refused is None
        runner.cancel()
        broker.stop()

    run_async(main)


def test_outgoing_window_waits_instead_of_dropping():
    async def main():
        broker = FakeBroker()
        broker.auto_puback = False
        client, hal = _client(broker)
        runner = asyncio.create_task(client.run())
        assert await _until(lambda: client.connected)

        async def burst():
            for i in range(3 * client.max_inflight):
                await client.publish("r/{}".format(i), b"x", qos=1)

        sender = asyncio.create_task(burst())
        await asyncio.sleep(0.1)
        assert client.inflight() == client.max_inflight
        for _ in range(10):
            broker.ack_all()
            await asyncio.sleep(0.02)
        assert await _until(lambda: sender.done())
        broker.ack_all()
        assert await _until(lambda: client.inflight() == 0)
        topics = [mqtt.parse_publish(p[1], p[2])[0] for p in broker.conn.of_type(mqtt.PUBLISH)]
        assert topics == ["r/{}".format(i) for i in range(3 * client.max_inflight)]
        assert not [line for line in hal.logs if "dropped" in line]
        runner.cancel()
        broker.stop()

    run_async(main)


def test_error_descriptions_are_one_readable_line():
    text = "\nThe certificate is not correctly signed by the trusted CA\n"
    assert mqtt.describe(ValueError(text)) == (
        "ValueError: The certificate is not correctly signed by the trusted CA"
    )
    assert mqtt.describe(ValueError()) == "ValueError"
    tls = mqtt.describe_connect_error(ValueError(text), True)
    assert tls.startswith("TLS handshake refused")
    assert "not correctly signed" in tls
    assert "-9984" in mqtt.describe_connect_error(OSError(-9984), True)
    assert "certificate verification failed" in mqtt.describe_connect_error(OSError(-9984), True)
