"""ESP32 entry point and stable boot loader: pick the firmware slot, then start the app.

This file, ``boot.py`` and ``otaboot.py`` are the boot loader: flashed once with ``mpremote``,
never replaced by an OTA bundle, so a bad update cannot break them.  Each boot:

1. Safe mode: hold the button while the plug powers up and nothing else runs (REPL free for
   ``mpremote``).  Decided here, before any updatable code is imported.
2. ``otaboot.boot`` picks the slot (factory modules, ``/ota/a`` or ``/ota/b``), counts boots of a
   new version on probation and rolls back one that did not prove itself (docs/protocol.md,
   "Firmware updates").
3. ``homesync.main.esp32()`` from that slot runs the app.  Anything escaping it, including an
   exception while importing a broken bundle, resets the board after 5 s; a hang is caught by
   the watchdog that the app's supervisor feeds.  Either way the next boot rolls back a version
   still on probation.
"""

import json
import sys
import time

import machine
import otaboot


def _button_held():
    try:
        with open("/config.json") as handle:
            config = json.loads(handle.read())
        pin = (config.get("pins") or {}).get("button", 0)
    except (OSError, ValueError, AttributeError):
        pin = 0
    return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def main():
    if _button_held():
        print("homesync: safe mode (button held at boot); app not started")
        return
    try:
        slot = otaboot.boot("")
        if slot is not None:
            sys.path.insert(0, slot)
        import homesync.main

        homesync.main.esp32()
    except KeyboardInterrupt:
        print("homesync: stopped from the REPL (the watchdog, if enabled, still runs)")
    except Exception as err:
        sys.print_exception(err)
        time.sleep(5)
        machine.reset()


main()
