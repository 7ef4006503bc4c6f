"""ESP32 HAL: the only firmware file that imports ``machine``, ``network``, ``esp32``, ``ntptime``.

Hardware (defaults: an ESP32 DevKit wired as in the README; a real plug's pins come from its
Tasmota/ESPHome template and go into ``/config.json``):

* relay on a GPIO (``pins.relay``, ``pins.relay_active_high``)
* button to GND with pull-up (``pins.button``), toggles the relay; debounced in a soft IRQ
* status LED (``pins.led``, ``pins.led_active_low``)
* CSE7766 energy meter on a UART at 4800 baud 8E1 (``meter.uart``, ``meter.rx``); its frames are
  parsed by ``homesync.cse7766`` (``meter.type: "none"`` for a plain relay board)
* Wi-Fi station with the driver's automatic reconnect, plus our rate-limited ``connect()``
* NTP via ``ntptime`` (blocking UDP query, 1 s timeout), RTC in UTC, 2000 epoch handled
* ``machine.WDT`` (cannot be stopped once started: set ``watchdog_s: 0`` while developing)
* ``/config.json`` and ``/state.json`` on LittleFS, written atomically
"""

import binascii
import gc
import os
import random
import time

import machine
import network

from homesync.clock import epoch_offset
from homesync.cse7766 import Meter
from homesync.store import load_json, save_json

CONFIG_PATH = "/config.json"
STATE_PATH = "/state.json"
WIFI_RETRY_MS = 15000
DEBOUNCE_MS = 250


def load_device_config():
    return load_json(CONFIG_PATH, None)


class ESP32HAL:
    ota_supported = True  # application OTA (homesync/ota.py) into slots under /ota
    fs_root = ""  # the LittleFS root: paths are "/" + relative path

    def __init__(self, config):
        pins = config.get("pins") or {}
        self._relay_high = bool(pins.get("relay_active_high", True))
        self._relay = machine.Pin(pins.get("relay", 26), machine.Pin.OUT)
        self._led_low = bool(pins.get("led_active_low", False))
        self._led = machine.Pin(pins.get("led", 2), machine.Pin.OUT)
        self._presses = 0
        self._last_press = time.ticks_ms()
        self._button = machine.Pin(pins.get("button", 0), machine.Pin.IN, machine.Pin.PULL_UP)
        self._button.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._on_button)
        meter = config.get("meter") or {}
        self._meter = None
        if meter.get("type", "cse7766") == "cse7766":
            uart = machine.UART(
                meter.get("uart", 2),
                baudrate=4800,
                bits=8,
                parity=0,  # even
                stop=1,
                rx=meter.get("rx", 16),
                tx=meter.get("tx", 17),
                rxbuf=512,
            )
            self._meter = Meter(uart.read)
        wifi = config.get("wifi") or {}
        self._ssid = wifi.get("ssid")
        self._password = wifi.get("password")
        self._wlan = network.WLAN(network.STA_IF)
        self._wlan.active(True)
        try:
            network.hostname("homesync-" + config.get("node_id", "node"))
        except Exception:
            pass
        self._wifi_tried = None
        self._ntp_host = config.get("ntp_host")
        self._epoch = epoch_offset(time.gmtime)
        self._synced = False
        self._wdt = None

    # ----------------------------------------------------------------- time & randomness

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def now_unix(self):
        return time.time() + self._epoch

    def clock_synced(self):
        return self._synced

    def ntp_sync(self):
        import ntptime

        if self._ntp_host:
            ntptime.host = self._ntp_host
        try:
            ntptime.settime()
        except Exception as err:
            self.log("hal: ntp failed: {}".format(err))
            return False
        self._synced = True
        return True

    def random(self):
        return random.getrandbits(24) / 16777216

    def random_hex(self, nbytes):
        return binascii.hexlify(os.urandom(nbytes // 2 or 1)).decode()[:nbytes]

    # ----------------------------------------------------------------- I/O

    def relay_set(self, on):
        self._relay.value(1 if bool(on) == self._relay_high else 0)

    def led_set(self, on):
        self._led.value(0 if bool(on) == self._led_low else 1)

    def _on_button(self, pin):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last_press) > DEBOUNCE_MS:
            self._last_press = now
            self._presses += 1

    def button_pressed(self):
        if self._presses:
            self._presses -= 1
            return True
        return False

    def read_meter(self, relay_on):
        if self._meter is None:
            values, energy_wh = {}, 0.0
        else:
            values, energy_wh = self._meter.read()
        try:
            import esp32

            values["temperature"] = esp32.mcu_temperature()  # ESP32-S2/S3/C3/C6
        except (ImportError, AttributeError):
            pass
        return values, energy_wh

    def rssi(self):
        if not self._wlan.isconnected():
            return None
        try:
            return self._wlan.status("rssi")
        except Exception:
            return None

    def wifi_connected(self):
        return self._wlan.isconnected()

    def wifi_connect(self):
        """Start (re)connecting at most every 15 s; never blocks."""
        if self._wlan.isconnected() or not self._ssid:
            return
        now = time.ticks_ms()
        if self._wifi_tried is not None and time.ticks_diff(now, self._wifi_tried) < WIFI_RETRY_MS:
            return
        self._wifi_tried = now
        if self._wlan.status() == network.STAT_CONNECTING:
            return
        try:
            self._wlan.connect(self._ssid, self._password)
            self.log("hal: wifi connecting to {}".format(self._ssid))
        except OSError as err:
            self.log("hal: wifi connect failed: {}".format(err))

    def collect_garbage(self):
        gc.collect()

    # ----------------------------------------------------------------- storage

    def load_state(self):
        return load_json(STATE_PATH, {})

    def save_state(self, state):
        save_json(STATE_PATH, state)

    def load_config(self):
        return load_json(CONFIG_PATH, None)

    def save_config(self, config):
        save_json(CONFIG_PATH, config)

    # ----------------------------------------------------------------- watchdog / reset

    def wdt_init(self, timeout_ms):
        self._wdt = machine.WDT(timeout=max(1000, int(timeout_ms)))

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        machine.reset()

    # ----------------------------------------------------------------- fault seams (no-ops)

    async def gate(self, point):
        return None

    def checkpoint(self, point):
        return None

    def log(self, text):
        print("{} {}".format(time.ticks_ms(), text))
