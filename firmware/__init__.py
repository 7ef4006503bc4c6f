"""Host-side package shim for the HomeSync firmware.

The firmware itself is laid out for the device's flash root (``/homesync``, ``/main.py``,
``/hal_esp32.py``).  On CPython, ``python -m firmware.sim`` imports this package first; it puts the
firmware directory on ``sys.path`` so the same modules import exactly as they do on the ESP32.
"""

import os
import sys

FIRMWARE_DIR = os.path.dirname(os.path.abspath(__file__))
if FIRMWARE_DIR not in sys.path:
    sys.path.insert(0, FIRMWARE_DIR)
