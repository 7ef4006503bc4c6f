"""One boot of a simulated plug per process: the host's stand-in for an ESP32 reset.

    micropython -X heapsize=256k firmware/device.py spec.json

The spec is ``simnode.py``'s with exactly one node.  Unlike the fleet simulator, which reboots a
node inside one process (the code already imported stays), this runner boots like the device:

1. ``otaboot.boot(state_dir)`` picks the firmware slot, counts probation boots, rolls back;
2. the slot goes first on ``sys.path`` and ``homesync.main`` is imported from it, so an update's
   ``.mpy`` modules really run (and a bundle that fails to import really fails);
3. the simulated board (``simnode.SimNode``, ``hal_host``) runs until the node resets.

Exit status: 0 stopped, 75 reset (OTA reboot, simulated watchdog, injected reboot), 70 crashed
(an exception, e.g. while importing a broken bundle).  A supervisor restarts the process on 75
and 70, like power staying on (``firmware/tests/ota_harness.py`` does that for the tests).
Slots hold ``.mpy`` files, which only MicroPython imports; on CPython a slot is reported and the
factory modules run.
"""

import json
import sys

EXIT_RESET = 75
EXIT_CRASH = 70


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "."


def _print_exception(err):
    printer = getattr(sys, "print_exception", None)
    if printer is not None:
        printer(err)
    else:
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)


def _log(node_id, text):
    print("{} [{}] {}".format("  device", node_id, text))


def main(argv):
    if len(argv) < 2:
        print("usage: device.py SPEC.json")
        return 2
    here = _dirname(argv[0])
    if here not in sys.path:
        sys.path.insert(0, here)
    with open(argv[1]) as handle:
        spec = json.loads(handle.read())
    node = spec["nodes"][0]
    node_id = node["node_id"]
    root = spec.get("state_root") or "/tmp/homesync-sim"
    state_dir = node.get("state_dir") or root + "/" + node_id
    node["state_dir"] = state_dir
    node["single_boot"] = True  # this process is one boot; otaboot already ran

    import otaboot

    otaboot.ensure_dir(state_dir)
    slot = otaboot.boot(state_dir, lambda text: _log(node_id, text))
    if slot is not None:
        if sys.implementation.name == "micropython":
            sys.path.insert(0, slot)
            _log(node_id, "running slot {}".format(slot))
        else:
            _log(node_id, "slot {} holds .mpy files: CPython runs the factory modules".format(slot))
    try:
        import asyncio

        import simnode

        import homesync.main  # noqa: F401  (a broken bundle fails here, as on the board)

        sim = simnode.SimNode(spec, node)
        asyncio.run(sim.run())
    except Exception as err:
        _log(node_id, "crashed: {!r}".format(err))
        _print_exception(err)
        return EXIT_CRASH
    return EXIT_RESET if sim.reset_reason else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
