"""Application entry: what the boot loader (``/main.py``) imports from the active slot.

Part of every OTA bundle, so a bundle whose entry fails to import is caught by the loader
(reset, then rollback on the next boot; see ``otaboot``).  The host's device runner
(``firmware/device.py``) imports this module the same way before it starts the simulated board.
"""

import asyncio
import sys

from homesync.app import App


def _task_error(loop, context):
    # The supervisor notices a dead task and starves the watchdog; this only makes it visible.
    print("task error:", context.get("message"))
    err = context.get("exception")
    if err is not None:
        printer = getattr(sys, "print_exception", None)
        if printer is not None:
            printer(err)


def esp32():
    """Load ``/config.json``, build the ESP32 HAL and run the app until it stops."""
    from hal_esp32 import ESP32HAL, load_device_config

    config = load_device_config()
    if config is None:
        print("homesync: no valid /config.json (start from config.example.json); not starting")
        return
    hal = ESP32HAL(config)
    app = App(hal, config)
    asyncio.get_event_loop().set_exception_handler(_task_error)
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        print("homesync: stopped from the REPL (the watchdog, if enabled, still runs)")
