"""JSON files written atomically (write ``*.tmp``, then rename over the old file).

On the ESP32 the files live on LittleFS v2, which is power-fail safe and whose rename replaces the
target in one step, so a reset mid-write leaves either the old or the new file, never half of one.

Both directions stream (``json.dump`` / ``json.load``) instead of building the whole text in one
string: the state file holds the last 32 executed request ids (~2 KB), and on a busy, fragmented
heap one 2 KB string is the allocation that fails (a burst of commands made every save fail).
"""

import json
import os


def load_json(path, default=None):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return default
    return data if isinstance(data, dict) else default


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(obj, handle)
    os.rename(tmp, path)
