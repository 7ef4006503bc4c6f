"""JSON files written atomically (write ``*.tmp``, then rename over the old file).

On the ESP32 the files live on LittleFS v2, which is power-fail safe and whose rename replaces the
target in one step, so a reset mid-write leaves either the old or the new file, never half of one.
"""

import json
import os


def load_json(path, default=None):
    try:
        with open(path) as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return default
    return data if isinstance(data, dict) else default


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(obj))
    os.rename(tmp, path)
