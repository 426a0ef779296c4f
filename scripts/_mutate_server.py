"""A fork server for ``scripts/mutate.py``: imports pytest, the plugins and the test modules
once, then runs each mutant's tests in a forked child.

Started with the tree copy as its working directory and on ``PYTHONPATH``. Reads one JSON
request per line on stdin (``module``: dotted name, ``source``: the mutated module text,
``tests``: test ids, ``timeout``: seconds) and answers one JSON line on stdout
(``status``: killed | survived | timeout, ``seconds``, ``failed``: the first failing test).

The child puts the mutant in place without re-importing anything: the mutated module is
executed in a scratch namespace and each function of the real module takes the new
function's code, each changed constant its new value, so every reference other modules hold
sees the mutant. Worker processes that tests start import the mutated file from the copy.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import os
import signal
import sys
import time
import types
from contextlib import redirect_stderr, redirect_stdout, suppress
from typing import Any

import pytest

_CONSTANTS = (bool, int, float, str, bytes, tuple, frozenset)


def _function(value: object) -> types.FunctionType | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    if callable(value):
        value = inspect.unwrap(value)  # type: ignore[arg-type]
    return value if isinstance(value, types.FunctionType) else None


def _patch_namespace(old: dict[str, Any], new: dict[str, Any], setter: Any) -> None:
    for name, fresh in new.items():
        if name.startswith("__") and name.endswith("__") and name not in {"__init__", "__call__"}:
            continue
        if name not in old:
            continue
        current = old[name]
        old_fn, new_fn = _function(current), _function(fresh)
        if old_fn is not None and new_fn is not None:
            if old_fn.__code__ is not new_fn.__code__:
                old_fn.__code__ = new_fn.__code__
                old_fn.__defaults__ = new_fn.__defaults__
            continue
        if isinstance(current, type) and isinstance(fresh, type):
            if current.__module__ == fresh.__module__:
                _patch_namespace(dict(vars(current)), dict(vars(fresh)), _class_setter(current))
            continue
        if isinstance(fresh, _CONSTANTS) and type(fresh) is type(current) and fresh != current:
            setter(name, fresh)


def _class_setter(cls: type) -> Any:
    return lambda name, value: setattr(cls, name, value)


def apply(module_name: str, source: str) -> None:
    """Make the imported module behave as ``source`` does."""
    module = importlib.import_module(module_name)
    scratch: dict[str, Any] = {
        "__name__": module_name,
        "__file__": module.__file__,
        "__package__": module.__package__,
        "__builtins__": __builtins__,
    }
    exec(compile(source, module.__file__ or module_name, "exec"), scratch)  # noqa: S102
    _patch_namespace(module.__dict__, scratch, lambda name, value: setattr(module, name, value))


def run(request: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    report = os.path.join(os.getcwd(), f"mutant-{os.getpid()}.txt")
    pid = os.fork()
    if pid == 0:
        os.setsid()
        # The pipe to the caller is for answers only; what tests print goes nowhere.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        code = 3
        try:
            apply(request["module"], request["source"])
            out = io.StringIO()
            arguments = ["-x", "-q", "--no-header", "-p", "no:warnings", *request["tests"]]
            with redirect_stdout(out), redirect_stderr(out):
                code = int(pytest.main(arguments))
            failed = [
                line.split()[1]
                for line in out.getvalue().splitlines()
                if line.startswith(("FAILED ", "ERROR "))
            ]
            lines = [line for line in out.getvalue().splitlines() if line.strip()]
            keep = os.environ.get("MUTATE_KEEP_OUTPUT")
            if keep:
                with open(os.path.join(keep, f"{request['id']}.txt"), "w") as f:
                    f.write(out.getvalue())
            with open(report, "w") as f:
                # Without a failing test, pytest's last words say what stopped it.
                f.write(failed[0] if failed else f"pytest: {lines[-1] if lines else code}")
        except BaseException as exc:  # the mutant broke the patching itself: it is killed
            with open(report, "w") as f:
                f.write(f"mutant does not load: {type(exc).__name__}")
            code = 4
        finally:
            os._exit(code)
    deadline = started + float(request["timeout"])
    status = "timeout"
    while time.monotonic() < deadline:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(wait_status)
            status = "survived" if code == 0 else "killed"
            break
        time.sleep(0.05)
    else:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # Whatever the child left running in its session goes with it.
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    failed = ""
    if os.path.exists(report):
        with open(report) as f:
            failed = f.read()
        os.unlink(report)
    if status == "killed" and not failed:
        failed = "pytest failed"
    return {"status": status, "seconds": time.monotonic() - started, "failed": failed}


def main() -> None:
    files = sys.argv[1:]
    # Import pytest's plugins, the conftests and every test module once, here, so that each
    # child starts with them loaded.
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        pytest.main(["--collect-only", "-q", "-p", "no:warnings", *files])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
