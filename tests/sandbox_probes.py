"""Functions the sandbox tests run inside the load sandbox (``Sandbox.call("tests.sandbox_probes:<name>", args)``).

Each takes ``(args, output)`` and returns what it observed as JSON-able data. Light imports only: they also run
under small memory limits.
"""
from __future__ import annotations

import os
import resource
import signal
import socket
import time
from typing import Any

LIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CPU")


def _can_write(path: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write("x")
        os.remove(path)
        return True
    except OSError:
        return False


def _can_read(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.read()
        return True
    except OSError:
        return False


def describe(args: dict[str, Any], output: Any) -> dict[str, Any]:
    """What the child sees: environment, user, limits, network, what it can read and write."""
    try:
        with socket.create_connection(("127.0.0.1", args["port"]), timeout=3):
            connect = "connected"
    except OSError as exc:
        connect = f"{type(exc).__name__}: {exc}"
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {
        "env": dict(os.environ),
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "limits": {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS},
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
        "connect": connect,
        "pgid": os.getpgid(0),
        "cwd_files": sorted(os.listdir(".")),
        "read_model": _can_read(args["model"]),
        "read_secret": _can_read(args["secret"]),
        "write_model_folder": _can_write("written-by-the-sandbox"),
        "home_is": os.readlink(os.environ["HOME"]),
        "write_home": _can_write(os.path.join(os.environ["HOME"], "probe")),
        "write_tmpdir": _can_write(os.path.join(os.environ["TMPDIR"], "probe")),
    }


def touch(args: dict[str, Any], output: Any) -> None:
    """What the hostile pickles do, run on purpose: proves the sandbox could create their marker."""
    os.system(f"touch {args['path']}")


def crash(args: dict[str, Any], output: Any) -> None:
    os.kill(os.getpid(), getattr(signal, args.get("signal", "SIGSEGV")))


def allocate(args: dict[str, Any], output: Any) -> int:
    return len(bytearray(args["bytes"]))


def sleep(args: dict[str, Any], output: Any) -> None:
    with output.open("pid") as f:
        f.write(str(os.getpid()).encode())
    time.sleep(args["seconds"])


def fail(args: dict[str, Any], output: Any) -> None:
    from neocompile import errors

    raise getattr(errors, args["class"])(args["message"])
