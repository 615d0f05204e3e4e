"""Set-up and everyday commands on a fresh machine with Python 3.11+, stdlib only.

    python3 -m service.tools.dev run     # the demo Records API on :8000, the connector on :5000
    python3 -m service.tools.dev test    # every test (unit, functional, Docker checks, lint)
    python3 -m service.tools.dev setup   # only create .venv/ and install the requirements

``run`` and ``test`` create ``.venv`` and install the pinned requirements first, and again
whenever a requirements file changes; ``setup`` does only that. Without a command, the
commands are listed. docs/dev.md is the reader's page for all of this.

``run`` reads these settings from the environment, beside the connector's own:

- ``UPSTREAM_URL``: your upstream. When it is set, ``run`` starts the connector against it
  and no demo upstream; when it is not, it starts the demo Records API and points the
  connector at it, if the connector reads the Records API's settings (the reference
  does). A connector to another upstream needs its own: without ``UPSTREAM_URL``, ``run``
  starts it when every setting it requires is set, and otherwise stops with one line that
  names them.
- ``DEV_COLLECTION``: the collection the ready line shows (``curl .../people``); default
  the one ``.env.example`` names (``people``, one of the demo's collections).
- ``PORT``: the connector's port (default 5000).
- ``DEMO_UPSTREAM_PORT``: the demo upstream's port (default 8000), when it runs.
- ``DEV_HOST``: the address both listen on (default ``127.0.0.1``: this machine only; the
  dev run has no basic auth unless you set ``AUTH_USERNAME`` and ``AUTH_PASSWORD``).
- ``SERVICE_DEV_PYTHON``: an interpreter that already has the requirements, used instead of
  ``.venv`` (the tests and the Docker image).

``run`` stops with a non-zero status and one line when it cannot serve: a port taken, a
server that exits before it answers, or one that stops while the other runs.

``run`` serves the connector's app, the one ``fork.toml`` names; ``run --app
MODULE:create_app()`` serves another app factory (the framework's tests run the reference
adapter, ``service.tools.reference``, this way).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import venv
from pathlib import Path
from typing import Any
from typing import NamedTuple

from service.tools.ownership import read_fork
from service.tools.servers import ServerError
from service.tools.servers import stop
from service.tools.servers import wait_until_up

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "service" / "requirements-dev.txt"


def default_collection() -> str:
    """``DEV_COLLECTION`` as ``.env.example`` sets it (CI's smoke test reads it there too)."""
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "DEV_COLLECTION" and value.strip():
            return value.strip()
    return "people"


# The contract's command, the image's CMD: gunicorn serves the app fork.toml names.
GUNICORN_ARGS = ["-c", "service/gunicorn.conf.py"]
PROG = "python3 -m service.tools.dev"
# Every command, as the usage lists it.
COMMANDS = {
    "run": "the connector on 127.0.0.1:5000, the demo Records API on :8000",
    "run --app MODULE:create_app()": "the same for another app factory",
    "test [PYTEST ARGS]": "every test, or those pytest's arguments select",
    "setup": "only create .venv/ and install the pinned requirements",
}
DEFAULT_HOST = "127.0.0.1"


def usage() -> str:
    width = max(len(command) for command in COMMANDS)
    lines = [f"usage: {PROG} COMMAND", "", "commands:"]
    lines += [f"  {command:<{width}}  {meaning}" for command, meaning in COMMANDS.items()]
    lines += [
        "",
        "run and test create .venv/ first (setup). run reads PORT, DEMO_UPSTREAM_PORT,",
        "DEV_HOST, DEV_COLLECTION, UPSTREAM_URL (your upstream: then no demo) and the",
        "connector's settings; SERVICE_DEV_PYTHON names a Python to use instead of .venv/.",
        "See docs/dev.md.",
    ]
    return "\n".join(lines)


def venv_python() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_venv() -> Path:
    """Create the virtual environment and install the pins, unless already done; say what
    it does, since the first time takes a while."""
    files = sorted((ROOT / "service").glob("requirements*.txt"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / ".requirements-sha256"
    if stamp.exists() and stamp.read_text() == digest and venv_python().exists():
        return venv_python()
    started = time.monotonic()
    print(
        f"dev setup: {VENV.name}/ with the pinned requirements (the first time takes a minute or so)",
        flush=True,
    )
    if not venv_python().exists():
        print(f"dev setup: creating {VENV.name}/", flush=True)
        venv.create(VENV, with_pip=True)
    python = str(venv_python())
    requirements = REQUIREMENTS.relative_to(ROOT).as_posix()
    steps = [
        ("upgrading pip", [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"]),
        (f"installing {requirements}", [python, "-m", "pip", "install", "-r", str(REQUIREMENTS)]),
    ]
    for step, command in steps:
        print(f"dev setup: {step}", flush=True)
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(
                f"dev setup: {step} failed (pip exited with {result.returncode}); "
                "its output is above"
            )
    stamp.write_text(digest)
    print(f"dev setup: {VENV.name}/ ready in {time.monotonic() - started:.0f}s", flush=True)
    return venv_python()


def python_to_use() -> Path:
    """``.venv``'s Python, or ``$SERVICE_DEV_PYTHON`` (an interpreter that already has the
    requirements, as in the tests and the Docker image)."""
    chosen = os.environ.get("SERVICE_DEV_PYTHON")
    return Path(chosen) if chosen else ensure_venv()


def describe(python: Path, app: str) -> dict[str, Any]:
    """The app's settings as ``service.tools.apps`` reads them (in the environment that
    can import it): whether the demo can stand in for its upstream, what it requires."""
    result = subprocess.run(
        [str(python), "-m", "service.tools.apps", "settings", app],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"cannot read the settings of {app}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reach(host: str, port: int) -> str:
    """``host:port`` for a URL to a server that listens on ``host`` (all addresses: loopback)."""
    try:
        everywhere = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a name
        everywhere = False
    return host_port("127.0.0.1" if everywhere else host, port)


def port_number(env: dict[str, str], name: str, default: str) -> int:
    value = env.get(name) or default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"dev run: {name} must be a port number, not {value!r}")
    return int(value)


def taken(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port`` now (as gunicorn binds)."""
    family, kind, proto, _, where = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(where)
        except OSError:
            return True
    return False


class Listener(NamedTuple):
    """A server ``run`` starts: what to call it, its port, the variable that sets it, and
    the URL that answers once it is up (the connector's health must be 200)."""

    name: str
    port: int
    variable: str
    url: str

    def wait_until_up(self, process: subprocess.Popen[bytes]) -> None:
        healthy = (lambda s: s == 200) if self.url.endswith("/health") else (lambda s: s < 500)
        try:
            wait_until_up(self.url, process, ok=healthy)
        except ServerError:
            if process.poll() is not None:
                raise SystemExit(
                    f"dev run: {self.name} exited with status {process.returncode} before it "
                    f"answered at {self.url} (its error is above)"
                ) from None
            raise SystemExit(f"dev run: {self.name} did not answer at {self.url} in 30 s") from None


def run(app: str | None = None) -> int:
    """The connector under gunicorn (the contract's command), beside the demo upstream
    unless ``UPSTREAM_URL`` names another or the connector reads another upstream.
    ``app``: another app factory than the connector's own (``fork.toml``)."""
    python = python_to_use()
    env = dict(os.environ)
    host = env.get("DEV_HOST") or DEFAULT_HOST
    port = port_number(env, "PORT", "5000")
    env["PORT"] = str(port)
    collection = urllib.parse.quote(env.get("DEV_COLLECTION") or default_collection())
    demo = False
    if not env.get("UPSTREAM_URL"):
        settings = describe(python, app or read_fork().app)
        demo = bool(settings["reads_the_demo"])
        missing = [name for name in settings["required"] if not env.get(name)]
        if not demo and missing:
            raise SystemExit(
                f"dev run: {settings['module']} does not read the demo Records API, so set "
                f"its upstream's settings: {', '.join(missing)} (docs/connector.md)"
            )
    servers = [Listener("the connector", port, "PORT", f"http://{reach(host, port)}/health")]
    if demo:
        upstream_port = port_number(env, "DEMO_UPSTREAM_PORT", "8000")
        upstream_url = f"http://{reach(host, upstream_port)}"
        servers.append(
            Listener("the demo Records API", upstream_port, "DEMO_UPSTREAM_PORT", upstream_url)
        )
    for server in servers:
        if taken(host, server.port):
            raise SystemExit(
                f"dev run: port {server.port} is taken, so {server.name} cannot listen on "
                f"{host_port(host, server.port)}: stop what listens there, or set "
                f"{server.variable} to a free port"
            )
    processes: list[subprocess.Popen[bytes]] = []
    # The production command as it is; only where it listens comes from the environment.
    bind = f"--bind={host_port(host, port)} {env.get('GUNICORN_CMD_ARGS', '')}"
    env["GUNICORN_CMD_ARGS"] = bind.strip()
    if demo:
        token = env.get("UPSTREAM_TOKEN", "demo-token")
        env["UPSTREAM_URL"] = upstream_url
        env["UPSTREAM_TOKEN"] = token
        env["DEMO_UPSTREAM_TOKEN"] = token
        command = [
            str(python),
            "-m",
            "service.tools.demo_upstream",
            "--host",
            host,
            "--port",
            str(upstream_port),
        ]
        stops = "both"
    elif env.get("UPSTREAM_URL"):
        print(f"upstream: {env['UPSTREAM_URL']} (UPSTREAM_URL; no demo upstream)", flush=True)
        stops = "it"
    else:
        print("upstream: the connector's own settings (no demo upstream)", flush=True)
        stops = "it"
    signal.signal(signal.SIGTERM, _interrupt)  # stop both, as on Ctrl-C
    try:
        processes.append(
            subprocess.Popen(
                [str(python.with_name("gunicorn")), *GUNICORN_ARGS, *([app] if app else [])],
                cwd=ROOT,
                env=env,
            )
        )
        if demo:
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env))
        for server, process in zip(servers, processes, strict=True):
            server.wait_until_up(process)
        print(
            f"\nready: curl http://localhost:{port}/{collection}   (Ctrl-C stops {stops})\n",
            flush=True,
        )
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        for server, process in zip(servers, processes, strict=True):
            if process.poll() is not None:
                others = ", so the other stops too" if len(processes) > 1 else ""
                print(
                    f"dev run: {server.name} stopped with status {process.returncode}{others}",
                    file=sys.stderr,
                    flush=True,
                )
                return process.returncode or 1
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            stop(process)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# The suite runs in two parts (docs/testing.md). First every test not marked ``serial``, on
# several pytest-xdist workers, each with its own servers, ports and temporary directories:
# most tests wait on servers more than they compute, so two workers a core keep the cores
# busy (on 2 cores, the parallel part took 203 s on 4 workers and 218 s on 3). Then the
# tests marked ``serial``, one at a time in one process with nothing beside them: those
# that measure time or memory, or load the machine so that others would.
SERIAL = "serial"
SUMMARY_COUNTS = ("passed", "failed", "errors", "error", "skipped", "xfailed", "xpassed")


def test_workers() -> int:
    """``TEST_WORKERS``, or twice the cores this process may use."""
    chosen = os.environ.get("TEST_WORKERS", "")
    if chosen.isdigit():
        return int(chosen)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 * (cores or 1)


def marker_expression(args: list[str]) -> tuple[str | None, list[str]]:
    """The ``-m`` expression among pytest's arguments, if any, and the other arguments."""
    expression, rest = None, []
    items = iter(args)
    for arg in items:
        if arg == "-m":
            expression = next(items, "")
        elif arg.startswith("-m") and not arg.startswith("--"):
            expression = arg[2:].lstrip("=")
        else:
            rest.append(arg)
    return expression, rest


def test(args: list[str]) -> int:
    """Every test (or those ``args`` select): the parallel part, then the serial part.
    Answers pytest's exit status: 0 when both parts passed, or one passed and the other
    had no test to run (5); 5 when neither had; else the first failure's."""
    python = python_to_use()
    expression, rest = marker_expression(args)
    rest = rest or ["service/tests"]

    def selecting(marker: str) -> str:
        return f"({expression}) and {marker}" if expression else marker

    base = [str(python), "-u", "-m", "pytest", "-c", "service/tests/pytest.ini"]
    base += ["--rootdir", "service/tests"]
    if sys.stdout.isatty():
        base.append("--color=yes")  # its output goes through a pipe to be counted
    workers = test_workers()
    parts = [
        (
            f"dev test: the tests not marked {SERIAL}, on {workers} workers",
            [*base, "-n", str(workers), "--dist", "worksteal", "-m", selecting(f"not {SERIAL}")],
            rest,
        ),
        (
            f"dev test: the tests marked {SERIAL}, one at a time",
            [*base, "-m", selecting(SERIAL)],
            [*rest, "-n", "0"],  # after the caller's arguments: no -n of theirs applies here
        ),
    ]
    statuses: list[int] = []
    totals: dict[str, int] = {}
    for title, command, arguments in parts:
        print(f"\n{title}", flush=True)
        status, counts = run_pytest([*command, *arguments])
        statuses.append(status)
        for name, count in counts.items():
            totals[name] = totals.get(name, 0) + count
        if status in (2, 3, 4):  # interrupted, an internal error, a usage error: stop here
            return status
    failed = totals.get("failed", 0) + totals.get("errors", 0) + totals.get("error", 0)
    line = f"total: {totals.get('passed', 0)} passed, {failed} failed"
    if totals.get("skipped"):
        line += f", {totals['skipped']} skipped"
    print(f"\n{line}", flush=True)
    if all(status == 5 for status in statuses):
        return 5
    return next((status for status in statuses if status not in (0, 5)), 0)


def run_pytest(command: list[str]) -> tuple[int, dict[str, int]]:
    """pytest's exit status, and the counts of its closing line (its output passes through)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
    assert process.stdout is not None
    closing = ""
    try:
        for raw in process.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            line = raw.decode("utf-8", errors="replace")
            if re.search(r"\d+ (passed|failed|errors?|skipped|deselected)\b.* in [\d.]+s", line):
                closing = line
    except KeyboardInterrupt:
        process.wait()
        raise
    counts = {
        name: int(number)
        for number, name in re.findall(r"(\d+) (\w+)", re.sub(r"\x1b\[[\d;]*m", "", closing))
        if name in SUMMARY_COUNTS
    }
    return process.wait(), counts


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on the system Python
        raise SystemExit("Python 3.11 or newer is needed")
    if argv == ["run"]:
        return run()
    if argv[:2] == ["run", "--app"] and len(argv) == 3:
        return run(argv[2])
    if argv[:1] == ["test"]:
        return test(argv[1:])
    if argv == ["setup"]:
        ensure_venv()
        return 0
    print(usage())
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
