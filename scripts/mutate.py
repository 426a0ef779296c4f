"""Mutation testing of the core decision code: does a broken lock, comparison or margin fail a test?

Each mutant is one small change to one module (a comparison flipped, ``and`` made ``or``, a
``not`` dropped, a condition negated, a number moved by one, ``+`` made ``-``, ``min`` made
``max``, a call or ``yield`` statement deleted, a compare-and-set script made to compare the
other way). It is written into a private copy of the source tree and that module's covering
tests run against it with ``pytest -x`` under a timeout: a failing or hanging run kills the
mutant, a passing one lets it survive. Worker processes started by the tests import the copy
too (``PYTHONPATH``), so tests about processes see the mutant.

``make mutate`` runs every module; ``--module`` and ``--line`` narrow a run, ``--list`` only
counts. Results go to ``test-artifacts/mutation/``; ``benchmarks/MUTATION.md`` is the reviewed
summary (which survivors are equivalent, which accepted, and why).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test-artifacts" / "mutation"
WORK = Path(
    os.environ.get("MUTATE_WORK", tempfile.gettempdir()), f"watcher-auth-mutate-{os.getpid()}"
)

# Tests that measure wall-clock stalls of a shared machine: a load spike fails them whatever
# the code, which would count as a kill. They are left out of every run here.
FLAKY = [
    "tests/stores/test_async_memory.py::TestAsyncStoreAdapterOverMemoryContract::"
    "test_the_event_loop_keeps_running_while_a_lock_waits",
]


@dataclass(frozen=True)
class Target:
    """A module under mutation, the test files that may cover it and, optionally, the only
    functions to mutate (qualified names)."""

    path: str
    tests: tuple[str, ...]
    only: tuple[str, ...] = ()
    #: Tests whose work happens in worker processes, which the line trace cannot see: they
    #: run for every mutant of the module, after the traced ones.
    always: tuple[str, ...] = ()


DECISIONS = "tests/core/test_decisions.py"
PROCESSES = "tests/core/test_decisions_processes.py"
SESSION = "tests/core/test_decisions_session.py"
POLICY = "tests/core/test_decisions_policy.py"
CACHE = "tests/core/test_decisions_cache.py"
LIFECYCLE = "tests/core/test_decisions_lifecycle.py"
LOCKS = "tests/core/test_decisions_locks.py"
ASYNC = "tests/core/test_decisions_async.py"
DRIVERS = "tests/core/test_decisions_drivers.py"
BACKOFF = "tests/core/test_decisions_backoff.py"
HOT_PATH = "tests/core/test_hot_path.py"
CHANNELS = "tests/stores/test_channels.py"
FORK = "tests/stores/test_fork.py"

TARGETS = {
    "lifecycle": Target(
        "watcher_auth/_lifecycle.py",
        (
            DECISIONS,
            CACHE,
            LIFECYCLE,
            POLICY,
            SESSION,
            "tests/core/test_manager.py",
            "tests/v2/test_manager_v2.py",
            CHANNELS,
            FORK,
        ),
        always=(PROCESSES,),
    ),
    "calls": Target(
        "watcher_auth/_calls.py",
        (
            DECISIONS,
            SESSION,
            CACHE,
            LIFECYCLE,
            HOT_PATH,
            "tests/core/test_manager.py",
            "tests/v2/test_manager_v2.py",
        ),
    ),
    "drivers": Target(
        "watcher_auth/_drivers.py",
        (
            DECISIONS,
            SESSION,
            ASYNC,
            DRIVERS,
            "tests/core/test_manager.py",
            "tests/v2/test_manager_v2.py",
        ),
        # Both start fresh interpreters: a login with the defaults a new process starts with,
        # and a check that importing the core imports no optional dependency.
        always=(PROCESSES, DRIVERS, "tests/core/test_layout.py"),
    ),
    "session": Target(
        "watcher_auth/_session.py",
        (
            SESSION,
            DECISIONS,
            LIFECYCLE,
            HOT_PATH,
            "tests/core/test_manager.py",
            "tests/v2/test_manager_v2.py",
        ),
    ),
    "locks": Target(
        "watcher_auth/_locks.py",
        (
            LOCKS,
            DECISIONS,
            ASYNC,
            "tests/core/test_manager.py",
            "tests/stores/test_async_memory.py",
        ),
    ),
    "policy": Target(
        "watcher_auth/_policy.py",
        ("tests/core/test_policy.py", POLICY, DECISIONS, SESSION, "tests/core/test_manager.py"),
    ),
    "v2_policy": Target(
        "watcher_auth/v2/_policy.py",
        (
            "tests/v2/test_policy_v2.py",
            POLICY,
            "tests/v2/test_manager_v2.py",
            "tests/v2/test_auth_v2.py",
        ),
    ),
    "v2_lifecycle": Target(
        "watcher_auth/v2/_lifecycle.py",
        (SESSION, "tests/v2/test_manager_v2.py", "tests/v2/test_auth_v2.py"),
    ),
    "redis_lock": Target(
        "watcher_auth/stores/redis.py",
        (
            "tests/stores/test_leases.py",
            BACKOFF,
            "tests/core/test_redis_store.py",
            "tests/stores/test_redis_async.py",
            "tests/stores/test_redis_lock_decisions.py",
        ),
        only=(
            "<module>",  # the compare-and-delete and compare-and-extend scripts
            "RedisStore.lock",
            "RedisStore._renew",
            "AsyncRedisStore.lock",
            "AsyncRedisStore._release_quietly",
            "AsyncRedisStore._renew",
            "_RedisLayout._lease_lost",
            "_ms",
        ),
        always=(PROCESSES,),
    ),
    "waiting": Target(
        "watcher_auth/stores/_waiting.py",
        (BACKOFF, "tests/stores/test_leases.py", "tests/stores/test_async_memory.py", DECISIONS),
    ),
}

_SWAPS: dict[type[ast.AST], type[ast.AST]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}
_QUIET_CALLS = {"logger", "logging", "warnings"}


@dataclass
class Mutant:
    """One change to one module."""

    target: str
    index: int
    line: int
    function: str
    description: str
    source: str = field(repr=False)
    last_line: int = 0
    in_function: bool = True
    status: str = "pending"
    seconds: float = 0.0
    killed_by: str = ""


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_quiet_call(node: ast.AST) -> bool:
    """A call that only logs or warns: changing it changes no decision."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in _QUIET_CALLS


class _Sites(ast.NodeVisitor):
    """Finds mutation sites as (node path, kind, line, function) without changing anything."""

    def __init__(self, only: tuple[str, ...]) -> None:
        self.only = only
        self.scope: list[str] = []
        self.functions = 0
        self.sites: list[tuple[ast.AST, str, str, bool]] = []

    def _allowed(self) -> bool:
        name = ".".join(self.scope) or "<module>"
        if not self.only:
            return True
        return any(name == o or name.startswith(o + ".") for o in self.only)

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name == "__repr__":
            return
        function = not isinstance(node, ast.ClassDef)
        self.scope.append(node.name)
        self.functions += function
        for stmt in node.body:
            if not _is_docstring(stmt):
                self.visit(stmt)
        self.functions -= function
        self.scope.pop()

    visit_ClassDef = _scoped
    visit_FunctionDef = _scoped
    visit_AsyncFunctionDef = _scoped

    def _site(self, node: ast.AST, kind: str) -> None:
        if self._allowed():
            name = ".".join(self.scope) or "<module>"
            self.sites.append((node, kind, name, self.functions > 0))

    def visit_Module(self, node: ast.Module) -> None:
        for stmt in node.body:
            if _is_docstring(stmt) or isinstance(stmt, ast.ImportFrom | ast.Import):
                continue
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets
            ):
                continue
            self.visit(stmt)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_arguments(self, node: ast.arguments) -> None:
        for default in [*node.defaults, *node.kw_defaults]:
            if default is not None:
                self.visit(default)

    def visit_Assert(self, node: ast.Assert) -> None:
        return  # a statement about the code, not a decision of it

    def visit_Expr(self, node: ast.Expr) -> None:
        if _is_quiet_call(node.value):
            return
        if isinstance(node.value, ast.Call | ast.Yield | ast.YieldFrom | ast.Await):
            self._site(node, "delete")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _is_quiet_call(node):
            return
        if isinstance(node.func, ast.Name) and node.func.id in {"min", "max"}:
            self._site(node, "minmax")
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not isinstance(node.test, ast.Compare | ast.BoolOp | ast.UnaryOp):
            self._site(node, "negate")
        self.generic_visit(node)

    visit_While = visit_If  # type: ignore[assignment]

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            if type(op) in _SWAPS:
                self._site(node, f"compare:{i}")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self._site(node, "boolop")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) in _SWAPS:
            self._site(node, "binop")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if type(node.op) in _SWAPS:
            self._site(node, "binop")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._site(node, "unnot")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool | int | float):
            self._site(node, "number")
        elif isinstance(value, str) and "redis.call" in value and "==" in value:
            self._site(node, "lua")


class _Apply(ast.NodeTransformer):
    """Applies the one mutation at ``target`` (matched by identity in a deep copy)."""

    def __init__(self, target: ast.AST, kind: str) -> None:
        self.target = target
        self.kind = kind
        self.description = ""

    def visit(self, node: ast.AST) -> ast.AST | None:
        if node is not self.target:
            return super().visit(node)
        kind = self.kind
        if kind == "delete":
            self.description = f"delete `{ast.unparse(node)}`"
            return ast.Pass()
        if kind == "minmax":
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            other = "max" if node.func.id == "min" else "min"
            self.description = f"`{node.func.id}(...)` -> `{other}(...)`"
            node.func = ast.Name(other, ast.Load())
            return node
        if kind == "negate":
            assert isinstance(node, ast.If | ast.While)
            self.description = f"`{ast.unparse(node.test)}` -> `not ({ast.unparse(node.test)})`"
            node.test = ast.UnaryOp(ast.Not(), node.test)
            return node
        if kind.startswith("compare:"):
            assert isinstance(node, ast.Compare)
            i = int(kind.split(":")[1])
            before = ast.unparse(node)
            node.ops[i] = _SWAPS[type(node.ops[i])]()
            self.description = f"`{before}` -> `{ast.unparse(node)}`"
            return node
        if kind in {"boolop", "binop"}:
            assert isinstance(node, ast.BoolOp | ast.BinOp | ast.AugAssign)
            before = ast.unparse(node)
            node.op = _SWAPS[type(node.op)]()  # type: ignore[assignment]
            self.description = f"`{before}` -> `{ast.unparse(node)}`"
            return node
        if kind == "unnot":
            assert isinstance(node, ast.UnaryOp)
            self.description = f"`{ast.unparse(node)}` -> `{ast.unparse(node.operand)}`"
            return node.operand
        if kind == "number":
            assert isinstance(node, ast.Constant)
            value = node.value
            if isinstance(value, bool):
                new: object = not value
            elif isinstance(value, int):
                new = value + 1
            else:
                new = value * 2 if value else 1.0
            self.description = f"`{value!r}` -> `{new!r}`"
            return ast.Constant(new)
        if kind == "lua":
            assert isinstance(node, ast.Constant) and isinstance(node.value, str)
            self.description = "compare-and-set script: `==` -> `~=`"
            return ast.Constant(node.value.replace("==", "~="))
        raise AssertionError(kind)


def _paths(root: ast.AST) -> dict[int, tuple[int, ...]]:
    """Each node's position in the tree as child indices, to find it again in a copy."""
    found: dict[int, tuple[int, ...]] = {}

    def walk(node: ast.AST, path: tuple[int, ...]) -> None:
        found[id(node)] = path
        for i, child in enumerate(ast.iter_child_nodes(node)):
            walk(child, (*path, i))

    walk(root, ())
    return found


def _at(root: ast.AST, path: tuple[int, ...]) -> ast.AST:
    node = root
    for i in path:
        node = list(ast.iter_child_nodes(node))[i]
    return node


def mutants(name: str, target: Target) -> Iterator[Mutant]:
    """Every mutant of ``target``'s module, in source order."""
    tree = ast.parse((ROOT / target.path).read_text())
    finder = _Sites(target.only)
    finder.visit(tree)
    paths = _paths(tree)
    seen: set[str] = set()
    for index, (node, kind, function, in_function) in enumerate(finder.sites):
        mutated = copy.deepcopy(tree)
        apply = _Apply(_at(mutated, paths[id(node)]), kind)
        mutated = ast.fix_missing_locations(apply.visit(mutated))
        source = ast.unparse(mutated)
        if source in seen:
            continue
        seen.add(source)
        line = getattr(node, "lineno", 0)
        last = getattr(node, "end_lineno", None) or line
        if kind in {"negate"}:
            last = getattr(node.test, "end_lineno", line)  # type: ignore[attr-defined]
        yield Mutant(
            name,
            index,
            line,
            function,
            apply.description,
            source,
            last_line=last,
            in_function=in_function,
        )


# --- running ---------------------------------------------------------------------------------


def _copy_tree(dest: Path) -> None:
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".nox", "test-artifacts", "__pycache__", "*.egg-info", "node_modules"
        ),
    )


def _environment(tree: Path, run_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree / "integrations"), str(tree), str(tree / "scripts")]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["WATCHER_TEST_RUN_ID"] = run_id
    env.pop("CI", None)  # a run here may skip what needs Chromium; mutants never need it
    return env


def _pytest(
    tree: Path, arguments: list[str], timeout: float, env: dict[str, str]
) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'timeout', seconds, first failing test) of one pytest run."""
    command = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "pytest",
        "-q",
        "--no-header",
        "-p",
        "no:warnings",
        "-m",
        "not browser",
        *[f"--deselect={test}" for test in FLAKY],
        *arguments,
    ]
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and pytest
        command,
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout", time.monotonic() - started, ""
    elapsed = time.monotonic() - started
    if process.returncode == 0:
        return "survived", elapsed, ""
    failed = ""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            failed = line.split()[1]
            break
    return "killed", elapsed, failed or f"pytest exit status {process.returncode}"


Trace = dict[str, dict[str, object]]


def trace(tree: Path, names: list[str]) -> Trace:
    """Run every covering test file once, unmutated, recording the lines each test runs."""
    files = sorted({t for name in names for t in TARGETS[name].tests if (tree / t).exists()})
    env = _environment(tree, "mutbase")
    env["MUTATE_TRACE_FILES"] = os.pathsep.join(str(tree / TARGETS[n].path) for n in names)
    out = tree / "mutate-trace.json"
    env["MUTATE_TRACE_OUT"] = str(out)
    _pytest(tree, ["-p", "_mutate_trace", *files], 3600, env)
    raw: Trace = json.loads(out.read_text())
    prefix = str(tree.resolve()) + os.sep
    for result in raw.values():
        lines = result["lines"]
        assert isinstance(lines, dict)
        result["lines"] = {path.removeprefix(prefix): set(v) for path, v in lines.items()}
    return raw


def covering(
    mutant: Mutant, target: Target, traced: Trace, excluded: tuple[str, ...] = ()
) -> list[str]:
    """The passing tests that run ``mutant``'s lines, fastest first; then ``target.always``."""
    wanted = set(range(mutant.line, mutant.last_line + 1))
    found: list[tuple[float, str]] = []
    for test, result in traced.items():
        if not result["passed"] or not test.startswith(target.tests):
            continue
        lines = result["lines"]
        assert isinstance(lines, dict)
        ran = lines.get(target.path)
        if ran is None:
            continue
        # Code outside functions runs at import, before any test: every test that used the
        # module covers it.
        if not mutant.in_function or wanted & ran:
            seconds = result["seconds"]
            assert isinstance(seconds, float)
            found.append((seconds, test))
    chosen = [test for _, test in sorted(found)]
    always = [t for t in target.always if t not in chosen and (ROOT / t).exists()]
    return chosen + [t for t in always if t not in excluded]


@dataclass
class Worker:
    """A private copy of the tree and a fork server in it; one mutant at a time."""

    number: int
    tree: Path
    server: subprocess.Popen[str] | None = None

    def start(self, files: list[str]) -> None:
        env = _environment(self.tree, f"mut{os.getpid()}w{self.number}")
        self.server = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [
                str(ROOT / ".venv" / "bin" / "python"),
                str(self.tree / "scripts" / "_mutate_server.py"),
                "-m",
                "not browser",
                *[f"--deselect={test}" for test in FLAKY],
                *files,
            ],
            cwd=self.tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.server.stdout is not None
        json.loads(self.server.stdout.readline())

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()

    def run(self, mutant: Mutant, target: Target, tests: list[str], timeout: float) -> Mutant:
        assert self.server is not None and self.server.stdin and self.server.stdout
        module = self.tree / target.path
        original = module.read_text()
        module.write_text(mutant.source)
        try:
            request = {
                "module": target.path.removesuffix(".py").replace("/", "."),
                "source": mutant.source,
                "tests": ["-m", "not browser", *[f"--deselect={t}" for t in FLAKY], *tests],
                "timeout": timeout,
                "id": f"{mutant.target}-{mutant.index}",
            }
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            answer = json.loads(self.server.stdout.readline())
        finally:
            module.write_text(original)
        mutant.status, mutant.seconds = answer["status"], answer["seconds"]
        mutant.killed_by = answer["failed"]
        return mutant


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--line", type=int, action="append", help="only mutants on these lines")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument(
        "--exclude", action="append", default=[], help="a test file not to use (repeatable)"
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        help="a results JSON: run again only its mutants killed by an --exclude'd file "
        "(what the score was without those tests)",
    )
    parser.add_argument(
        "--survivors",
        type=Path,
        help="a results JSON: run again only its survivors (after tests were added)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="results JSONs to combine into one report, later ones winning (no run)",
    )
    parser.add_argument("--name", default="report", help="the results' file name stem")
    args = parser.parse_args()

    names = args.module or list(TARGETS)
    OUT.mkdir(parents=True, exist_ok=True)
    planned: list[tuple[Mutant, Target]] = []
    for name in names:
        for mutant in mutants(name, TARGETS[name]):
            if args.line and mutant.line not in args.line:
                continue
            planned.append((mutant, TARGETS[name]))
    if args.recheck is not None:
        earlier = json.loads(args.recheck.read_text())
        wanted = {
            (m["target"], m["index"])
            for m in earlier
            if m["status"] == "killed" and m["killed_by"].split("::")[0] in args.exclude
        }
        planned = [(m, t) for m, t in planned if (m.target, m.index) in wanted]
    if args.survivors is not None:
        earlier = json.loads(args.survivors.read_text())
        wanted = {
            (m["target"], m["index"]) for m in earlier if m["status"] in {"survived", "uncovered"}
        }
        planned = [(m, t) for m, t in planned if (m.target, m.index) in wanted]
    if args.merge:
        results: dict[tuple[str, int], dict[str, object]] = {}
        for path in args.merge:
            for m in json.loads(path.read_text()):
                results[(m["target"], m["index"])] = m
        merged = []
        for mutant, _ in planned:
            found = results.get((mutant.target, mutant.index))
            if found is not None:
                mutant.status = str(found["status"])
                mutant.seconds = float(found["seconds"])  # type: ignore[arg-type]
                mutant.killed_by = str(found["killed_by"])
                merged.append(mutant)
        _report(merged, names, 0.0, name=args.name)
        return 0
    if args.list:
        for mutant, _ in planned:
            print(f"{mutant.target}:{mutant.line} {mutant.function}: {mutant.description}")
        print(f"{len(planned)} mutants")
        return 0

    started = time.monotonic()
    workers = [Worker(n, WORK / f"w{n}") for n in range(max(1, args.jobs))]
    for worker in workers:
        _copy_tree(worker.tree)
    try:
        traced = trace(workers[0].tree, names)
        for test in list(traced):
            if test.split("::")[0] in args.exclude:
                del traced[test]
        files = sorted({t.split("::")[0] for t in traced})
        for worker in workers:
            worker.start(files)
        failing = sorted(test for test, result in traced.items() if not result["passed"])
        print(
            f"traced {len(traced)} tests in {time.monotonic() - started:.0f}s; "
            f"{len(failing)} failed or skipped unmutated and are not used",
            flush=True,
        )
        for test in failing:
            print(f"  not used: {test}", flush=True)
        free = list(workers)

        def one(item: tuple[Mutant, Target]) -> Mutant:
            mutant, target = item
            tests = covering(mutant, target, traced, tuple(args.exclude))
            if not tests:
                mutant.status = "uncovered"
                return mutant
            budget = sum(
                float(traced[t]["seconds"])
                for t in tests
                if t in traced  # type: ignore[arg-type]
            )
            budget += 20.0 * sum(t not in traced for t in tests)
            worker = free.pop()
            try:
                return worker.run(mutant, target, tests, max(30.0, 3 * budget + 15))
            finally:
                free.append(worker)

        done: list[Mutant] = []
        pool = ThreadPoolExecutor(len(workers))
        try:
            for mutant in pool.map(one, planned):
                done.append(mutant)
                mark = "S" if mutant.status in {"survived", "uncovered"} else "."
                print(
                    f"{mark} {mutant.target}:{mutant.line} {mutant.description} "
                    f"[{mutant.status} {mutant.seconds:.0f}s {mutant.killed_by}]",
                    flush=True,
                )
        finally:
            # On an interrupt the mutants not started are dropped, not run.
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        for worker in workers:
            worker.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    wall = time.monotonic() - started
    _report(done, names, wall, name=args.name)
    return 0


def _report(done: list[Mutant], names: list[str], wall: float, *, name: str) -> None:
    lines = [
        "| module | mutants | killed | timeout | survived | score |",
        "|---|---|---|---|---|---|",
    ]
    for module in names:
        mine = [m for m in done if m.target == module]
        if not mine:
            continue
        killed = sum(m.status == "killed" for m in mine)
        hung = sum(m.status == "timeout" for m in mine)
        survived = sum(m.status in {"survived", "uncovered"} for m in mine)
        score = 100.0 * (killed + hung) / len(mine)
        path = TARGETS[module].path
        lines.append(f"| `{path}` | {len(mine)} | {killed} | {hung} | {survived} | {score:.1f}% |")
    lines += ["", f"Wall time: {wall / 60:.1f} min", "", "Survivors:", ""]
    for m in done:
        if m.status in {"survived", "uncovered"}:
            how = " (no test runs it)" if m.status == "uncovered" else ""
            lines.append(
                f"- `{TARGETS[m.target].path}:{m.line}` ({m.function}): {m.description}{how}"
            )
    text = "\n".join(lines) + "\n"
    (OUT / f"{name}.md").write_text(text)
    (OUT / f"{name}.json").write_text(
        json.dumps([{k: v for k, v in vars(m).items() if k != "source"} for m in done], indent=1)
    )
    print(text)


if __name__ == "__main__":
    sys.exit(main())
