"""Boot-time half of application OTA: which firmware slot runs, probation and rollback.

This module is part of the stable boot loader (``/boot.py``, ``/main.py``, ``/otaboot.py`` at the
flash root).  OTA bundles never replace it, so a bad update cannot break the code that decides
what to run.  It imports nothing from ``homesync`` and runs unchanged on MicroPython and CPython.

Slots (paths relative to the HAL's file-system root, ``""`` on the ESP32):

* ``factory``: the modules at the root (``/homesync``, ``/hal_esp32.mpy``), as flashed by
  ``mpremote``; always present, the last resort;
* ``ota/a`` and ``ota/b``: unpacked bundles.  An update is unpacked into the slot that is not
  running, then :func:`commit` switches to it by rewriting ``ota/state.json`` atomically (write
  ``*.tmp``, rename), so a reset at any moment leaves either the old or the new choice.

Probation (docs/protocol.md, "Firmware updates"): a committed update starts with
``probation.boots == 0``.  :func:`boot` counts every boot on probation; the application calls
:func:`mark_good` after its first healthy cycle (connected and one heartbeat published).  A
second boot still on probation means the new version crashed, hung (watchdog reset) or lost
power before proving itself: :func:`boot` switches back to the previous slot and leaves a
report ``{"status": "error", "error": "rolled back"}`` that the old version publishes on
``response/ota`` once it is connected.
"""

import json
import os

STATE_FILE = "ota/state.json"
SLOTS = ("a", "b")
FACTORY = "factory"
TRIAL_BOOTS = 1  # boots a new version gets to prove itself; the next one rolls back


def _path(root, rel):
    return root + "/" + rel if root else "/" + rel


def slot_path(root, slot):
    """The directory to put first on ``sys.path`` for ``slot`` (``None`` for the factory)."""
    if slot in SLOTS:
        return _path(root, "ota/" + slot)
    return None


def _default():
    return {
        "active": FACTORY,
        "version": None,
        "previous": FACTORY,
        "previous_version": None,
        "probation": None,
        "report": None,
    }


def load_state(root):
    """The slot state; a missing or unreadable file means "factory, nothing pending"."""
    state = _default()
    try:
        with open(_path(root, STATE_FILE)) as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return state
    if not isinstance(data, dict):
        return state
    for key in state:
        if key in data:
            state[key] = data[key]
    if state["active"] not in SLOTS:
        state["active"] = FACTORY
    if state["previous"] not in SLOTS:
        state["previous"] = FACTORY
    if not isinstance(state["probation"], dict):
        state["probation"] = None
    if not isinstance(state["report"], dict):
        state["report"] = None
    return state


def ensure_dir(path):
    """``mkdir -p`` without ``os.makedirs`` (MicroPython has none)."""
    current = ""
    for part in path.split("/"):
        if not part:
            if not current:
                current = "/"
            continue
        current = current + part if current in ("", "/") else current + "/" + part
        try:
            os.mkdir(current)
        except OSError:
            pass


def save_state(root, state):
    ensure_dir(_path(root, "ota"))
    path = _path(root, STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(state))
    os.rename(tmp, path)


def boot(root, log=print):
    """Run once per boot, before the application is imported: returns the slot's directory to
    put first on ``sys.path`` (``None``: run the factory modules).  Counts probation boots and
    rolls back when the new version did not prove itself within ``TRIAL_BOOTS`` boots."""
    state = load_state(root)
    trial = state["probation"]
    if trial is not None:
        boots = trial.get("boots", 0)
        if not isinstance(boots, int) or boots >= TRIAL_BOOTS:
            failed = state["version"]
            state["active"] = state["previous"]
            state["version"] = state["previous_version"]
            state["previous"] = FACTORY
            state["previous_version"] = None
            state["probation"] = None
            state["report"] = {
                "request_id": trial.get("request_id"),
                "status": "error",
                "error": "rolled back",
                "version": failed,
            }
            log(
                "otaboot: {} did not prove itself, rolled back to {}".format(
                    failed, state["active"]
                )
            )
        else:
            trial["boots"] = boots + 1
            log("otaboot: {} on probation (boot {})".format(state["version"], boots + 1))
        save_state(root, state)
    path = slot_path(root, state["active"])
    if path is not None and not slot_complete(path):
        log("otaboot: slot {} is incomplete, running the factory modules".format(state["active"]))
        state["active"] = FACTORY
        state["version"] = None
        state["probation"] = None
        save_state(root, state)
        path = None
    return path


def slot_complete(path):
    """A slot counts once its manifest exists: the installer writes it last."""
    try:
        os.stat(path + "/manifest.json")
    except OSError:
        return False
    return True


def staging_slot(state):
    """The slot an update is unpacked into: never the one running."""
    return "b" if state["active"] == "a" else "a"


def commit(root, slot, version, request_id):
    """Switch to the freshly unpacked ``slot``; the next boot runs it on probation."""
    state = load_state(root)
    state["previous"] = state["active"]
    state["previous_version"] = state["version"]
    state["active"] = slot
    state["version"] = version
    state["probation"] = {"request_id": request_id, "version": version, "boots": 0}
    state["report"] = None
    save_state(root, state)
    return state


def on_probation(root):
    return load_state(root)["probation"] is not None


def mark_good(root):
    """End probation after a healthy cycle; returns the finished trial (``None`` if none)."""
    state = load_state(root)
    trial = state["probation"]
    if trial is None:
        return None
    state["probation"] = None
    save_state(root, state)
    return trial


def take_report(root):
    """The pending rollback report (cleared), or ``None``."""
    state = load_state(root)
    report = state["report"]
    if report is None:
        return None
    state["report"] = None
    save_state(root, state)
    return report


def installed_version(root):
    """The version of the running OTA slot, ``None`` when the factory modules run."""
    state = load_state(root)
    if state["active"] == FACTORY:
        return None
    return state["version"]
