"""A small asyncio MQTT 3.1.1 client (our own; runs on MicroPython and CPython).

What HomeSync nodes need and nothing more:

* CONNECT with a retained QoS 1 will, ``clean_session`` false, a stable client id, keep-alive,
  optional username/password and TLS; TCP_NODELAY where the port allows.
* Keep-alive: PINGREQ when either direction has been idle for half the keep-alive; the link is
  declared dead when nothing arrived for a whole keep-alive, when Wi-Fi is down, or when a
  PUBACK is overdue.  A dead link is closed without DISCONNECT (that is what the LWT is for).
* QoS 0/1 publish; QoS 1 stays in flight until PUBACK and is re-sent after a reconnect
  (MQTT-4.4.0-1), with DUP only when it had been sent before (DUP is 0 on a first attempt,
  MQTT 3.1.1 section 3.3.1.1).  At most ``max_inflight`` are in flight: while connected a
  publisher waits for room (back-pressure, nothing dropped); while offline the oldest message,
  preferably one superseded by a newer message on the same topic, makes room.
* Incoming QoS 1 is acknowledged by the application *after* it handled the message
  (``ack(token)``), so a crash before that makes the broker deliver it again.  PUBACKs leave in
  the order the messages arrived (MQTT-4.6.0-2), whatever order the application finishes in.
  With ``max_unacked`` messages not yet acknowledged the client stops reading (bounded memory
  whatever the broker sends), except while its own window waits for PUBACKs.
* A packet larger than ``max_packet`` is read and skipped in bounded memory; a PUBLISH is still
  handed to the application as an ``Oversize`` (topic, packet id, size, first bytes) so it can be
  answered and acknowledged: a message the node cannot take never breaks the link.
* SUBSCRIBE on demand (the application subscribes on every connect: a session can exist without
  subscriptions).
* Reconnect forever with randomized exponential backoff: the n-th retry waits a uniformly random
  time in [c/2, c] with c = min(cap, base * 2**n); the count resets once a connection proved
  healthy (SUBACK received, then a PUBACK or PINGRESP: a full round trip) or stayed up for
  ``stable_s``.  A broker refusing our credentials (CONNACK 4/5) is retried with a longer cap
  (``auth_backoff_cap``) and logged once per change, not once per attempt.

The HAL supplies the clock (``ticks_ms``/``ticks_diff``), ``random()``, ``wifi_connected()``,
``wifi_connect()`` and ``log()``.
"""

from array import array
import asyncio

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
OVERSIZE = 0x100  # flag added by read_packet when a packet was larger than allowed
TOPIC_KEEP = 512  # an oversize PUBLISH keeps its topic up to this length
HEAD_KEEP = 256  # ... and this many payload bytes (enough to find a request id)
AUTH_REFUSALS = (4, 5)
# Received QoS 1 messages not yet acknowledged (held, or handled and waiting for an earlier one
# to be acknowledged first); beyond, the link is dropped and the broker delivers them again.
MAX_UNACKED_TOTAL = 1024
# mbedTLS error codes as MicroPython may report them (when the port has no error strings).
TLS_ERRORS = {
    -9984: "certificate verification failed (wrong CA, host name or an expired certificate)",
    -30592: "the broker sent a fatal TLS alert",
    -29312: "the broker closed the connection during the handshake",
    -26880: "no common TLS version or cipher",
}

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTError(Exception):
    pass


class Oversize:
    """What is kept of a PUBLISH larger than ``max_packet``: ``topic`` (``None`` when longer than
    ``TOPIC_KEEP`` or not UTF-8), ``pid``, payload ``size`` and its first ``head`` bytes."""

    def __init__(self, topic, pid, size, head):
        self.topic = topic
        self.pid = pid
        self.size = size
        self.head = head


# --------------------------------------------------------------------------- framing


def encode_varint(value):
    if value < 0 or value > 268435455:
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf, pos=0):
    """Decode a remaining-length field at ``buf[pos:]`` -> ``(value, next_pos)``."""
    value = 0
    shift = 0
    for _ in range(4):
        if pos >= len(buf):
            raise ValueError("truncated remaining length")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("malformed remaining length")


def _utf8(text):
    data = text.encode() if isinstance(text, str) else bytes(text)
    if len(data) > 65535:
        raise ValueError("string too long")
    return bytes((len(data) >> 8, len(data) & 0xFF)) + data


def _u16(value):
    return bytes((value >> 8, value & 0xFF))


def packet(ptype, flags, body):
    return bytes(((ptype << 4) | flags,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id, keepalive, clean_session=False, will=None, username=None, password=None
):
    """``will`` is ``(topic, payload, qos, retain)`` or ``None``."""
    flags = 0
    if clean_session:
        flags |= 0x02
    payload = _utf8(client_id)
    if will is not None:
        w_topic, w_payload, w_qos, w_retain = will
        flags |= 0x04 | (w_qos << 3)
        if w_retain:
            flags |= 0x20
        payload += _utf8(w_topic) + _utf8(w_payload)
    if username:
        flags |= 0x80
        payload += _utf8(username)
        if password:
            flags |= 0x40
            payload += _utf8(password)
    body = _utf8("MQTT") + bytes((4, flags)) + _u16(keepalive) + payload
    return packet(CONNECT, 0, body)


def encode_publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = _utf8(topic)
    if qos:
        body += _u16(pid)
    return packet(PUBLISH, flags, body + bytes(payload))


def set_dup(pkt):
    return bytes((pkt[0] | 0x08,)) + pkt[1:]


def encode_subscribe(pid, topics):
    body = _u16(pid)
    for name, qos in topics:
        body += _utf8(name) + bytes((qos,))
    return packet(SUBSCRIBE, 0x02, body)


def encode_puback(pid):
    return packet(PUBACK, 0, _u16(pid))


def parse_connack(body):
    """-> ``(session_present, return_code)``."""
    if len(body) != 2:
        raise MQTTError("bad CONNACK")
    return bool(body[0] & 0x01), body[1]


def parse_pid(body):
    if len(body) < 2:
        raise MQTTError("short packet")
    return (body[0] << 8) | body[1]


def parse_publish(flags, body):
    """-> ``(topic, payload, qos, retain, dup, pid)``; pid is 0 for QoS 0."""
    if len(body) < 2:
        raise MQTTError("short PUBLISH")
    tlen = (body[0] << 8) | body[1]
    if len(body) < 2 + tlen:
        raise MQTTError("short PUBLISH topic")
    topic = str(bytes(body[2 : 2 + tlen]), "utf-8")
    pos = 2 + tlen
    qos = (flags >> 1) & 0x03
    pid = 0
    if qos:
        if len(body) < pos + 2:
            raise MQTTError("short PUBLISH packet id")
        pid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    return topic, bytes(body[pos:]), qos, bool(flags & 0x01), bool(flags & 0x08), pid


def parse_suback(body):
    return parse_pid(body), list(body[2:])


def split_packets(data):
    """Split a byte string into complete packets -> ``(list of (type, flags, body), rest)``."""
    out = []
    pos = 0
    while pos < len(data):
        try:
            length, body_at = decode_varint(data, pos + 1)
        except ValueError:
            break
        if body_at + length > len(data):
            break
        out.append((data[pos] >> 4, data[pos] & 0x0F, bytes(data[body_at : body_at + length])))
        pos = body_at + length
    return out, bytes(data[pos:])


async def _skip(reader, count):
    while count > 0:
        chunk = 1024 if count > 1024 else count
        await reader.readexactly(chunk)
        count -= chunk


async def read_packet(reader, max_size=16384):
    """Read one packet -> ``(type, flags, body)``.

    A body above ``max_size`` is read and discarded in chunks of at most 1 KiB (never more than
    the packet holds) and ``OVERSIZE`` is or-ed into ``flags``; the body is then ``b""``, or an
    ``Oversize`` for a PUBLISH, so it can still be answered and acknowledged.
    """
    head = await reader.readexactly(1)
    length = 0
    shift = 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    else:
        raise MQTTError("malformed remaining length")
    ptype = head[0] >> 4
    flags = head[0] & 0x0F
    if length <= max_size:
        body = await reader.readexactly(length) if length else b""
        return ptype, flags, body
    if ptype != PUBLISH:
        await _skip(reader, length)
        return ptype, flags | OVERSIZE, b""
    return ptype, flags | OVERSIZE, await _read_oversize_publish(reader, flags, length)


async def _read_oversize_publish(reader, flags, left):
    if left < 2:
        await _skip(reader, left)
        return Oversize(None, 0, 0, b"")
    raw = await reader.readexactly(2)
    left -= 2
    tlen = (raw[0] << 8) | raw[1]
    if tlen > left:
        await _skip(reader, left)
        return Oversize(None, 0, 0, b"")
    topic = None
    if tlen <= TOPIC_KEEP:
        try:
            topic = str(await reader.readexactly(tlen), "utf-8")
        except UnicodeError:
            topic = None
    else:
        await _skip(reader, tlen)
    left -= tlen
    pid = 0
    if (flags >> 1) & 0x03 and left >= 2:
        raw = await reader.readexactly(2)
        pid = (raw[0] << 8) | raw[1]
        left -= 2
    size = left
    keep = HEAD_KEEP if left > HEAD_KEEP else left
    head = await reader.readexactly(keep) if keep else b""
    await _skip(reader, left - keep)
    return Oversize(topic, pid, size, head)


# --------------------------------------------------------------------------- transport


def set_nodelay(writer):
    """Disable Nagle on the stream's socket when the port allows it (ESP32, unix, CPython)."""
    sock = getattr(writer, "s", None)  # MicroPython asyncio.Stream
    if sock is None:
        try:
            sock = writer.get_extra_info("socket")
        except Exception:
            sock = None
    if sock is None:
        return False
    try:
        import socket

        level = getattr(socket, "IPPROTO_TCP", 6)
        option = getattr(socket, "TCP_NODELAY", 1)
        sock.setsockopt(level, option, 1)
        return True
    except Exception:
        return False


async def open_tcp(host, port, ssl=None):
    if ssl is not None:
        return await asyncio.open_connection(host, port, ssl=ssl, server_hostname=host)
    return await asyncio.open_connection(host, port)


def close_stream(writer):
    """Close without any MQTT goodbye (MicroPython's ``Stream.close`` does nothing)."""
    try:
        sock = getattr(writer, "s", None)
        if sock is not None:
            sock.close()
        else:
            writer.close()
    except Exception:
        pass


def pem_to_der(data):
    """First certificate of a PEM file as DER (MicroPython's mbedTLS loader wants DER)."""
    begin = b"-----BEGIN CERTIFICATE-----"
    start = data.find(begin)
    if start < 0:
        return data  # already DER
    end = data.find(b"-----END CERTIFICATE-----", start)
    if end < 0:
        raise ValueError("truncated PEM certificate")
    import binascii

    body = data[start + len(begin) : end].replace(b"\r", b"").replace(b"\n", b"")
    return binascii.a2b_base64(body)


def tls_context(ca_file=None, insecure=False):
    """Client TLS context that verifies the broker against ``ca_file`` (PEM or DER).

    The ESP32 has no system CA store, so TLS without ``ca_file`` is refused unless ``insecure``
    is set explicitly (then the broker is NOT authenticated).
    """
    import ssl

    cadata = None
    if ca_file:
        with open(ca_file, "rb") as handle:
            cadata = pem_to_der(handle.read())
    elif not insecure:
        raise ValueError("mqtt.tls needs mqtt.ca_file (or tls_insecure: true)")
    if hasattr(ssl, "create_default_context"):  # CPython
        ctx = ssl.create_default_context(cadata=cadata)
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=cadata)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def backoff_delay(fails, rand, base=1.0, cap=60.0):
    """Delay before retry ``fails`` (0-based): uniform in [c/2, c], c = min(cap, base * 2**n)."""
    ceiling = base * (1 << (fails if fails < 16 else 16))
    ceiling = min(ceiling, cap)
    return ceiling * (0.5 + 0.5 * rand)


# --------------------------------------------------------------------------- client


class MQTTClient:
    def __init__(
        self,
        hal,
        client_id,
        host,
        port=1883,
        keepalive=60,
        username=None,
        password=None,
        will=None,
        clean_session=False,
        ssl=None,
        opener=None,
        backoff_base=1.0,
        backoff_cap=60.0,
        auth_backoff_cap=600.0,
        stable_s=60,
        max_inflight=16,
        io_timeout=10.0,
        max_packet=16384,
        brokers=None,
        max_unacked=32,
    ):
        self._hal = hal
        self.client_id = client_id
        # ``brokers``: [(host, port), ...]; the client moves to the next one after a failed
        # connect or a dropped link (a cluster's members, or a primary and a standby).
        self.brokers = list(brokers) if brokers else [(host, port)]
        self.broker_index = 0
        self.host, self.port = self.brokers[0]
        self.keepalive = keepalive
        self._username = username
        self._password = password
        self.will = will
        self.clean_session = clean_session
        self._ssl = ssl
        self._open = opener or open_tcp
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.auth_backoff_cap = auth_backoff_cap
        self.stable_ms = int(stable_s * 1000)
        self.max_inflight = max_inflight
        self.io_timeout = io_timeout
        self.ack_timeout_ms = int(io_timeout * 2000)
        self.max_packet = max_packet
        self.max_unacked = max_unacked
        self.on_connect = None  # async callable(session_present)
        self.on_message = None  # callable(topic, payload, retain, token)
        self.connected = False
        self.stopping = False
        self.session_present = None
        self.gen = 0
        self.fails = 0
        self.last_reason = None
        self.last_delay = 0.0
        self.refused = None  # CONNACK return code of the last refusal; None once accepted
        self._refusal_logged = None
        self._sub_gen = 0  # connection generation whose SUBSCRIBE was granted
        self.stats = {"connects": 0, "drops": 0, "pings": 0, "pongs": 0, "resent": 0, "rx_peak": 0}
        self._reader = None
        self._writer = None
        self._tasks = []
        self._inflight = {}  # pid -> [packet, ticks when sent or None, topic, ever sent]
        # QoS 1 messages received on this connection and not yet acknowledged, in order: pid
        # while the application holds it, -pid once handled.  A ring allocated once (small
        # ints, no allocation per message: a burst must not fragment the heap).
        self._rx = array("i", bytes(4 * MAX_UNACKED_TOTAL))
        self._rx_head = 0
        self._rx_len = 0
        self._held = 0  # how many of them the application holds
        self._order = []  # in-flight pids, oldest first (dicts are unordered on MicroPython)
        self._subacks = {}  # pid -> None (waiting) or list of return codes
        self._pid = 0
        self._lost = asyncio.Event()
        self._wlock = asyncio.Lock()
        now = hal.ticks_ms()
        self._last_rx = now
        self._last_tx = now
        self._last_ping = now
        self.down_since = now

    # ----------------------------------------------------------------- public API

    def inflight(self):
        return len(self._order)

    async def run(self):
        """Connection supervisor: connect, wait for loss, back off, repeat until stopped."""
        hal = self._hal
        while not self.stopping:
            if not hal.wifi_connected():
                hal.wifi_connect()
                await asyncio.sleep(1)
                continue
            up_at = None
            try:
                await self._connect_once()
                up_at = hal.ticks_ms()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                tls = self._ssl is not None
                self._drop("connect failed: {}".format(describe_connect_error(err, tls)))
            if up_at is not None:
                await self._lost.wait()
                if self.stopping:
                    break
                if hal.ticks_diff(hal.ticks_ms(), up_at) >= self.stable_ms:
                    self.fails = 0
            cap = self.backoff_cap
            quiet = False
            if self.refused in AUTH_REFUSALS:
                cap = max(cap, self.auth_backoff_cap)
                quiet = self._log_refusal(cap)
            else:
                self._refusal_logged = None
            self._next_broker()
            delay = backoff_delay(self.fails, hal.random(), self.backoff_base, cap)
            self.last_delay = delay
            self.fails += 1
            if not quiet:
                where = ""
                if len(self.brokers) > 1:
                    where = " at {}:{}".format(self.host, self.port)
                hal.log(
                    "mqtt: retry in {} ms{} ({})".format(int(delay * 1000), where, self.last_reason)
                )
            await asyncio.sleep(delay)

    def _log_refusal(self, cap):
        """Log a credentials refusal once per change (the serial console shows it); the LED
        pattern comes from the app.  The retries themselves stay quiet."""
        if self._refusal_logged == self.refused:
            return True
        self._refusal_logged = self.refused
        cap = int(cap) if cap >= 1 else cap
        self._hal.log(
            "mqtt: broker {}:{} refused our credentials ({}): check mqtt.username and "
            "mqtt.password in config.json; retrying with backoff up to {} s".format(
                self.host, self.port, CONNACK_CODES.get(self.refused), cap
            )
        )
        return True

    async def publish(self, topic, payload, qos=0, retain=False):
        """QoS 0: send now if connected (returns success).  QoS 1: queue in flight, send if
        connected, re-send after reconnect until PUBACK; returns the packet id."""
        if qos == 0:
            if not self.connected:
                return False
            return await self._send_or_drop(encode_publish(topic, payload, 0, retain))
        while self.connected and len(self._order) >= self.max_inflight:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # back-pressure: PUBACKs make room (or the link dies)
        pid = self._new_pid()
        pkt = encode_publish(topic, payload, 1, retain, pid)
        if len(self._order) >= self.max_inflight:
            self._make_room(topic)
        entry = [pkt, None, topic, False]
        self._inflight[pid] = entry
        self._order.append(pid)
        if self.connected:
            entry[1] = self._hal.ticks_ms()
            entry[3] = True
            await self._send_or_drop(pkt)
        return pid

    def _make_room(self, topic):
        """Offline and the window is full: drop the oldest message on ``topic`` (superseded by
        the new one), else the oldest message."""
        victim = self._order[0]
        for pid in self._order:
            if self._inflight[pid][2] == topic:
                victim = pid
                break
        self._order.remove(victim)
        entry = self._inflight.pop(victim)
        if entry[2] != topic:
            self._hal.log("mqtt: offline queue full, dropped a message on {}".format(entry[2]))

    async def wait_acked(self, pid, timeout):
        """True once ``pid`` has been acknowledged (False on timeout)."""
        hal = self._hal
        start = hal.ticks_ms()
        while pid in self._inflight:
            if hal.ticks_diff(hal.ticks_ms(), start) > timeout * 1000:
                return False
            await asyncio.sleep(0.01)
        return True

    async def subscribe(self, topics, timeout=None):
        """SUBSCRIBE and wait for SUBACK; raises ``MQTTError`` on refusal or timeout."""
        timeout = self.io_timeout if timeout is None else timeout
        pid = self._new_pid()
        self._subacks[pid] = None
        try:
            if not await self._send_or_drop(encode_subscribe(pid, topics)):
                raise MQTTError("subscribe: link lost")
            hal = self._hal
            start = hal.ticks_ms()
            while self._subacks.get(pid) is None:
                if not self.connected:
                    raise MQTTError("subscribe: link lost")
                if hal.ticks_diff(hal.ticks_ms(), start) > timeout * 1000:
                    raise MQTTError("subscribe: no SUBACK")
                await asyncio.sleep(0.01)
            codes = self._subacks[pid]
        finally:
            self._subacks.pop(pid, None)
        for code in codes:
            if code & 0x80:
                raise MQTTError("subscribe refused")
        self._sub_gen = self.gen
        return codes

    async def ack(self, token):
        """Acknowledge an incoming QoS 1 message once the application has handled it.

        PUBACKs go out in the order of receipt: one for a later message waits until every
        earlier one was acknowledged too."""
        if token is None:
            return False
        gen, pid = token
        if gen != self.gen or not self.connected:
            return False  # that connection is gone: the broker will deliver it again
        ring = self._rx
        size = len(ring)
        at = self._rx_head
        for _ in range(self._rx_len):
            if ring[at] == pid:
                break
            at += 1
            if at == size:
                at = 0
        else:
            return False
        ring[at] = -pid
        self._held -= 1
        return await self._flush_acks(gen)

    async def _flush_acks(self, gen):
        ring = self._rx
        ok = True
        while self._rx_len and ring[self._rx_head] < 0 and gen == self.gen:
            done = -ring[self._rx_head]
            self._rx_head = (self._rx_head + 1) % len(ring)
            self._rx_len -= 1
            ok = await self._send_or_drop(encode_puback(done)) and ok
        return ok

    async def disconnect(self):
        """Graceful stop: DISCONNECT (the broker then discards the will) and close."""
        self.stopping = True
        if self.connected:
            await self._send_or_drop(DISCONNECT_PACKET)
        self._drop("disconnect")

    def abort(self, reason="abort"):
        """Close the socket without DISCONNECT (the broker publishes the will)."""
        self._drop(reason)

    def abandon(self):
        """Stop all activity but leave the socket open (a node that reset: the broker sees a
        half-open connection).  Returns the stream so the caller can close it later."""
        self.stopping = True
        writer = self._writer
        self._writer = None
        self._reader = None
        self.connected = False
        self._cancel_tasks()
        self._lost.set()
        return writer

    # ----------------------------------------------------------------- internals

    def _next_broker(self):
        if len(self.brokers) > 1:
            self.broker_index = (self.broker_index + 1) % len(self.brokers)
            self.host, self.port = self.brokers[self.broker_index]

    def _new_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._inflight and self._pid not in self._subacks:
                return self._pid

    def _cancel_tasks(self):
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and not task.done():
                task.cancel()
        self._tasks = []

    def _drop(self, reason):
        self.last_reason = reason
        writer = self._writer
        was_connected = self.connected
        self.connected = False
        self._writer = None
        self._reader = None
        self._cancel_tasks()
        if writer is not None:
            close_stream(writer)
        if was_connected:
            self.stats["drops"] += 1
            self.down_since = self._hal.ticks_ms()
            self._hal.log("mqtt: link down ({})".format(reason))
        self._lost.set()

    async def _send(self, data):
        writer = self._writer
        if writer is None:
            raise OSError("not connected")
        await self._wlock.acquire()
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.io_timeout)
            self._last_tx = self._hal.ticks_ms()
        finally:
            self._wlock.release()

    async def _send_or_drop(self, data):
        if not self.connected:
            return False
        gen = self.gen
        try:
            await self._send(data)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if gen == self.gen and self.connected:
                self._drop("write: {}".format(describe(err)))
            return False

    async def _connect_once(self):
        hal = self._hal
        reader, writer = await asyncio.wait_for(
            self._open(self.host, self.port, self._ssl), self.io_timeout
        )
        nodelay = self._ssl is None and set_nodelay(writer)
        try:
            writer.write(
                encode_connect(
                    self.client_id,
                    self.keepalive,
                    self.clean_session,
                    self.will,
                    self._username,
                    self._password,
                )
            )
            await asyncio.wait_for(writer.drain(), self.io_timeout)
            ptype, _flags, body = await asyncio.wait_for(read_packet(reader, 64), self.io_timeout)
            if ptype != CONNACK:
                raise MQTTError("expected CONNACK, got type {}".format(ptype))
            session_present, code = parse_connack(body)
            if code:
                self.refused = code
                raise MQTTError("refused: {}".format(CONNACK_CODES.get(code, code)))
            self.refused = None
        except BaseException:
            close_stream(writer)
            raise
        self._reader = reader
        self._writer = writer
        self.gen += 1
        gen = self.gen
        self.connected = True
        self.session_present = session_present
        self._rx_head = 0
        self._rx_len = 0
        self._held = 0
        self._lost.clear()
        now = hal.ticks_ms()
        self._last_rx = now
        self._last_tx = now
        self._last_ping = now
        self.stats["connects"] += 1
        hal.log(
            "mqtt: connected to {}:{} as {} session_present={} tls={} nodelay={}".format(
                self.host,
                self.port,
                self.client_id,
                int(session_present),
                int(self._ssl is not None),
                int(bool(nodelay)),
            )
        )
        self._tasks = [
            asyncio.create_task(self._read_loop(gen, reader)),
            asyncio.create_task(self._ping_loop(gen)),
        ]
        for pid in list(self._order):
            entry = self._inflight.get(pid)
            if entry is None:
                continue
            if entry[3]:
                entry[0] = set_dup(entry[0])  # sent before: a re-delivery
                self.stats["resent"] += 1
            entry[1] = hal.ticks_ms()
            entry[3] = True
            if not await self._send_or_drop(entry[0]):
                raise MQTTError("link lost while re-sending")
        if self.on_connect is not None:
            await self.on_connect(session_present)
        if gen != self.gen or not self.connected:
            raise MQTTError("link lost during connect")

    async def _read_loop(self, gen, reader):
        try:
            while True:
                # Flow control: with max_unacked messages held by the application, stop reading
                # (TCP pushes back on the broker, which need not limit what it sends us) -
                # unless our own window is full (PUBACKs must get through) or keep-alive needs
                # the broker's replies; what arrives meanwhile is the application's to shed.
                while (  # noqa: ASYNC110
                    self._held >= self.max_unacked
                    and len(self._order) < self.max_inflight
                    and gen == self.gen
                    and not self._rx_overdue()
                ):
                    await asyncio.sleep(0.002)
                if self._rx_len >= MAX_UNACKED_TOTAL:
                    self._drop("overload: {} messages not acknowledged yet".format(self._rx_len))
                    return
                ptype, flags, body = await read_packet(reader, self.max_packet)
                self._last_rx = self._hal.ticks_ms()
                await self._dispatch(gen, ptype, flags, body)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if gen == self.gen and self.connected:
                why = "closed after DISCONNECT" if self.stopping else describe(err)
                self._drop("read: {}".format(why))

    def _rx_overdue(self):
        """Paused long enough that keep-alive needs the broker's replies: read on (and shed)."""
        if not self.keepalive:
            return False
        hal = self._hal
        return hal.ticks_diff(hal.ticks_ms(), self._last_rx) > self.keepalive * 500

    async def _dispatch(self, gen, ptype, flags, body):
        if ptype == PUBLISH:
            await self._incoming(gen, flags, body)
        elif ptype == PUBACK:
            pid = parse_pid(body)
            if self._inflight.pop(pid, None) is not None:
                self._order.remove(pid)
            self._round_trip(gen)
        elif ptype == SUBACK:
            pid, codes = parse_suback(body)
            if pid in self._subacks:
                self._subacks[pid] = codes
        elif ptype == PINGRESP:
            self.stats["pongs"] += 1
            self._round_trip(gen)

    def _round_trip(self, gen):
        # Subscribed on this connection and a reply came back: the link works end to end,
        # so the next outage starts from the shortest backoff again (jitter stays).
        if self._sub_gen == gen and gen == self.gen:
            self.fails = 0

    async def _incoming(self, gen, flags, body):
        """Hand one PUBLISH to the application; whatever happens, it is acknowledged in order."""
        qos = (flags >> 1) & 0x03
        if flags & OVERSIZE:
            topic, payload, pid, retain = body.topic, body, body.pid, bool(flags & 0x01)
            self._hal.log(
                "mqtt: message of {} bytes on {} exceeds {} bytes".format(
                    body.size, topic or "(long topic)", self.max_packet
                )
            )
        else:
            try:
                topic, payload, qos, retain, _dup, pid = parse_publish(flags & 0x0F, body)
            except Exception as err:  # malformed (e.g. topic not UTF-8): skip it, keep the link
                self._hal.log("mqtt: skipped a malformed PUBLISH: {}".format(describe(err)))
                pid = _publish_pid(flags, body)
                retain = False
                topic = None
                payload = None
        token = None
        if qos == 1 and pid:
            ring = self._rx
            ring[(self._rx_head + self._rx_len) % len(ring)] = pid
            self._rx_len += 1
            self.stats["rx_peak"] = max(self.stats["rx_peak"], self._rx_len)
            self._held += 1
            token = (gen, pid)
        if topic is None or self.on_message is None:
            await self.ack(token)
            return
        try:
            reply = self.on_message(topic, payload, retain, token)
        except Exception as err:
            self._hal.log("mqtt: message handler failed: {}".format(describe(err)))
            reply = ()
        if reply is not None:  # handled on the spot (shed): answer at QoS 0, ack in order
            if reply:
                await self.publish(reply[0], reply[1], 0, False)
            await self.ack(token)

    async def _ping_loop(self, gen):
        hal = self._hal
        keep_ms = self.keepalive * 1000
        half = keep_ms // 2
        tick = self.keepalive / 4 if self.keepalive else 1.0
        tick = 1.0 if tick > 1.0 else tick
        while gen == self.gen and self.connected:
            await asyncio.sleep(tick)
            if gen != self.gen or not self.connected:
                return
            if not hal.wifi_connected():
                self._drop("wifi down")
                return
            now = hal.ticks_ms()
            for pid in self._order:
                sent = self._inflight[pid][1]
                if sent is not None and hal.ticks_diff(now, sent) > self.ack_timeout_ms:
                    self._drop("no PUBACK for packet {}".format(pid))
                    return
            if not keep_ms:
                continue
            if hal.ticks_diff(now, self._last_rx) > keep_ms:
                self._drop("keep-alive: nothing received for {} s".format(self.keepalive))
                return
            idle = (
                hal.ticks_diff(now, self._last_tx) >= half
                or hal.ticks_diff(now, self._last_rx) >= half
            )
            if idle and hal.ticks_diff(now, self._last_ping) >= half:
                self._last_ping = now
                self.stats["pings"] += 1
                await self._send_or_drop(PINGREQ_PACKET)


def _publish_pid(flags, body):
    """The packet id of a (possibly malformed) QoS 1 PUBLISH; 0 when unreadable."""
    if (flags >> 1) & 0x03 != 1 or len(body) < 2:
        return 0
    pos = 2 + ((body[0] << 8) | body[1])
    if len(body) < pos + 2:
        return 0
    return (body[pos] << 8) | body[pos + 1]


def describe(err):
    """``Name: message`` on one line (MicroPython's TLS messages span several lines)."""
    try:
        text = " ".join(str(err).split())
    except Exception:
        text = ""
    name = type(err).__name__
    return "{}: {}".format(name, text) if text else name


def describe_connect_error(err, tls):
    """A connect failure as a reader can act on it; TLS refusals say what was refused."""
    code = err.args[0] if isinstance(err, OSError) and err.args else None
    if tls and isinstance(code, int) and code < 0:
        what = TLS_ERRORS.get(code, "TLS error")
        return "TLS handshake refused: {} (mbedTLS {})".format(what, code)
    name = type(err).__name__
    if tls and (isinstance(err, ValueError) or "SSL" in name):
        return "TLS handshake refused: {}".format(describe(err))
    return describe(err)
