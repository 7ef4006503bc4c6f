"""HomeSync v1 node firmware: runs unchanged on MicroPython (ESP32, unix port) and CPython."""

VERSION = "0.1.0"
