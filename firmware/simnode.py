"""Run simulated HomeSync nodes: the firmware's ``App`` on the host HAL, one asyncio loop.

Runs unchanged on CPython and on the MicroPython unix port::

    micropython -X heapsize=512k firmware/simnode.py spec.json

``spec.json``::

    {"home_id": "demo", "broker": {"host": "127.0.0.1", "port": 1883},
     "config": {"heartbeat_interval": 5},           # overrides for every node
     "state_root": "/tmp/homesync-sim", "duration": null, "quiet": false,
     "nodes": [{"node_id": "plug-01", "load": "fridge", "load_scale": 0.1,
                "control": "/tmp/plug-01.control",  # optional: fault commands at run time
                "faults": [{"kind": "freeze", "at": 20, "duration": 30},
                           {"kind": "reboot", "at": 60, "every": 180}],
                "config": {...}, "firmware": "0.1.0", "seed": 1}]}

Each node behaves like a device: a simulated watchdog resets it when the supervisor stops
feeding, a reset abandons the socket half-open and boots a fresh ``App`` from the persisted
state and config.  A control file (JSON object or list, written atomically by the caller) is
polled every 50 ms and removed once applied::

    {"fault": "wifi_down", "duration": 5}   {"clear": "freeze"}   {"clear": "all"}
    {"button": true}   {"reboot": true}   {"stop": true}
"""

import asyncio
import os
import sys

from hal_host import HostHAL, monotonic_ms
import otaboot

from homesync import VERSION
from homesync.app import App
from homesync.store import load_json

POLL_S = 0.05
BOOT_DELAY_S = 0.3


def _copy(src):
    out = {}
    if src:
        for key in src:
            out[key] = src[key]
    return out


def node_config(spec, node):
    """Device config for one simulated node (what ``config.json`` holds on an ESP32)."""
    cfg = _copy(spec.get("config"))
    for key in node.get("config") or {}:
        cfg[key] = node["config"][key]
    cfg["home_id"] = node.get("home_id") or spec.get("home_id", "demo")
    cfg["node_id"] = node["node_id"]
    broker = spec.get("broker") or {}
    mqtt = _copy(cfg.get("mqtt"))
    for key in broker:
        mqtt[key] = broker[key]
    cfg["mqtt"] = mqtt
    return cfg


class SimNode:
    def __init__(self, spec, node):
        self.spec = spec
        self.node = node
        self.node_id = node["node_id"]
        root = spec.get("state_root") or "/tmp/homesync-sim"
        self.state_dir = node.get("state_dir") or root + "/" + self.node_id
        self.hal = HostHAL(
            self.node_id,
            self.state_dir,
            load=node.get("load", "lamp"),
            seed=node.get("seed"),
            load_scale=node.get("load_scale", 1.0),
            quiet=bool(spec.get("quiet")),
        )
        self.firmware = node.get("firmware") or VERSION
        self.base_firmware = self.firmware
        self.reset_reason = None
        self.control = node.get("control")
        self.schedule = list(node.get("faults") or [])
        self.boots = 0
        self.app = None
        self.zombies = []  # sockets of previous boots, left half-open like a real reset
        self.stop_requested = False
        self._t0 = monotonic_ms()

    async def run(self):
        hal = self.hal
        base = node_config(self.spec, self.node)
        if not hal.load_state():
            hal.save_state({"relay": bool(self.node.get("relay", True))})  # a plug in use
        while True:
            stored = hal.load_config()
            cfg = base
            if stored:
                cfg = _copy(base)
                for key in ("heartbeat_interval", "telemetry_interval"):
                    if key in stored:
                        cfg[key] = stored[key]
            else:
                hal.save_config(base)
            # OTA (homesync/ota.py): each boot picks the slot and counts probation boots, unless
            # firmware/device.py did it already for this process; in-process the modules already
            # imported stay, so a node reports the version its installed slot holds.
            if not self.node.get("single_boot"):
                otaboot.boot(self.state_dir, hal.log)
            self.firmware = otaboot.installed_version(self.state_dir) or self.base_firmware
            hal.new_boot()
            self.boots += 1
            hal.log("sim: boot #{} firmware {}".format(self.boots, self.firmware))
            self.app = App(hal, cfg, self.firmware)
            task = asyncio.create_task(self.app.run())
            why = await self._watch(task)
            if why == "stop":
                await self.app.stop()
                break
            writer = self.app.kill()
            if writer is not None:
                self.zombies.append(writer)
            hal.log("sim: reset ({})".format(why))
            if self.node.get("single_boot"):
                self.reset_reason = why  # firmware/device.py: the process ends, like a reset
                break
            await asyncio.sleep(BOOT_DELAY_S)
            self._close_zombies(keep=1)
        self._close_zombies(keep=0)

    def _close_zombies(self, keep):
        from homesync.mqtt import close_stream

        while len(self.zombies) > keep:
            close_stream(self.zombies.pop(0))

    async def _watch(self, task):
        hal = self.hal
        while True:
            await asyncio.sleep(POLL_S)
            self._apply_schedule()
            self._poll_control()
            if self.stop_requested:
                return "stop"
            duration = self.spec.get("duration")
            if duration and monotonic_ms() - self._t0 > duration * 1000:
                return "stop"
            if hal.reset_requested:
                return hal.reset_requested
            if hal.wdt_expired():
                return "watchdog"
            if task.done():
                return "app crashed"

    def _apply_schedule(self):
        if not self.schedule:
            return
        elapsed = (monotonic_ms() - self._t0) / 1000
        keep = []
        for item in self.schedule:
            if elapsed >= item.get("at", 0):
                self.apply(item)
                every = item.get("every")
                if every:
                    again = _copy(item)
                    again["at"] = item.get("at", 0) + every
                    keep.append(again)
            else:
                keep.append(item)
        self.schedule = keep

    def _poll_control(self):
        path = self.control
        if not path:
            return
        try:
            os.stat(path)
        except OSError:
            return
        actions = load_json_any(path)
        try:
            os.remove(path)
        except OSError:
            pass
        if isinstance(actions, dict):
            actions = [actions]
        for action in actions or []:
            self.apply(action)

    def apply(self, action):
        hal = self.hal
        try:
            if action.get("stop"):
                self.stop_requested = True
            elif action.get("reboot"):
                hal.inject("reboot")
            elif action.get("button"):
                hal.press_button()
            elif "clear" in action:
                hal.clear(action["clear"])
            else:
                kind = action.get("fault") or action.get("kind")
                hal.inject(kind, action.get("duration"), action.get("value"))
        except Exception as err:
            hal.log("sim: bad action {}: {}".format(action, err))


def load_json_any(path):
    """A JSON object or list from a file (``load_json`` only accepts objects)."""
    import json

    try:
        with open(path) as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


async def run_nodes(spec):
    nodes = [SimNode(spec, node) for node in spec.get("nodes") or []]
    tasks = [asyncio.create_task(node.run()) for node in nodes]
    for task in tasks:
        await task
    return nodes


def main(argv):
    if len(argv) < 2:
        print("usage: simnode.py SPEC.json")
        return 2
    spec = load_json(argv[1])
    if spec is None:
        print("cannot read spec {}".format(argv[1]))
        return 2
    asyncio.run(run_nodes(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
