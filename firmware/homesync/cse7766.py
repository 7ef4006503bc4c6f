"""CSE7766 energy-meter frames (Sonoff POW R2 / S31 class plugs): parse and, for the simulator,
encode.

The chip streams a 24-byte frame about every 50 ms on UART 4800 baud 8E1:

====  ==========================================================
0     state: 0x55 normal, 0xAA not calibrated, 0xFx flags (bit3 voltage, bit2 current cycle
      out of range, bit1 power cycle out of range = no load, bit0 coefficient storage error)
1     0x5A
2-4   voltage coefficient    5-7   voltage cycle   (V = coefficient / cycle)
8-10  current coefficient    11-13 current cycle   (A = coefficient / cycle)
14-16 power coefficient      17-19 power cycle     (W = coefficient / cycle)
20    update flags: bit6 voltage, bit5 current, bit4 power measured this frame
21-22 CF pulse counter (16 bit, wraps); one pulse = power coefficient / 3.6e9 Wh
23    checksum: low byte of the sum of bytes 2..22
====  ==========================================================

Energy is counted in integer pulses so float32 rounding on the ESP32 never loses increments.
Pure code, no I/O: the HAL feeds bytes from ``machine.UART`` (device) or from the simulator.
"""

FRAME_LEN = 24
_MIN_CURRENT = 0.05  # A; the datasheet's lower measuring limit


def _u24(buf, i):
    return (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]


def _put24(buf, i, value):
    value = int(value)
    value = max(value, 0)
    value = min(value, 0xFFFFFF)
    buf[i] = (value >> 16) & 0xFF
    buf[i + 1] = (value >> 8) & 0xFF
    buf[i + 2] = value & 0xFF


def checksum(frame):
    total = 0
    for i in range(2, FRAME_LEN - 1):
        total += frame[i]
    return total & 0xFF


def parse_frame(frame):
    """One checked frame -> dict (voltage, current, power, power_factor, cf) or ``None``.

    ``current`` and ``power_factor`` are ``None`` when the chip cannot measure them (a load
    below its current floor; no power factor without load).
    """
    if len(frame) != FRAME_LEN or frame[1] != 0x5A or checksum(frame) != frame[23]:
        return None
    head = frame[0]
    if head == 0xAA:
        return None
    no_load = False
    if head != 0x55:
        if head & 0xF0 != 0xF0 or head & 0x0D:
            return None  # voltage/current cycle out of range or coefficient storage error
        no_load = bool(head & 0x02)
    adj = frame[20]
    out = {"cf": (frame[21] << 8) | frame[22], "power_coeff": _u24(frame, 14)}
    voltage = 0.0
    if adj & 0x40:
        cycle = _u24(frame, 5)
        if cycle:
            voltage = _u24(frame, 2) / cycle
        out["voltage"] = voltage
    power = 0.0
    if not no_load and adj & 0x10:
        cycle = _u24(frame, 17)
        if cycle:
            power = _u24(frame, 14) / cycle
    out["power"] = power
    # Below the chip's current floor it measures no current cycle, so neither current nor
    # power factor is known: say so (None) rather than 0 A next to a real power reading.
    out["current"] = None
    out["power_factor"] = None
    if power == 0:
        out["current"] = 0.0  # no load: no current; a power factor is undefined
    elif adj & 0x20 and voltage > 1.0 and power / voltage > _MIN_CURRENT:
        cycle = _u24(frame, 11)
        if cycle:
            current = _u24(frame, 8) / cycle
            out["current"] = current
            apparent = voltage * current
            if apparent > 0:
                pf = power / apparent
                out["power_factor"] = pf if pf <= 1.0 else 1.0
    return out


class Parser:
    """Byte-stream reassembly with resynchronisation, plus 16-bit CF pulse accumulation."""

    def __init__(self):
        self._buf = b""
        self.frames = 0
        self.errors = 0
        self.pulses = 0  # CF pulses counted since this parser started
        self._last_cf = None
        self.last = None

    def feed(self, data):
        """Consume bytes; returns the newest valid reading in them (or ``None``)."""
        buf = self._buf + bytes(data)
        pos = 0
        newest = None
        while len(buf) - pos >= FRAME_LEN:
            head = buf[pos]
            if buf[pos + 1] != 0x5A or not (head in (0x55, 0xAA) or head & 0xF0 == 0xF0):
                pos += 1
                continue
            frame = buf[pos : pos + FRAME_LEN]
            reading = parse_frame(frame)
            if reading is None:
                self.errors += 1
                if checksum(frame) != frame[23]:
                    pos += 1  # misaligned or corrupted: resynchronise byte by byte
                    continue
            else:
                self.frames += 1
                self._count(reading["cf"])
                newest = reading
            pos += FRAME_LEN
        self._buf = buf[pos:]  # less than one frame: the start of the next one
        if newest is not None:
            self.last = newest
        return newest

    def _count(self, cf):
        if self._last_cf is not None:
            self.pulses += (cf - self._last_cf) & 0xFFFF
        self._last_cf = cf

    def energy_wh(self, power_coeff):
        return self.pulses * power_coeff / 3.6e9


def encode_frame(voltage, current, power, cf, coeffs=(194720, 16206, 5116280)):
    """Build the frame a CSE7766 would send for these values (simulator and tests)."""
    v_coeff, i_coeff, p_coeff = coeffs
    frame = bytearray(FRAME_LEN)
    frame[0] = 0x55
    frame[1] = 0x5A
    _put24(frame, 2, v_coeff)
    _put24(frame, 8, i_coeff)
    _put24(frame, 14, p_coeff)
    adj = 0
    if voltage > 1.0:
        adj |= 0x40
        _put24(frame, 5, round(v_coeff / voltage))
    if current >= _MIN_CURRENT:
        adj |= 0x20
        _put24(frame, 11, round(i_coeff / current))
    if power >= 0.5:
        adj |= 0x10
        _put24(frame, 17, round(p_coeff / power))
    else:
        frame[0] = 0xF2  # power cycle out of range: the chip's way of saying "no load"
    frame[20] = adj
    cf &= 0xFFFF
    frame[21] = cf >> 8
    frame[22] = cf & 0xFF
    frame[23] = checksum(frame)
    return bytes(frame)


class MeterError(Exception):
    """No usable reading this cycle (silent UART, bad frames, chip error)."""


class Meter:
    """A CSE7766 on a byte source (``machine.UART.read`` or the simulator) -> readings.

    ``read()`` returns ``(values, energy_wh)``: the newest frame's metrics and the energy counted
    (CF pulses) since the previous call.  Raises ``MeterError`` when no valid frame arrived.
    """

    def __init__(self, read_bytes):
        self._read = read_bytes
        self.parser = Parser()
        self._pulses = 0

    def read(self):
        data = self._read()
        reading = self.parser.feed(data) if data else None
        if reading is None:
            raise MeterError("no valid CSE7766 frame")
        pulses = self.parser.pulses
        energy_wh = (pulses - self._pulses) * reading["power_coeff"] / 3.6e9
        self._pulses = pulses
        values = {}
        for key in ("power", "voltage", "current", "power_factor"):
            if key in reading:
                values[key] = reading[key]
        return values, energy_wh
