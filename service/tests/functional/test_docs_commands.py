"""Every command the README and docs/ show in a ``sh`` block works as a reader types it.

Each one is run by a test: here (the tests below run the docs' own lines, through bash,
from the repository root or a scratch folder), or by the test named in ``ELSEWHERE``.
A few cannot run on a test machine, each for the reason ``NOT_RUN`` gives (they need a
Sesam node, publish an image, or are the whole suite CI already runs). A command added to
the docs without a test fails ``test_every_command_the_docs_show_is_run_by_a_test``.

What the tests change in a command, and only that: the ports (the docs use 5000 and 8000
and 8100; a test takes free ones, so that it can run beside a ``dev run``), and
``.venv/bin/`` for the folder of the Python running the tests, which is ``.venv/bin/``
under ``python3 -m service.tools.dev test`` (in the Docker image the tools are on the
system Python). A ``curl`` line runs when curl is installed (the slim image has none).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.tests.framework_kit import DEMO_SETTINGS
from service.tools import apps
from service.tools.servers import free_port
from service.tools.servers import stop
from service.tools.servers import wait_until_up
from service.tools.sesam_expected import SESAM

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = str(Path(sys.executable).parent)
# The compose service of the connector: a role, the same in every fork (docs/docker.md).
SERVICE = "connector"
# The image the docs build and push: the one the system in sesam/ runs (a rename changes it).
IMAGE = next(
    json.loads(path.read_text(encoding="utf-8"))["docker"]["image"]
    for path in sorted((ROOT / "sesam" / "systems").glob("*.conf.json"))
)

# Run by another test: command -> (that test or fixture, as file::name, relative to
# service/tests).
ENGINE = "functional/test_docker_engine.py"
UPGRADE = "functional/test_upgrade.py"
ELSEWHERE = {
    "python3 -m service.tools.dev run": (
        "functional/test_dev_run.py::test_the_readmes_run_command_serves_the_demo_or_names_the_settings_to_set"
    ),
    "python3 -m service.tools.dev setup": (
        "functional/test_dev_run.py::test_the_first_set_up_says_what_it_does_while_it_installs"
    ),
    "python3 -m service.tools.rename NAME": "functional/test_rename.py::renamed",
    "python3 -m service.tools.rename acme-crm": (
        "unit/test_rename_rules.py::test_a_rename_moves_the_module_and_every_place_that_names_it"
    ),
    "python3 -m service.tools.rename acme-crm --dry-run": (
        "unit/test_rename_rules.py::test_a_dry_run_changes_nothing"
    ),
    # docs/upgrading.md, on throwaway repositories (the reference's path for URL, a release
    # of the test's own for the example, a file for FILE).
    "git remote add --no-tags reference URL": f"{UPGRADE}::repositories",
    "git ls-remote --tags reference 'framework/v*'": f"{UPGRADE}::merged",
    "git fetch reference tag framework/v2.1.0": f"{UPGRADE}::merged",
    "python3 -m service.tools.ownership edited framework/v2.1.0": f"{UPGRADE}::merged",
    "git merge framework/v2.1.0": f"{UPGRADE}::merged",
    "git checkout --theirs -- FILE && git add FILE": (
        f"{UPGRADE}::test_a_conflict_is_resolved_as_the_page_says"
    ),
    "git checkout --ours -- FILE && git add FILE": (
        f"{UPGRADE}::test_a_conflict_is_resolved_as_the_page_says"
    ),
    "git commit --no-edit": f"{UPGRADE}::test_a_conflict_is_resolved_as_the_page_says",
    "git merge --abort": f"{UPGRADE}::test_a_conflict_is_resolved_as_the_page_says",
    "python3 -m service.tools.ownership": (
        "unit/test_ownership.py::test_the_version_command_says_which_release_and_which_connector"
    ),
    # Its test kit starts it with these options (ports from the OS): every test of it.
    ".venv/bin/python -m service.tools.hostile_upstream --port 8800 --other-port 8801 --token T --client-id ID --client-secret SECRET --expires-in 3600": (
        "hostile_kit.py::hostile_server"
    ),
    # When a Docker engine answers (the fork's CI has a job for them).
    "docker-compose up --build -d": f"{ENGINE}::compose_up",
    "docker-compose build": f"{ENGINE}::compose_up",
    "docker-compose up -d": f"{ENGINE}::compose_up",
    "docker-compose down": f"{ENGINE}::compose_up",
    "curl localhost:5000/people": f"{ENGINE}::test_compose_up_serves_the_feed_on_the_published_port",
    f"docker-compose exec {SERVICE} pytest": (
        f"{ENGINE}::test_the_suite_is_green_inside_the_container"
    ),
    f"docker build -t {IMAGE} .": f"{ENGINE}::runtime_image",
    # The same programs and options with smaller numbers: the full runs take minutes.
    ".venv/bin/python -m service.tools.benchmarks.bench_feed --upstream fast --records 300000 --repeat 3": (
        "functional/test_benchmark_smoke.py::test_the_feed_benchmark_runs_and_all_four_deliver_every_record_from_both_upstreams"
    ),
    ".venv/bin/python -m service.tools.benchmarks.bench_feed --upstream fast --records 100000 300000 1000000 --naive-max-records 300000": (
        "functional/test_benchmark_smoke.py::test_the_feed_benchmark_runs_and_all_four_deliver_every_record_from_both_upstreams"
    ),
    ".venv/bin/python -m service.tools.benchmarks.bench_feed --upstream computed --records 300000 --no-verify": (
        "functional/test_benchmark_smoke.py::test_the_feed_benchmark_runs_and_all_four_deliver_every_record_from_both_upstreams"
    ),
    ".venv/bin/python -m service.tools.benchmarks.bench_sink --entities 3000 --repeat 3": (
        "functional/test_benchmark_smoke.py::test_the_sink_benchmark_runs_and_reports_parsing_and_every_sink"
    ),
    ".venv/bin/python -m service.tools.benchmarks.bench_transform --entities 2000 --repeat 3": (
        "functional/test_benchmark_smoke.py::test_the_transform_benchmark_runs_and_both_answer_alike"
    ),
}

# Not run by any test, each for its reason.
NODE = "needs sesam-py and a Sesam node, which no test machine has"
SUITE = "the whole suite: CI runs exactly this (.ci/run), and a test cannot run the suite it is in"
NOT_RUN = {
    "python3 -m service.tools.dev test": SUITE,
    "cd sesam": NODE,
    "sesam upload": NODE,
    "sesam test": NODE,
    "sesam status": NODE,
    f"docker push {IMAGE}": "publishes an image",
    f"docker-compose push {SERVICE}": "publishes an image",
    'git add -A && git commit -m "Rename to acme-crm"': "git's own, in the reader's fork",
    ".venv/bin/python -m service.tools.mutation_audit": "the audit: an hour and more, not in CI",
    ".venv/bin/python -m service.tools.mutation_audit sink sequences": (
        "the audit: many minutes, not in CI"
    ),
    ".venv/bin/python -m service.tools.mutation_audit sink --skip-equivalent": (
        "the audit: many minutes, not in CI"
    ),
    '.venv/bin/python -m service.tools.mutation_audit --only "Sink.delete_missing"': (
        "the audit: minutes, not in CI; the key it names is checked against --list here"
    ),
}

# Run by the tests below.
LIST_COMMANDS = "python3 -m service.tools.dev"
SOME_TESTS = "python3 -m service.tools.dev test service/tests/unit/test_transit.py"
TEST_FOLDERS = (  # checked here up to pytest's collection: the suite runs the tests
    "python3 -m service.tools.dev test service/tests/conformance",
    "python3 -m service.tools.dev test service/tests/examples",
)
FORK_GREP = 'grep -n "FORK:" service/*.py service/tests/conftest.py'
MUTANTS = ".venv/bin/python -m service.tools.mutation_audit --list"
GUNICORN = ".venv/bin/gunicorn -c service/gunicorn.conf.py"
DEMO = ".venv/bin/python -m service.tools.demo_upstream --port 8000"
DEMO_SYNTHETIC = (
    ".venv/bin/python -m service.tools.demo_upstream --no-seed --synthetic bench=300000 "
    "--latency-ms 5"
)
DEMO_FOR_A_NODE = (
    ".venv/bin/python -m service.tools.demo_upstream --host 0.0.0.0 --port 8000 "
    '--token "$DEMO_UPSTREAM_TOKEN"'
)
TICKETS_DEMO = ".venv/bin/python -m service.tools.demo_tickets --port 8100 --api-key demo-key &"
TICKETS_CONNECTOR = (
    "TICKETS_URL=http://127.0.0.1:8100 TICKETS_API_KEY=demo-key "
    ".venv/bin/gunicorn -c service/gunicorn.conf.py 'service.tools.examples.tickets:create_app()'"
)
TICKETS_CURL = "curl -s 'http://127.0.0.1:5000/tickets?limit=3'"
RUNNER_PAGE = (
    ".venv/bin/python -m service.tools.sesam_runner pull http://localhost:5000/people --out people.json",
    "curl -s -X PUT -H 'Authorization: Bearer demo-token' -H 'Content-Type: application/json' "
    '-d \'{"name": "Ada Changed"}\' localhost:8000/people/p-1',
    ".venv/bin/python -m service.tools.sesam_runner pull http://localhost:5000/people",
    ".venv/bin/python -m service.tools.sesam_runner pull http://localhost:5000/people --full --page-size 5",
    ".venv/bin/python -m service.tools.sesam_runner push http://localhost:5000/people people.json",
    ".venv/bin/python -m service.tools.sesam_runner push http://localhost:5000/people people.json --full",
)
TRANSFORM_PIPE = (
    ".venv/bin/python -m service.tools.sesam_runner pull http://localhost:5000/people --full --out - "
    "| .venv/bin/python -m service.tools.sesam_runner transform "
    "http://localhost:5000/transform/people-record - --out people-with-records.json"
)
FORMAT_CHECK = "python3 -m service.tools.sesam_format --check"
FORMAT = "python3 -m service.tools.sesam_format"
EXPECTED_CHECK = ".venv/bin/python -m service.tools.sesam_expected http://localhost:5000 --check"
EXPECTED = ".venv/bin/python -m service.tools.sesam_expected http://localhost:5000"
RUN_HERE = {
    LIST_COMMANDS,
    SOME_TESTS,
    *TEST_FOLDERS,
    FORK_GREP,
    MUTANTS,
    GUNICORN,
    DEMO,
    DEMO_SYNTHETIC,
    DEMO_FOR_A_NODE,
    TICKETS_DEMO,
    TICKETS_CONNECTOR,
    TICKETS_CURL,
    *RUNNER_PAGE,
    TRANSFORM_PIPE,
    FORMAT_CHECK,
    FORMAT,
    EXPECTED_CHECK,
    EXPECTED,
}


def normal(command: str) -> str:
    return re.sub(r"\s+", " ", command).strip()


def shown_commands() -> dict[str, list[str]]:
    """Each command of every ``sh`` block (continued lines joined, comments dropped), with
    the pages that show it."""
    shown: dict[str, list[str]] = {}
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
            for line in re.sub(r"\\\n", " ", block).splitlines():
                command = normal(re.sub(r"\s+#\s.*$", "", line))
                if command and not command.startswith("#"):
                    shown.setdefault(command, []).append(str(page.relative_to(ROOT)))
    return shown


def defines(test_id: str) -> bool:
    """Whether the file names a test or fixture function of that name."""
    path, _, name = test_id.partition("::")
    tree = ast.parse((ROOT / "service" / "tests" / path).read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in ast.walk(tree))


def test_every_command_the_docs_show_is_run_by_a_test():
    shown = shown_commands()
    accounted = RUN_HERE | set(ELSEWHERE) | set(NOT_RUN)
    missing = {command: pages for command, pages in shown.items() if command not in accounted}
    assert missing == {}, "commands in the docs that no test runs: add a test (this module)"
    stale = sorted(command for command in accounted if command not in shown)
    assert stale == [], "commands listed here that no page shows any more"
    assert not RUN_HERE & set(ELSEWHERE) and not RUN_HERE & set(NOT_RUN)
    assert [test for test in ELSEWHERE.values() if not defines(test)] == []


def test_the_suite_ci_runs_is_the_docs_test_command():
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "python3 -m service.tools.dev test" in lines


# --- running them --------------------------------------------------------------------------


def as_typed(command: str, ports: dict[int, int] | None = None) -> str:
    """The docs' command with free ports for the documented ones, and this Python's folder
    for ``.venv/bin``."""
    for documented, port in (ports or {}).items():
        command = re.sub(rf"(:|--port ){documented}\b", rf"\g<1>{port}", command)
    return command.replace(".venv/bin/", f"{BIN}/")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def shell(
    command: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def environment(**extra: str) -> dict[str, str]:
    """The tests' environment; ``dev`` uses this Python instead of making ``.venv``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "PYTEST_"))}
    env["SERVICE_DEV_PYTHON"] = sys.executable
    env.update(extra)
    return env


def server(
    command: str, url: str, log: Path, *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A server command as the docs show it, in the background (bash execs it, so that it
    gets SIGTERM itself), up once ``url`` answers."""
    assignments, rest = re.match(
        r"((?:\w+=\S+\s+)*)(.*)", command.removesuffix("&").strip()
    ).groups()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"{assignments}exec {rest}"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(url, process, log, seconds=60)
    except BaseException:
        stop(process, seconds=15)
        raise
    return process


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        process.send_signal(signal.SIGTERM)
        stop(process, seconds=15)


def test_dev_without_a_command_lists_them_and_dev_test_runs_what_it_is_given(tmp_path):
    listed = shell(LIST_COMMANDS, env=environment())  # python3: the system's, as typed
    assert listed.returncode == 2 and "setup" in listed.stdout, listed.stdout + listed.stderr
    some = shell(SOME_TESTS, env=environment())
    assert some.returncode == 0, some.stdout[-3000:] + some.stderr[-3000:]
    assert re.search(r"\d+ passed", some.stdout), some.stdout[-2000:]
    assert "test_transit.py" in SOME_TESTS and (ROOT / SOME_TESTS.split()[-1]).is_file()


@pytest.mark.parametrize("command", TEST_FOLDERS)
def test_dev_test_takes_the_folders_the_docs_name(command):
    collected = shell(f"{command} --collect-only -q", env=environment(), timeout=120)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert re.search(r"\d+ tests? collected", collected.stdout), collected.stdout[-2000:]


def test_the_fork_points_can_be_found_with_the_docs_grep():
    found = shell(FORK_GREP)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines and all("FORK:" in line for line in lines)
    assert any(line.startswith("service/tests/conftest.py:") for line in lines)


def test_the_mutation_audit_lists_its_mutants_and_knows_the_key_the_docs_select():
    listed = shell(as_typed(MUTANTS), env=environment(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    selected = re.search(r'--only "([^"]+)"', " ".join(NOT_RUN)).group(1)
    assert selected in listed.stdout, f"--list shows no mutant with {selected!r}"


def test_the_readmes_gunicorn_command_serves_the_connector(tmp_path, upstream, servers):
    if not apps.reads_the_demo(apps.connector_factory().settings_class):
        pytest.skip("the connector does not read the demo Records API: its own tests start it")
    port = free_port()
    env = environment(
        PORT=str(port),
        UPSTREAM_URL=upstream.url,
        STATE_DIR=str(tmp_path / "state"),
        **DEMO_SETTINGS,
    )
    url = f"http://127.0.0.1:{port}"
    servers.append(server(as_typed(GUNICORN), f"{url}/health", tmp_path / "log", env=env))
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    people = requests.get(f"{url}/people", timeout=30).json()
    assert people and all("_id" in entity for entity in people)


@pytest.mark.parametrize("command", [DEMO, DEMO_SYNTHETIC, DEMO_FOR_A_NODE])
def test_the_demo_upstream_commands_serve(command, tmp_path, servers):
    port = free_port()
    token = "a-token-of-your-own"  # the demo's default is $DEMO_UPSTREAM_TOKEN
    if "--port" not in command:
        command += " --port 8000"  # its default: a test takes a free one
    typed = as_typed(command, {8000: port})
    env = environment(DEMO_UPSTREAM_TOKEN=token)
    servers.append(server(typed, f"http://127.0.0.1:{port}/", tmp_path / "log", env=env))
    collection = "bench" if "bench=" in command else "people"
    answer = requests.get(
        f"http://127.0.0.1:{port}/{collection}?limit=2",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 2


def test_the_tickets_example_as_the_examples_page_runs_it(tmp_path, servers):
    tickets_port, port = free_port(), free_port()
    env = environment(PORT=str(port), STATE_DIR=str(tmp_path / "state"))
    servers.append(
        server(
            as_typed(TICKETS_DEMO, {8100: tickets_port}),
            f"http://127.0.0.1:{tickets_port}/",
            tmp_path / "tickets.log",
            env=env,
        )
    )
    servers.append(
        server(
            as_typed(TICKETS_CONNECTOR, {8100: tickets_port}),
            f"http://127.0.0.1:{port}/health",
            tmp_path / "connector.log",
            env=env,
        )
    )
    curl = as_typed(TICKETS_CURL, {5000: port})
    if shutil.which("curl"):
        tickets = json.loads(shell(curl, env=env).stdout)
    else:  # the slim image has no curl: the same request
        tickets = requests.get(curl.split("'")[1], timeout=30).json()
    assert len(tickets) == 3 and all("_id" in ticket for ticket in tickets)


def test_the_runner_page_as_typed(connector, upstream, tmp_path):
    """The local Sesam runner's walk-through, line by line, in a scratch folder: a full
    pull, a change upstream, an incremental pull that gets just it, pushes back. (The
    repository on PYTHONPATH stands for its root, where a reader runs them.)"""
    ports = {5000: port_of(connector.url), 8000: port_of(upstream.url)}
    env = environment(PYTHONPATH=str(ROOT))
    outputs = {}
    for command in RUNNER_PAGE:
        typed = as_typed(command, ports).replace("Bearer demo-token", f"Bearer {upstream.token}")
        if typed.startswith("curl") and not shutil.which("curl"):  # the same request
            response = requests.put(
                f"{upstream.url}/people/p-1",
                json={"name": "Ada Changed"},
                headers={"Authorization": f"Bearer {upstream.token}"},
                timeout=30,
            )
            assert response.ok, response.text
            continue
        result = shell(typed, cwd=tmp_path, env=env)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        outputs[command] = result.stdout
    assert json.loads((tmp_path / "people.json").read_text(encoding="utf-8"))
    just_changed = json.loads(outputs[RUNNER_PAGE[2]])
    assert [entity["_id"] for entity in just_changed] == ["p-1"]
    assert just_changed[0]["name"] == "Ada Changed"


def test_the_transform_page_as_typed(connector, upstream, tmp_path):
    typed = as_typed(TRANSFORM_PIPE, {5000: port_of(connector.url)})
    result = shell(typed, cwd=tmp_path, env=environment(PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    enriched = json.loads((tmp_path / "people-with-records.json").read_text(encoding="utf-8"))
    assert enriched and all("_id" in entity for entity in enriched)


def test_the_sesam_folder_commands_change_nothing_in_a_folder_in_form():
    before = {p: p.read_bytes() for p in SESAM.rglob("*.json")}
    checked = shell(FORMAT_CHECK)
    assert checked.returncode == 0, checked.stderr
    formatted = shell(FORMAT)
    assert formatted.returncode == 0 and formatted.stdout == "", formatted.stdout
    assert {p: p.read_bytes() for p in SESAM.rglob("*.json")} == before


def test_the_expected_output_commands_against_the_running_connector(connector_factory, upstream):
    if not apps.reads_the_demo(apps.connector_factory().settings_class):
        pytest.skip("the connector does not read the demo Records API: its own tests check it")
    connector = connector_factory(app=apps.connector_app(), **DEMO_SETTINGS)
    ports = {5000: port_of(connector.url)}
    env = environment()
    checked = shell(as_typed(EXPECTED_CHECK, ports), env=env)
    assert checked.returncode == 0, checked.stderr
    # Only once the files are known to be current: the command then writes nothing.
    before = {p: p.read_bytes() for p in (SESAM / "expected").iterdir()}
    written = shell(as_typed(EXPECTED, ports), env=env)
    assert written.returncode == 0 and written.stdout == "", written.stdout + written.stderr
    assert {p: p.read_bytes() for p in (SESAM / "expected").iterdir()} == before
