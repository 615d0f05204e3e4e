"""A mutation audit of the framework's modules: do the tests notice when the code is wrong?

    python -m service.tools.mutation_audit                 # every module, 2 workers
    python -m service.tools.mutation_audit sink sequences  # some modules
    python -m service.tools.mutation_audit --list          # the mutants, without running

Each mutant is one small change to one module (a flipped comparison, ``and`` for ``or``,
``True`` for ``False``, a negated condition, a deleted ``raise``/``return``/call, a
changed constant). It is applied in a copy of the repository in a temporary directory,
never in the working tree, and the tests that cover the module run against that copy;
the mutant is killed when they fail (or hang past the timeout). mutmut cannot do this
here: most of the protocol code runs inside the gunicorn processes of the functional
tests, which import the module from the copy's files, not from the tester's process.

Survivors that cannot change behaviour are listed in ``mutation_equivalents.txt`` beside
this file, one per line, ``<key> | <reason>``; they are reported apart and left out of
the score. The key names the module, the enclosing function and the change, not the line
number, so it survives edits elsewhere. See docs/mutation-audit.md.
"""

from __future__ import annotations

import argparse
import ast
import collections
import concurrent.futures
import dataclasses
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.txt")
MAX_WORKERS = 2

UNIT = "service/tests/unit/"
FUNCTIONAL = "service/tests/functional/"

# Per module of service/framework/: the module, then the test files that exercise it,
# fastest first (with -x the first failure ends the run, so most mutants die in the unit
# tests within seconds). A fork's maintainers add their own tests of a module here. The
# sink module also reads the HTTP transform's bodies (Bodies, walk), so the transform's
# tests are among its own. test_slow_clients.py (about 90 s, and it bounds memory, so it
# runs alone) is left out of every list but the worker's, whose stalled clients only it
# can show: too slow to run for each surviving mutant of a module that other tests reach.
# An entry may name one test (``file::test``): the worker's list takes the stalled and
# slow clients of test_slow_clients.py, not its measures of memory under the heaviest
# loads (each 30 to 45 s alone, past the audit's 30 s a test beside other runs; the suite
# runs them alone).
FEED_UNIT = (
    UNIT + "test_feed_tokens.py",
    UNIT + "test_settle_window.py",
    UNIT + "test_feed_chunks.py",
    UNIT + "test_feed_settle.py",
    UNIT + "test_feed_untrusted_pages.py",
    UNIT + "test_feed_fast_path.py",
    UNIT + "test_feed_upstreams_that_offer_less.py",
)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "adapter": (
        "service/framework/adapter.py",
        (
            UNIT + "test_adapter_defaults.py",
            UNIT + "test_settle_window.py",
            UNIT + "test_sesam_config.py",
            UNIT + "test_feed_upstreams_that_offer_less.py",
            UNIT + "test_sink_validation.py",
            UNIT + "test_sink_failures.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "app": (
        "service/framework/app.py",
        (
            UNIT + "test_memory_budget.py",
            UNIT + "test_sink_validation.py",
            UNIT + "test_sink_failures.py",
            UNIT + "test_transform_protocol.py",
            FUNCTIONAL + "test_basic_auth_http.py",
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_feed_query_http.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "auth": (
        "service/framework/auth.py",
        (
            FUNCTIONAL + "test_basic_auth_http.py",
            FUNCTIONAL + "test_hostile_input.py",
        ),
    ),
    "bounded": (
        "service/framework/bounded.py",
        (
            UNIT + "test_upstream_bounds.py",
            UNIT + "test_upstream_auth.py",
            UNIT + "test_paging.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
            FUNCTIONAL + "test_untrusted_upstream_credentials.py",
        ),
    ),
    "deadlines": (
        "service/framework/deadlines.py",
        (
            UNIT + "test_deadlines.py",
            UNIT + "test_upstream_bounds.py",
            UNIT + "test_upstream_auth.py",
            UNIT + "test_transform_protocol.py",
            UNIT + "test_sink_failures.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
            FUNCTIONAL + "test_untrusted_upstream_deadlines.py",
        ),
    ),
    "errors": (
        "service/framework/errors.py",
        (
            UNIT + "test_errors.py",
            UNIT + "test_sink_failures.py",
            UNIT + "test_transform_protocol.py",
            UNIT + "test_memory_budget.py",
            UNIT + "test_masking.py",
            *FEED_UNIT,
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "feed": (
        "service/framework/feed.py",
        (
            *FEED_UNIT,
            UNIT + "test_positions.py",
            UNIT + "test_prefetch.py",
            UNIT + "test_prefetch_stops.py",
            UNIT + "test_memory_budget.py",
            UNIT + "test_upstream_bounds.py",
            FUNCTIONAL + "test_feed_query_http.py",
            FUNCTIONAL + "test_feed_upstream_reads_http.py",
            FUNCTIONAL + "test_feed_upstream_bodies_http.py",
            FUNCTIONAL + "test_untrusted_upstream_loops.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "jsontext": (
        "service/framework/jsontext.py",
        (
            UNIT + "test_jsontext.py",
            UNIT + "test_sink_validation.py",
            UNIT + "test_upstream_bounds.py",
            UNIT + "test_upstream_auth.py",
            *FEED_UNIT,
            FUNCTIONAL + "test_hostile_input.py",
        ),
    ),
    "masking": (
        "service/framework/masking.py",
        (
            UNIT + "test_masking.py",
            UNIT + "test_config.py",
            UNIT + "test_upstream_bounds.py",
            UNIT + "test_upstream_auth.py",
            FUNCTIONAL + "test_untrusted_upstream_credentials.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "memory": (
        "service/framework/memory.py",
        (
            UNIT + "test_memory_budget.py",
            UNIT + "test_transform_protocol.py",
            UNIT + "test_sink_failures.py",
            UNIT + "test_sink_validation.py",
            UNIT + "test_upstream_bounds.py",
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
        ),
    ),
    "paging": (
        "service/framework/paging.py",
        (
            UNIT + "test_paging.py",
            UNIT + "test_paging_keys.py",
            UNIT + "test_merged_paging.py",
            UNIT + "test_feed_upstreams_that_offer_less.py",
            FUNCTIONAL + "test_fork_blocks_http.py",
            FUNCTIONAL + "test_untrusted_upstream_loops.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "positions": (
        "service/framework/positions.py",
        (
            UNIT + "test_positions.py",
            *FEED_UNIT,
            FUNCTIONAL + "test_feed_since_http.py",
            FUNCTIONAL + "test_feed_query_http.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
        ),
    ),
    "rate_limit": (
        "service/framework/rate_limit.py",
        (UNIT + "test_rate_limit.py",),
    ),
    "sequences": (
        "service/framework/sequences.py",
        (
            UNIT + "test_sequences.py",
            UNIT + "test_sequence_rules.py",
            UNIT + "test_sequence_overlaps.py",
            UNIT + "test_sequence_races.py",
            UNIT + "test_sink_failures.py",
            FUNCTIONAL + "test_sink_races.py",
            FUNCTIONAL + "test_untrusted_upstream_sink.py",
            FUNCTIONAL + "test_sink_deletion_http.py",
            FUNCTIONAL + "test_sink_http.py",
        ),
    ),
    "settings": (
        "service/framework/settings.py",
        (
            UNIT + "test_config.py",
            UNIT + "test_settle_window.py",
            UNIT + "test_sesam_config.py",
            UNIT + "test_masking.py",
            UNIT + "test_retry_budgets.py",
            UNIT + "test_memory_budget.py",
            UNIT + "test_upstream_auth.py",
            FUNCTIONAL + "test_fail_fast.py",
            FUNCTIONAL + "test_untrusted_upstream_credentials.py",
        ),
    ),
    "sink": (
        "service/framework/sink.py",
        (
            UNIT + "test_sink_validation.py",
            UNIT + "test_sink_failures.py",
            UNIT + "test_transform_protocol.py",
            UNIT + "test_memory_budget.py",
            FUNCTIONAL + "test_sink_edges_http.py",
            FUNCTIONAL + "test_sink_races.py",
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_untrusted_upstream_sink.py",
            FUNCTIONAL + "test_sink_deletion_http.py",
            FUNCTIONAL + "test_transform_http.py",
            FUNCTIONAL + "test_sink_http.py",
        ),
    ),
    "transform": (
        "service/framework/transform.py",
        (
            UNIT + "test_transform_protocol.py",
            FUNCTIONAL + "test_transform_http.py",
            FUNCTIONAL + "test_hostile_input.py",
        ),
    ),
    "transit": (
        "service/framework/transit.py",
        (
            UNIT + "test_transit.py",
            UNIT + "test_transit_edges.py",
            UNIT + "test_sink_validation.py",
            FUNCTIONAL + "test_sink_edges_http.py",
            FUNCTIONAL + "test_sink_http.py",
        ),
    ),
    "upstream": (
        "service/framework/upstream.py",
        (
            UNIT + "test_retry_policy.py",
            UNIT + "test_key_path.py",
            UNIT + "test_jsontext.py",
            UNIT + "test_upstream_bounds.py",
            UNIT + "test_upstream_auth.py",
            UNIT + "test_retry_budgets.py",
            UNIT + "test_rate_limit.py",
            UNIT + "test_sink_failures.py",
            UNIT + "test_sink_validation.py",
            FUNCTIONAL + "test_feed_upstream_reads_http.py",
            FUNCTIONAL + "test_feed_upstream_bodies_http.py",
            FUNCTIONAL + "test_fork_blocks_http.py",
            FUNCTIONAL + "test_untrusted_upstream_answers.py",
            FUNCTIONAL + "test_untrusted_upstream_credentials.py",
            FUNCTIONAL + "test_fail_fast.py",
            FUNCTIONAL + "test_feed_http.py",
        ),
    ),
    "upstream_auth": (
        "service/framework/upstream_auth.py",
        (
            UNIT + "test_upstream_auth.py",
            UNIT + "test_deadlines.py",
            UNIT + "test_masking.py",
            FUNCTIONAL + "test_fork_blocks_http.py",
            FUNCTIONAL + "test_untrusted_upstream_credentials.py",
            FUNCTIONAL + "test_fail_fast.py",
        ),
    ),
    "upstream_errors": (
        "service/framework/upstream_errors.py",
        (
            UNIT + "test_masking.py",
            UNIT + "test_upstream_bounds.py",
        ),
    ),
    "worker": (
        "service/framework/worker.py",
        (
            UNIT + "test_worker.py",
            FUNCTIONAL + "test_worker_http.py",
            FUNCTIONAL + "test_hostile_input.py",
            FUNCTIONAL + "test_sink_http.py",
            FUNCTIONAL
            + "test_feed_http.py::test_a_secret_in_a_request_line_is_hidden_in_gunicorns_access_log",
            *(
                FUNCTIONAL + "test_slow_clients.py::" + test
                for test in (
                    "test_stalled_clients_do_not_starve_the_service_and_are_reclaimed",
                    "test_a_slow_but_steady_reader_gets_the_whole_feed",
                    "test_batches_that_fit_together_are_handled_together",
                )
            ),
        ),
    ),
}

_FLIPPED_COMPARISONS: dict[type[ast.cmpop], type[ast.cmpop]] = {
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
}
_SWAPPED_ARITHMETIC: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
}
_LOGGERS = frozenset({"log", "logger", "logging"})


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One single-point change: the text between two byte offsets becomes ``new``."""

    module: str  # the MODULES name
    path: str  # relative to the repository
    line: int
    start: int  # byte offsets into the UTF-8 source
    end: int
    new: str
    kind: str
    change: str  # what a reader sees: `old` -> `new`
    key: str  # stable: module, enclosing function, change, and its occurrence there

    def apply(self, source: str) -> str:
        data = source.encode("utf-8")
        return (data[: self.start] + self.new.encode("utf-8") + data[self.end :]).decode("utf-8")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Collector(ast.NodeVisitor):
    """Walks a module and records every mutation site, skipping text that is not code:
    docstrings, annotations, f-strings, exception messages and logging calls."""

    def __init__(self, source: str) -> None:
        self.source = source
        data = source.encode("utf-8")
        self.line_starts = [0]
        for index, byte in enumerate(data):
            if byte == 0x0A:
                self.line_starts.append(index + 1)
        self.scope: list[str] = []
        self.sites: list[tuple[int, int, int, str, str, str, str]] = []
        self.skip_strings = 0

    # --- positions ------------------------------------------------------------------

    def _span(self, node: ast.AST) -> tuple[int, int]:
        start = self.line_starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = self.line_starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        return start, end

    def _text(self, node: ast.AST) -> str:
        start, end = self._span(node)
        return self.source.encode("utf-8")[start:end].decode("utf-8")

    def _add(self, node: ast.AST, new: str, kind: str, old: str, shown_new: str) -> None:
        start, end = self._span(node)
        scope = ".".join(self.scope) or "<module>"
        change = f"`{_short(old)}` -> `{_short(shown_new)}`"
        self.sites.append((node.lineno, start, end, new, kind, change, scope))  # type: ignore[attr-defined]

    def _expression(self, node: ast.expr, mutated: ast.expr, kind: str) -> None:
        new = ast.unparse(mutated)
        self._add(node, f"({new})", kind, ast.unparse(node), new)

    # --- scopes and skipped text ------------------------------------------------------

    def _body_without_docstring(self, body: list[ast.stmt]) -> list[ast.stmt]:
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                return body[1:]
        return body

    def visit_Module(self, node: ast.Module) -> None:
        for statement in self._body_without_docstring(node.body):
            self.visit(statement)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self.scope.append(node.name)
        for statement in self._body_without_docstring(node.body):
            self.visit(statement)
        self.scope.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        for statement in self._body_without_docstring(node.body):
            self.visit(statement)
        self.scope.pop()

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node: ast.Import) -> None:
        return

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        return

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # message text

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if (
            isinstance(function, ast.Attribute)
            and isinstance(function.value, ast.Name)
            and function.value.id in _LOGGERS
        ):
            return  # log text and its arguments
        self.generic_visit(node)

    # --- statements -----------------------------------------------------------------

    def _delete(self, node: ast.stmt, kind: str) -> None:
        self._add(node, "pass", kind, ast.unparse(node), "pass")

    def visit_Raise(self, node: ast.Raise) -> None:
        self._delete(node, "delete raise")
        self.skip_strings += 1  # the message of what is raised
        self.generic_visit(node)
        self.skip_strings -= 1

    def visit_Return(self, node: ast.Return) -> None:
        self._delete(node, "delete return")
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Call | ast.Yield | ast.YieldFrom):
            self._delete(node, "delete call")
        self.generic_visit(node)

    def visit_Break(self, node: ast.Break) -> None:
        self._delete(node, "delete break")

    def visit_Continue(self, node: ast.Continue) -> None:
        self._delete(node, "delete continue")

    def _negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # the same mutant as removing the ``not``
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            if isinstance(
                test.ops[0], ast.Eq | ast.NotEq | ast.Is | ast.IsNot | ast.In | ast.NotIn
            ):
                return  # the same mutant as flipping the comparison
        text = self._text(test)
        self._add(test, f"not ({text})", "negate condition", ast.unparse(test), f"not ({text})")

    def visit_If(self, node: ast.If) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        for condition in node.ifs:
            self._negate(condition)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swapped = _SWAPPED_ARITHMETIC.get(type(node.op))
        if swapped is not None:
            mutated = ast.AugAssign(node.target, swapped(), node.value)
            new = ast.unparse(mutated)
            self._add(node, new, "swap arithmetic", ast.unparse(node), new)
        self.generic_visit(node)

    # --- expressions ----------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            flipped = _FLIPPED_COMPARISONS.get(type(op))
            if flipped is not None:
                ops = list(node.ops)
                ops[index] = flipped()
                self._expression(
                    node, ast.Compare(node.left, ops, node.comparators), "flip compare"
                )
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        swapped = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._expression(node, ast.BoolOp(swapped, node.values), "swap and/or")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(
                node,
                f"({self._text(node.operand)})",
                "remove not",
                ast.unparse(node),
                ast.unparse(node.operand),
            )
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swapped = _SWAPPED_ARITHMETIC.get(type(node.op))
        textual = any(
            isinstance(side, ast.JoinedStr)
            or (isinstance(side, ast.Constant) and isinstance(side.value, str | bytes))
            for side in (node.left, node.right)
        )
        if swapped is not None and not textual:
            self._expression(node, ast.BinOp(node.left, swapped(), node.right), "swap arithmetic")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._expression(node, ast.Constant(not value), "swap boolean")
        elif isinstance(value, int | float):
            self._expression(node, ast.Constant(value + 1), "change number")
        elif isinstance(value, str) and not self.skip_strings:
            self._expression(node, ast.Constant("" if value else "mutant"), "change string")


def generate(module: str, path: str, source: str) -> list[Mutant]:
    """Every single-point mutant of one module's source, each with a stable key."""
    collector = _Collector(source)
    collector.visit(ast.parse(source))
    seen: collections.Counter[str] = collections.Counter()
    mutants = []
    for line, start, end, new, kind, change, scope in sorted(collector.sites):
        base = f"{Path(path).name} {scope}: {change}"
        seen[base] += 1
        key = base if seen[base] == 1 else f"{base} #{seen[base]}"
        mutants.append(Mutant(module, path, line, start, end, new, kind, change, key))
    return mutants


def module_mutants(names: list[str]) -> list[Mutant]:
    mutants = []
    for name in names:
        path, _ = MODULES[name]
        mutants.extend(generate(name, path, (ROOT / path).read_text(encoding="utf-8")))
    return mutants


def read_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """``key | reason`` per line; ``#`` starts a comment line."""
    equivalents = {}
    if not path.exists():
        return equivalents
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, separator, reason = line.rpartition(" | ")
        if not separator or not key.strip() or not reason.strip():
            raise SystemExit(f"{path.name}:{number}: expected '<key> | <reason>'")
        equivalents[key.strip()] = reason.strip()
    return equivalents


# --- running ---------------------------------------------------------------------------


def _ignored(directory: str, names: list[str]) -> set[str]:
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "state", ".benchmarks"}
    return {name for name in names if name in skip or name.endswith(".pyc")}


def make_copy(parent: Path) -> Path:
    copy = Path(tempfile.mkdtemp(prefix="mutant-", dir=parent))
    shutil.copytree(ROOT, copy / "repo", ignore=_ignored, symlinks=True)
    return copy / "repo"


def entry_file(test: str) -> str:
    """The file of a list's entry: the entry itself, or the part before ``::``."""
    return test.partition("::")[0]


_RUNNING: set[subprocess.Popen[bytes]] = set()  # killed if the audit is interrupted
TEST_TIMEOUT = 30  # seconds per test (pytest-timeout): a hung mutant is killed


def run_tests(
    copy: Path, tests: tuple[str, ...], timeout: float, output: Path | None = None
) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds it took; pytest's output goes to
    ``output`` when given (the baseline's, to show when it fails), else nowhere."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        "service/tests/pytest.ini",
        "--rootdir",
        "service/tests",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        str(TEST_TIMEOUT),
        *[t for t in tests if (copy / entry_file(t)).exists()],
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale bytecode of a mutated file, ever
    started = time.monotonic()
    with open(output or os.devnull, "wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=copy,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _RUNNING.add(process)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        return "timeout", time.monotonic() - started
    finally:
        _RUNNING.discard(process)
    return ("passed" if code == 0 else "failed"), time.monotonic() - started


def baseline(copy: Path, name: str) -> float:
    """The unmutated tests of module ``name`` in ``copy``: the seconds they take, or exit
    with pytest's own report of what failed (the tail of its output)."""
    tests = MODULES[name][1]
    output = copy.parent / f"baseline-{name}.log"
    outcome, seconds = run_tests(copy, tests, timeout=1800, output=output)
    if outcome != "passed":
        report = output.read_text(encoding="utf-8", errors="replace").strip()
        tail = "\n".join(report.splitlines()[-60:])
        why = "did not finish in 1800 s" if outcome == "timeout" else "fail"
        raise SystemExit(
            f"{tail}\n\nthe tests of {name} {why} without any mutant (pytest's report is "
            f"above; each test has {TEST_TIMEOUT} s here): fix them first"
        )
    return seconds


def _kill(process: subprocess.Popen[bytes]) -> None:
    """The test run and every server it started (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@dataclasses.dataclass
class Result:
    mutant: Mutant
    outcome: str  # killed, survived, timeout
    seconds: float


def audit(
    mutants: list[Mutant], workers: int, progress: bool = True
) -> tuple[list[Result], dict[str, float]]:
    """Run every mutant in copies of the repository (one per worker): the results, and
    the seconds each module's unmutated tests took."""
    with tempfile.TemporaryDirectory(prefix="mutation-audit-") as scratch:
        copies: queue.Queue[Path] = queue.Queue()
        for _ in range(workers):
            copies.put(make_copy(Path(scratch)))
        names = sorted({m.module for m in mutants})
        budgets = {}
        baselines: dict[str, float] = {}
        for name in names:  # the unmutated tests must pass, and set the time budget
            path, tests = MODULES[name]
            copy = copies.get()
            try:
                seconds = baseline(copy, name)
            finally:
                copies.put(copy)
            budgets[name] = seconds * 3 + 60
            baselines[name] = seconds
            if progress:
                print(
                    f"baseline {name}: {sum((copy / entry_file(t)).exists() for t in tests)} test files "
                    f"pass in {seconds:.0f}s",
                    flush=True,
                )

        def one(mutant: Mutant) -> Result:
            copy = copies.get()
            target = copy / mutant.path
            original = target.read_text(encoding="utf-8")
            try:
                target.write_text(mutant.apply(original), encoding="utf-8")
                outcome, seconds = run_tests(
                    copy, MODULES[mutant.module][1], budgets[mutant.module]
                )
            finally:
                target.write_text(original, encoding="utf-8")
                copies.put(copy)
            verdict = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[outcome]
            return Result(mutant, verdict, seconds)

        results = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        try:
            for done, result in enumerate(pool.map(one, mutants), start=1):
                results.append(result)
                if progress:
                    print(
                        f"[{done}/{len(mutants)}] {result.outcome:8} {result.seconds:5.1f}s "
                        f"{result.mutant.path}:{result.mutant.line} {result.mutant.change}",
                        flush=True,
                    )
        except BaseException:  # Ctrl-C, SIGTERM: stop the test runs, then leave
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(_RUNNING):
                _kill(process)
            raise
        pool.shutdown()
        return results, baselines


def report(
    results: list[Result], equivalents: dict[str, str], baselines: dict[str, float] | None = None
) -> bool:
    """Print the score per module, the survivors, the equivalents; True when every
    mutant not listed as equivalent was killed (100% in every module). A module's time is
    its test runs' added up (the baseline's and each mutant's): with two workers the
    audit's own time is about half of the sum."""
    by_module: dict[str, list[Result]] = collections.defaultdict(list)
    for result in results:
        by_module[result.mutant.module].append(result)
    target_met = True
    print("\nmodule           mutants  killed  equivalent  survived   score  minutes")
    survivors, equivalent, stale = [], [], []
    for name, module_results in sorted(by_module.items()):
        killed = sum(r.outcome != "survived" for r in module_results)
        alive = [r for r in module_results if r.outcome == "survived"]
        known = [r for r in alive if r.mutant.key in equivalents]
        unknown = [r for r in alive if r.mutant.key not in equivalents]
        stale.extend(
            r for r in module_results if r.outcome != "survived" and r.mutant.key in equivalents
        )
        scored = len(module_results) - len(known)
        score = 100.0 * killed / scored if scored else 100.0
        target_met &= not unknown
        minutes = (sum(r.seconds for r in module_results) + (baselines or {}).get(name, 0)) / 60
        print(
            f"{name:16} {len(module_results):7}  {killed:6}  {len(known):10}  "
            f"{len(unknown):8}  {score:5.1f}%  {minutes:7.1f}"
        )
        survivors.extend(unknown)
        equivalent.extend(known)
    if survivors:
        print("\nsurvivors (the tests did not notice):")
        for r in survivors:
            print(f"  {r.mutant.path}:{r.mutant.line}  {r.mutant.kind}: {r.mutant.change}")
            print(f"      key: {r.mutant.key}")
    if equivalent:
        print(f"\nequivalent survivors ({len(equivalent)}, listed in {EQUIVALENTS.name}):")
        for r in equivalent:
            print(
                f"  {r.mutant.path}:{r.mutant.line}  {r.mutant.change}: {equivalents[r.mutant.key]}"
            )
    if stale:
        print(f"\nlisted as equivalent but killed (remove from {EQUIVALENTS.name}):")
        for r in stale:
            print(f"  {r.mutant.key}")
    return target_met


def _select(mutants: list[Mutant], only: list[str]) -> Iterator[Mutant]:
    for mutant in mutants:
        if not only or any(fragment in mutant.key for fragment in only):
            yield mutant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.mutation_audit",
        description="Mutation audit of the framework modules (see docs/mutation-audit.md).",
    )
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(MODULES))
    parser.add_argument(
        "--workers", type=int, default=MAX_WORKERS, choices=range(1, MAX_WORKERS + 1)
    )
    parser.add_argument(
        "--list", action="store_true", help="list the mutants and their keys; run nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only mutants whose key contains TEXT",
    )
    parser.add_argument(
        "--skip-equivalent",
        action="store_true",
        help="do not run the mutants listed as equivalent (faster; the score is the same, "
        "but an entry whose mutant is now killed is not found)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}: choose from {', '.join(MODULES)}")
    names = args.modules or list(MODULES)
    mutants = list(_select(module_mutants(names), args.only))
    if args.list:
        for m in mutants:
            print(f"{m.path}:{m.line}  {m.kind}: {m.change}\n    key: {m.key}")
        print(f"{len(mutants)} mutants")
        return 0
    equivalents = read_equivalents()
    skipped = []
    if args.skip_equivalent:  # the same score: a listed mutant never counts against it
        skipped = [Result(m, "survived", 0.0) for m in mutants if m.key in equivalents]
        mutants = [m for m in mutants if m.key not in equivalents]
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    results, baselines = audit(mutants, args.workers) if mutants else ([], {})
    met = report(results + skipped, equivalents, baselines)
    print(f"\n{len(results)} mutants in {(time.monotonic() - started) / 60:.1f} minutes")
    return 0 if met else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
