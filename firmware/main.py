"""ESP32 entry point: load /config.json, build the HAL, run the HomeSync app.

Safe mode: hold the button while the plug powers up and the app does not start (REPL stays free
for ``mpremote``).  An exception escaping the app resets the board after 5 s; a hang is caught by
the watchdog that the app's supervisor feeds.
"""

import asyncio
import sys
import time

from hal_esp32 import ESP32HAL, load_device_config
import machine

from homesync.app import App


def _button_held(config):
    pin = (config.get("pins") or {}).get("button", 0)
    return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def _task_error(loop, context):
    # The supervisor notices a dead task and starves the watchdog; this only makes it visible.
    print("task error:", context.get("message"))
    err = context.get("exception")
    if err is not None:
        sys.print_exception(err)


def main():
    config = load_device_config()
    if config is None:
        print("homesync: no valid /config.json (start from config.example.json); not starting")
        return
    if _button_held(config):
        print("homesync: safe mode (button held at boot); app not started")
        return
    hal = ESP32HAL(config)
    app = App(hal, config)
    asyncio.get_event_loop().set_exception_handler(_task_error)
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        print("homesync: stopped from the REPL (the watchdog, if enabled, still runs)")
    except Exception as err:
        sys.print_exception(err)
        time.sleep(5)
        machine.reset()


main()
