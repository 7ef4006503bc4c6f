"""HomeSync fleet simulator: N simulated smart plugs running the real firmware against a broker.

    python -m firmware.sim --port 1883 --home demo --nodes 5 --micropython 1 \
        --fault plug-02:freeze@20+30 --fault plug-04:flap=5/2@10+60

In-process nodes run the firmware on CPython; ``--micropython K`` runs the last K nodes in one
real ``micropython`` process (same code, same HAL).  Faults (``--list-faults``) are scheduled
with ``NODE:KIND[=VALUE][@START_S][+DURATION_S][%EVERY_S]`` (``*`` = every node; ``%EVERY_S``
repeats it), per-node config with ``--node-config NODE:KEY=VALUE``, or injected at run time by
writing JSON to ``CONTROL_DIR/NODE.control``, e.g. ``{"fault": "wifi_down", "duration": 10}``.
Ctrl-C stops every node gracefully (retained ``online: false, reason: shutdown``).
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile

from hal_host import FAULTS, LOADS
import simnode

import firmware  # noqa: F401  (puts the firmware directory on sys.path)

FIRMWARE_DIR = os.path.dirname(os.path.abspath(__file__))
CHILD_GRACE_S = 10  # a stopping MicroPython child gets this long for its goodbyes
DEFAULT_LOADS = ("fridge", "tv", "lamp", "kettle", "washer", "charger", "heater")
FAULT_HELP = """faults:
  freeze         measurement + command loops hang; MQTT keep-alive continues (LWT never fires)
  sensor_crash   the measurement loop raises and dies
  meter_fail     the meter UART goes silent
  wifi_down      socket dies without DISCONNECT; no reconnect until Wi-Fi returns
  flap=UP/DOWN   Wi-Fi up UP s, down DOWN s, repeating
  crash_command  the next command resets the node after switching, before replying
  reboot         immediate reset (socket left half-open)
  unsynced       wall clock not synchronised (no timestamps, no expiry check)
  delay=S        commands answered S seconds late
"""


def parse_fault(text):
    """``plug-02:freeze@20+30`` -> ``("plug-02", {"kind": ..., "at": ..., "duration": ...})``.

    A ``%EVERY`` suffix repeats the fault every EVERY seconds (``plug-03:reboot@60%180``).
    """
    if ":" not in text:
        raise ValueError("fault must look like NODE:KIND[=VALUE][@START][+DURATION][%EVERY]")
    node, rest = text.split(":", 1)
    item = {"at": 0.0}
    if "%" in rest:
        rest, every = rest.rsplit("%", 1)
        item["every"] = float(every)
        if item["every"] <= 0:
            raise ValueError("%EVERY must be > 0 s")
    if "+" in rest:
        rest, duration = rest.rsplit("+", 1)
        item["duration"] = float(duration)
    if "@" in rest:
        rest, start = rest.rsplit("@", 1)
        item["at"] = float(start)
    kind, _, value = rest.partition("=")
    if kind not in FAULTS:
        raise ValueError("unknown fault {!r}; one of {}".format(kind, ", ".join(FAULTS)))
    item["kind"] = kind
    if value:
        try:
            item["value"] = float(value)
        except ValueError:
            item["value"] = value
    return node, item


def parse_node_config(text):
    """``plug-02:watchdog_s=0`` -> ``("plug-02", "watchdog_s", 0)`` (VALUE is JSON if it parses)."""
    if ":" not in text or "=" not in text:
        raise ValueError("node config must look like NODE:KEY=VALUE")
    node, rest = text.split(":", 1)
    key, value = rest.split("=", 1)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return node, key, parsed


def build_spec(args, control_dir, state_root):
    names = ["{}-{:02d}".format(args.prefix, i + 1) for i in range(args.nodes)]
    loads = args.loads.split(",") if args.loads else list(DEFAULT_LOADS)
    for load in loads:
        if load not in LOADS:
            raise SystemExit("unknown load {!r}; one of {}".format(load, ", ".join(LOADS)))
    faults = {name: [] for name in names}
    for text in args.fault or []:
        node, item = parse_fault(text)
        targets = names if node == "*" else [node]
        for target in targets:
            if target not in faults:
                raise SystemExit("fault for unknown node {!r} (nodes: {})".format(target, names))
            faults[target].append(dict(item))
    overrides = {name: {} for name in names}
    for text in args.node_config or []:
        node, key, value = parse_node_config(text)
        targets = names if node == "*" else [node]
        for target in targets:
            if target not in overrides:
                raise SystemExit("config for unknown node {!r} (nodes: {})".format(target, names))
            overrides[target][key] = value
    mqtt = {"host": args.host, "port": args.port, "keepalive": args.keepalive}
    if args.username:
        mqtt["username"] = args.username
    if args.password_env:
        mqtt["password"] = os.environ.get(args.password_env, "")
    if args.tls:
        mqtt["tls"] = True
        mqtt["ca_file"] = args.ca_file
    config = {
        "heartbeat_interval": args.heartbeat,
        "telemetry_interval": args.telemetry,
        "measure_interval_ms": args.measure_ms,
        "watchdog_s": args.watchdog,
        "stall_timeout_s": max(1.0, args.measure_ms * 5 / 1000),
    }
    nodes = []
    for i, name in enumerate(names):
        node = {
            "node_id": name,
            "load": loads[i % len(loads)],
            "load_scale": args.load_scale,
            "control": os.path.join(control_dir, name + ".control"),
            "faults": faults[name],
        }
        if overrides[name]:
            node["config"] = overrides[name]
        if args.seed is not None:
            node["seed"] = args.seed + i
        if args.firmware:
            node["firmware"] = args.firmware  # reported until an OTA update installs another
        nodes.append(node)
    return {
        "home_id": args.home,
        "broker": mqtt,
        "config": config,
        "state_root": state_root,
        "duration": args.duration,
        "quiet": args.quiet,
        "nodes": nodes,
    }


def micropython_command(binary, heapsize, spec_path):
    return [
        binary,
        "-X",
        "heapsize={}".format(heapsize),
        os.path.join(FIRMWARE_DIR, "simnode.py"),
        spec_path,
    ]


def find_micropython():
    here = os.path.dirname(sys.executable)
    candidate = os.path.join(here, "micropython")
    if os.path.exists(candidate):
        return candidate
    return shutil.which("micropython") or "micropython"


async def run(args):
    control_dir = args.control_dir or tempfile.mkdtemp(prefix="homesync-ctl-")
    state_root = args.state_dir or tempfile.mkdtemp(prefix="homesync-state-")
    os.makedirs(control_dir, exist_ok=True)
    spec = build_spec(args, control_dir, state_root)
    k = max(0, min(args.micropython, len(spec["nodes"])))
    local = dict(spec)
    local["nodes"] = spec["nodes"][: len(spec["nodes"]) - k]
    remote = dict(spec)
    remote["nodes"] = spec["nodes"][len(spec["nodes"]) - k :]
    proc = None
    if remote["nodes"]:
        fd, spec_path = tempfile.mkstemp(prefix="homesync-spec-", suffix=".json", dir=control_dir)
        with os.fdopen(fd, "w") as handle:  # 0600: may hold the broker password
            json.dump(remote, handle)
        cmd = micropython_command(
            args.micropython_bin or find_micropython(), args.heapsize, spec_path
        )
        # Own session: Ctrl-C reaches only us; we stop the child gracefully via its control file.
        proc = await asyncio.create_subprocess_exec(*cmd, start_new_session=True)
    nodes = [simnode.SimNode(local, node) for node in local["nodes"]]
    tasks = [asyncio.create_task(node.run()) for node in nodes]
    stop = asyncio.Event()

    def request_stop():
        stop.set()
        for node in nodes:
            node.stop_requested = True
        for node in remote["nodes"]:
            _write_control(node["control"], {"stop": True})

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    print(
        "sim: {} node(s) on {}:{} home {!r} ({} under MicroPython); control files in {}".format(
            len(spec["nodes"]), args.host, args.port, args.home, k, control_dir
        ),
        flush=True,
    )
    # In-process nodes end only when stopped (signal, control file) or at --duration.
    await asyncio.gather(*tasks)
    if proc is not None:
        await _stop_child(proc, stop, bool(nodes), request_stop)
    return 0


async def _stop_child(proc, stop, had_local, request_stop):
    """Wait for the MicroPython child: it runs as long as we do, then gets CHILD_GRACE_S.

    With no in-process node there is nothing else to wait for: the child runs until a
    signal asks us to stop (or it ends by itself at --duration).
    """
    waiter = asyncio.ensure_future(proc.wait())
    if not had_local:
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    if not waiter.done():
        request_stop()  # the local nodes stopped (signal or --duration): so does the child
        try:
            await asyncio.wait_for(asyncio.shield(waiter), CHILD_GRACE_S)
        except TimeoutError:
            proc.kill()
    await waiter


def _write_control(path, action):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(action, handle)
    os.replace(tmp, path)


def parser():
    p = argparse.ArgumentParser(
        prog="python -m firmware.sim",
        description="Simulated HomeSync smart plugs running the real firmware.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=FAULT_HELP,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--home", default="demo", help="home_id (default demo)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--prefix", default="plug", help="node ids are PREFIX-01, PREFIX-02, ...")
    p.add_argument("--loads", help="comma list of: " + ", ".join(LOADS))
    p.add_argument("--load-scale", type=float, default=0.1, help="appliance cycle time factor")
    p.add_argument(
        "--micropython", type=int, default=0, metavar="K", help="run K nodes under micropython"
    )
    p.add_argument("--micropython-bin", help="path of the micropython command")
    p.add_argument("--heapsize", default="512k", help="micropython -X heapsize (default 512k)")
    p.add_argument("--heartbeat", type=int, default=30, help="heartbeat interval s")
    p.add_argument("--telemetry", type=int, default=10, help="telemetry interval s")
    p.add_argument("--measure-ms", type=int, default=1000)
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--watchdog", type=float, default=30, help="simulated watchdog s (0 = off)")
    p.add_argument("--fault", action="append", metavar="NODE:KIND[=V][@START][+DUR][%EVERY]")
    p.add_argument(
        "--node-config",
        action="append",
        metavar="NODE:KEY=VALUE",
        help="one node's config.json key, e.g. plug-03:watchdog_s=0 (VALUE is JSON)",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--state-dir", help="persisted node state (default: a temp dir)")
    p.add_argument("--control-dir", help="where NODE.control files are read")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--firmware",
        metavar="VERSION",
        help="firmware version the plugs report until an OTA update (default: the firmware's)",
    )
    p.add_argument("--username")
    p.add_argument("--password-env", metavar="VAR", help="read the broker password from $VAR")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--list-faults", action="store_true")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.list_faults:
        print(FAULT_HELP)
        return 0
    try:
        return asyncio.run(run(args))
    except ValueError as err:
        print("sim: {}".format(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
