"""ESP32 boot: runs before main.py on every reset. Keep it tiny and failure-free."""

import gc

try:
    import esp

    esp.osdebug(None)  # no vendor debug output on the REPL UART
except ImportError:
    pass
gc.collect()
