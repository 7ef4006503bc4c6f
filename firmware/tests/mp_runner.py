"""Run the shared unit tests without pytest: on real MicroPython (and on CPython too).

    micropython -X heapsize=2048k firmware/tests/mp_runner.py [module ...]

Imports each test module, calls every ``test_*`` function in name order and prints one closing
line ``N passed, N failed``; the exit status is 1 when anything failed.
"""

import sys

MODULES = (
    "test_clock",
    "test_protocol",
    "test_cse7766",
    "test_node",
    "test_mqtt",
    "test_app",
    "test_ota",
)


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


def main(argv):
    here = _dirname(argv[0] if argv else "firmware/tests/mp_runner.py")
    for path in (here, here + "/.."):
        if path not in sys.path:
            sys.path.insert(0, path)
    passed = 0
    failed = 0
    for name in argv[1:] or MODULES:
        module = __import__(name)
        for attr in sorted(dir(module)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(module, attr)
            if not callable(fn):
                continue
            try:
                fn()
            except Exception as err:
                failed += 1
                print("FAIL {}.{}: {!r}".format(name, attr, err))
                _print_exception(err)
            else:
                passed += 1
                print("ok   {}.{}".format(name, attr))
    print("{} passed, {} failed".format(passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
