"""CSE7766 frame parsing, resynchronisation and energy counting (both runtimes)."""

from fakes import raises

from homesync import cse7766


def close(a, b, tol):
    return abs(a - b) <= tol


def test_round_trip_values():
    frame = cse7766.encode_frame(230.0, 0.5, 100.0, 1234)
    assert len(frame) == cse7766.FRAME_LEN
    got = cse7766.parse_frame(frame)
    assert close(got["voltage"], 230.0, 0.3)
    assert close(got["current"], 0.5, 0.01)
    assert close(got["power"], 100.0, 0.2)
    assert close(got["power_factor"], 100.0 / (230.0 * 0.5), 0.02)
    assert got["cf"] == 1234


def test_no_load_frame_reports_zero_power():
    frame = cse7766.encode_frame(229.0, 0.0, 0.0, 7)
    assert frame[0] == 0xF2
    got = cse7766.parse_frame(frame)
    assert got["power"] == 0.0
    assert got["current"] == 0.0
    assert got["power_factor"] is None  # undefined without a load
    assert close(got["voltage"], 229.0, 0.3)


def test_load_below_the_current_floor_reports_no_current_rather_than_zero():
    """8.4 W standby: the chip measures power but no current cycle (issue 10 item 10)."""
    frame = cse7766.encode_frame(230.0, 8.4 / 230.0 / 0.6, 8.4, 7)
    got = cse7766.parse_frame(frame)
    assert close(got["power"], 8.4, 0.05)
    assert got["current"] is None  # not 0.000 A next to 8.4 W
    assert got["power_factor"] is None


def test_bad_checksum_and_error_states_rejected():
    frame = bytearray(cse7766.encode_frame(230.0, 1.0, 200.0, 1))
    frame[10] ^= 0x01
    assert cse7766.parse_frame(bytes(frame)) is None
    good = bytearray(cse7766.encode_frame(230.0, 1.0, 200.0, 1))
    good[0] = 0xAA  # not calibrated
    assert cse7766.parse_frame(bytes(good)) is None
    good[0] = 0xF8  # voltage cycle out of range
    assert cse7766.parse_frame(bytes(good)) is None


def test_parser_resyncs_after_garbage_and_split_reads():
    parser = cse7766.Parser()
    frame = cse7766.encode_frame(231.0, 2.0, 440.0, 10)
    stream = b"\x00\x5a\x55\x13" + frame + frame[:7]
    got = parser.feed(stream)
    assert got is not None
    assert close(got["power"], 440.0, 1.0)
    assert parser.feed(frame[7:]) is not None
    assert parser.frames == 2


def test_parser_counts_pulses_across_16_bit_wrap():
    parser = cse7766.Parser()
    parser.feed(cse7766.encode_frame(230.0, 1.0, 200.0, 65530))
    parser.feed(cse7766.encode_frame(230.0, 1.0, 200.0, 4))
    assert parser.pulses == 10


def test_meter_reports_energy_since_last_read():
    chunks = [
        cse7766.encode_frame(230.0, 1.0, 200.0, 100),
        cse7766.encode_frame(230.0, 1.0, 200.0, 800),
        b"",
    ]
    meter = cse7766.Meter(lambda: chunks.pop(0))
    values, wh = meter.read()
    assert wh == 0.0
    assert close(values["power"], 200.0, 0.5)
    values, wh = meter.read()
    assert close(wh, 700 * 5116280 / 3.6e9, 1e-6)
    raises(cse7766.MeterError, meter.read)
