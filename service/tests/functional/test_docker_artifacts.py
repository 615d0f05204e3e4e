"""The Docker artefacts, checked without a Docker engine (none runs here or in CI's suite).

hadolint, the compose specification's schema, GitHub's workflow schema, the Dockerfile's
structure (dockerfile-parse), and the contract's command started as the image would start
it: the files the Dockerfile copies, laid out under its WORKDIR, with its environment and
compose's, beside the demo upstream as compose starts it. The tools come from
requirements-dev.txt; a missing one fails the test, it does not skip it.
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from dockerfile_parse import DockerfileParser
from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import ThreadWorker

from service.framework.settings import url as url_setting
from service.framework.settings import variables
from service.tests.framework_kit import compose_runs_the_demo
from service.tools import servers
from service.tools.apps import connector_factory
from service.tools.apps import reads_the_demo
from service.tools.dev import GUNICORN_ARGS
from service.tools.servers import ServerError
from service.tools.servers import free_port
from service.tools.servers import wait_until_up

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = ["gunicorn", "-c", "service/gunicorn.conf.py", "service.connector:create_app()"]
DEBIAN = ("buster", "bullseye", "bookworm", "trixie", "forky")
# The connector's settings, whatever its upstream: what compose and .env.example must give it.
ConnectorSettings = connector_factory().settings_class
DEFAULTS = {variable.name: variable.default for variable in variables(ConnectorSettings)}
SECRETS = {variable.name for variable in variables(ConnectorSettings) if variable.secret}


# --- reading the artefacts ---------------------------------------------------------------


def tool(name: str) -> str:
    """A tool installed from requirements-dev.txt, beside this Python."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: pip install -r service/requirements-dev.txt")
        return found
    return str(path)


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


class Stage:
    def __init__(self, image: str, name: str | None) -> None:
        self.image = image
        self.name = name
        self.parent: Stage | None = None
        self.instructions: list[tuple[str, str]] = []

    def chain(self) -> list[Stage]:
        """This stage and the stages it builds on, the first one first."""
        return [*(self.parent.chain() if self.parent else []), self]

    def all(self, instruction: str) -> list[str]:
        return [
            value
            for stage in self.chain()
            for name, value in stage.instructions
            if name == instruction
        ]

    def last(self, instruction: str) -> str | None:
        values = self.all(instruction)
        return values[-1] if values else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.all("ENV"):
            for word in shlex.split(value):
                name, _, setting = word.partition("=")
                env[name] = setting
        return env

    def workdir(self) -> str:
        return self.last("WORKDIR") or "/"


def stages() -> dict[str, Stage]:
    """Every stage by name, and the default target (the last stage) as ``""``."""
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    named: dict[str, Stage] = {}
    stage: Stage | None = None
    for item in parser.structure:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stage = Stage(words[0], name)
            stage.parent = named.get(words[0])
            if name:
                named[name] = stage
        elif item["instruction"] != "COMMENT":
            assert stage is not None, "an instruction before the first FROM"
            stage.instructions.append((item["instruction"], item["value"]))
    assert stage is not None, "no FROM in the Dockerfile"
    named[""] = stage
    return named


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def healthcheck_command(stage: Stage) -> list[str]:
    value = stage.last("HEALTHCHECK")
    assert value, "no HEALTHCHECK"
    return exec_form(value.split(" CMD ", 1)[1].strip())


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def connector_name() -> str:
    """The connector's compose service: the one beside ``upstream`` (a rename renames it)."""
    (name,) = [name for name in compose()["services"] if name != "upstream"]
    return name


def connector_service() -> dict[str, Any]:
    return compose()["services"][connector_name()]


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def compose_env_files(service: dict[str, Any]) -> list[dict[str, Any]]:
    entries = service.get("env_file", [])
    entries = [entries] if isinstance(entries, str) else entries
    return [{"path": e, "required": True} if isinstance(e, str) else e for e in entries]


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """What compose gives a service on a fresh clone: its env files that exist in git."""
    env: dict[str, str] = {}
    for entry in compose_env_files(service):
        if entry["path"] != ".env":  # the user's own, git-ignored
            env.update(env_file(ROOT / entry["path"]))
    env.update({name: str(value) for name, value in (service.get("environment") or {}).items()})
    return env


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    assert total, duration
    return total


def gunicorn_setting(name: str) -> Any:
    tree = ast.parse((ROOT / "service" / "gunicorn.conf.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not set in service/gunicorn.conf.py")


def readme_commands(program: str) -> list[list[str]]:
    """The README's shell lines that run ``program`` (also from a folder, as
    ``.venv/bin/gunicorn``), split as a shell would, the program by its name alone."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line, comments=True) for line in lines if line]
    return [
        [program, *command[1:]]
        for command in commands
        if command and command[0].rsplit("/", 1)[-1] == program
    ]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns):
            ignored = not negated
    return ignored


# --- linters and schemas ------------------------------------------------------------------


def test_hadolint_finds_nothing_at_warning_level():
    result = run_tool("hadolint", "--failure-threshold", "warning", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.compose-spec", "docker-compose.yml"),
        ("vendor.github-workflows", ".github/workflows/ci.yml"),
        ("vendor.dependabot", ".github/dependabot.yml"),
    ],
)
def test_the_file_is_valid_against_its_schema(schema, path):
    result = run_tool("check-jsonschema", "--builtin-schema", schema, path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_catches_a_misspelt_key(tmp_path):
    # Guards the check above: a schema that let anything through would pass it too.
    broken = (
        (ROOT / "docker-compose.yml")
        .read_text(encoding="utf-8")
        .replace("stop_grace_period:", "stop_grace_periode:", 1)
    )
    (tmp_path / "docker-compose.yml").write_text(broken, encoding="utf-8")
    result = run_tool(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        str(tmp_path / "docker-compose.yml"),
    )
    assert result.returncode != 0
    assert "stop_grace_periode" in result.stdout + result.stderr


# --- the Dockerfile's structure -----------------------------------------------------------


def test_every_base_image_is_pinned_with_its_debian_release():
    named = stages()
    for stage in named.values():
        if stage.parent is None:
            repository, _, tag = stage.image.partition(":")
            assert tag and tag != "latest", f"{stage.image}: pin a version"
            assert re.match(r"\d+\.\d+", tag), f"{stage.image}: pin a version"
            assert tag.split("-")[-1] in DEBIAN, f"{stage.image}: name the Debian release"


def test_the_images_run_as_a_numeric_non_root_user():
    for name in ("", "test"):
        user = stages()[name].last("USER")
        assert user and re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: make it numeric"
        assert int(user.split(":")[0]) != 0


def test_the_state_directory_belongs_to_that_user():
    # The sink keeps full-sync state in STATE_DIR: a root-owned one fails every full sync.
    final = stages()[""]
    uid = final.last("USER").split(":")[0]
    state_dir = final.env()["STATE_DIR"]
    assert any(state_dir in run and f"chown {uid}" in run for run in final.all("RUN"))
    assert connector_service()["volumes"][0].split(":")[1] == state_dir


def test_cmd_is_the_contracts_command_as_the_readme_and_dev_run_it():
    cmd = exec_form(stages()[""].last("CMD"))
    assert cmd == CONTRACT
    assert ["gunicorn", *GUNICORN_ARGS] == cmd
    shown = readme_commands("gunicorn")
    assert shown, "the README shows no gunicorn command"
    assert all(command == cmd for command in shown), shown


def test_the_image_exposes_the_default_port_and_checks_health():
    final = stages()[""]
    assert DEFAULTS["PORT"] in final.all("EXPOSE")
    check = healthcheck_command(final)
    assert check[0] == "python" and "/health" in check[-1]
    assert final.env()["PYTHONUNBUFFERED"] == "1"


def test_dependencies_are_installed_before_the_code_without_a_cache():
    base = stages()[""].chain()[0]
    installs = [
        i
        for i, (name, value) in enumerate(base.instructions)
        if name == "RUN" and "pip install" in value
    ]
    code = [
        i for i, (name, value) in enumerate(base.instructions) if name == "COPY" and ".py" in value
    ]
    assert installs and code and max(installs) < min(code)
    for stage in stages().values():
        for run in stage.all("RUN"):
            if "pip install" in run:
                assert "--no-cache-dir" in run, run


def test_the_test_stage_makes_a_bare_pytest_find_the_suite():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_ADDOPTS"] = stages()["test"].env()["PYTEST_ADDOPTS"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(line.startswith("unit/") for line in collected), result.stdout[-2000:]
    assert any(line.startswith("functional/test_docker_artifacts.py") for line in collected)


def test_the_build_context_keeps_out_secrets_and_local_state_but_not_what_tests_read():
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "service/__pycache__/x.pyc",
        ".ruff_cache/x",
        "state/sequences.sqlite",
    ):
        assert dockerignored(path), path
    needed = [
        "README.md",
        "docs/configuration.md",
        "docs/docker.md",
        "docs/sesam.md",
        "docs/benchmarks.md",
        "Dockerfile",
        "docker-compose.yml",
        ".env.example",
        ".github/workflows/ci.yml",
        ".github/dependabot.yml",
        ".dockerignore",
    ]
    needed += [
        str(p.relative_to(ROOT))
        for folder in ("service", "sesam")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert [path for path in needed if dockerignored(path)] == []


# --- the compose file ----------------------------------------------------------------------


def test_compose_builds_stages_the_dockerfile_has():
    services = compose()["services"]
    assert services[connector_name()]["build"]["target"] == "test"
    for service in services.values():
        if "build" in service:
            assert service["build"].get("target", "") in stages()


def test_compose_names_no_image_for_the_test_stage_so_push_skips_it():
    # docker-compose push skips a service that has no image name; with one, it would
    # publish the test stage (pytest, ruff, the whole repository) under that name.
    for name, service in compose()["services"].items():
        if "build" in service and service["build"].get("target", "") != "runtime":
            assert "image" not in service, name


def test_the_image_sesam_pulls_is_the_lean_runtime_stage():
    named = stages()
    assert named[""] is named["runtime"], "the default target must be the runtime stage"
    copied = " ".join(named["runtime"].all("COPY"))
    for tool in ("service/tools", "service/tests", "requirements-dev", ". ."):
        assert tool not in copied, tool
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    builds = [
        line
        for step in workflow["jobs"]["push"]["steps"]
        for line in step.get("run", "").splitlines()
        if "docker build" in line
    ]
    assert builds and not any("--target" in line for line in builds), builds


def test_the_connector_is_published_on_loopback_at_its_port():
    connector = connector_service()
    assert connector["ports"] == [f"127.0.0.1:{DEFAULTS['PORT']}:{DEFAULTS['PORT']}"]
    assert connector["healthcheck"]["test"] == ["CMD", *healthcheck_command(stages()[""])]


def test_compose_stops_later_than_gunicorn_finishes_its_streams():
    grace = seconds(connector_service()["stop_grace_period"])
    assert grace > gunicorn_setting("graceful_timeout")
    # gthread (hardened, service/framework/worker.py): a sync worker is killed mid-stream
    worker = gunicorn_util.load_class(gunicorn_setting("worker_class"))
    assert issubclass(worker, ThreadWorker)


def test_compose_runs_the_demo_upstream_only_beside_a_connector_that_reads_it():
    if compose_runs_the_demo():
        assert reads_the_demo(ConnectorSettings), (
            "docker-compose.yml starts the demo Records API beside a connector that does not "
            "read it: drop the upstream service (or run a fake of your upstream there) and "
            "give your upstream's settings in .env.example (docs/forking.md)"
        )


def test_the_connector_waits_for_a_healthy_upstream():
    services = compose()["services"]
    if "upstream" not in services:
        pytest.skip("compose runs no upstream service beside the connector")
    assert services[connector_name()]["depends_on"]["upstream"]["condition"] == "service_healthy"
    assert services["upstream"]["healthcheck"]["test"][0] == "CMD"


def test_compose_configures_only_known_variables_and_keeps_secrets_out_of_the_file():
    connector = connector_service()
    inline = set(connector.get("environment") or {})
    assert inline <= set(DEFAULTS), inline - set(DEFAULTS)
    assert not inline & SECRETS, "secrets belong in .env, not in docker-compose.yml"
    files = {e["path"]: e.get("required", True) for e in compose_env_files(connector)}
    assert files.get(".env") is False, "a fresh clone has no .env: make it optional"
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    example = env_file(ROOT / ".env.example")
    assert SECRETS <= set(example), (
        f"secrets without a line in .env.example: {SECRETS - set(example)}"
    )


def upstream_url_problems(services: dict[str, Any], connector: str, settings: type) -> list[str]:
    """What is wrong with how the connector's URL settings in compose reach the ``upstream``
    service: one of them must name it, on the port its command listens on (when the command
    says, with ``--port``). The settings are the connector's own (``UPSTREAM_URL`` for the
    Records API, ``ERP_URL`` for a fork to another upstream with a fake of it there)."""
    environment = services[connector].get("environment") or {}
    if isinstance(environment, list):  # compose's other form: ["NAME=value", ...]
        environment = dict(item.partition("=")[::2] for item in environment)
    names = [v.name for v in variables(settings) if v.parse is url_setting]
    urls = {name: urlsplit(str(environment[name])) for name in names if name in environment}
    naming = {name: parts for name, parts in urls.items() if parts.hostname == "upstream"}
    if not naming:
        return [
            f"compose runs an upstream service, but none of the connector's URL settings "
            f"({', '.join(names) or 'none declared'}) in its environment names it "
            "(http://upstream:<port>)"
        ]
    command = [str(part) for part in services["upstream"].get("command") or []]
    if "--port" not in command[:-1]:
        return []
    port = command[command.index("--port") + 1]
    return [
        f"{name} names port {parts.port}, the upstream service listens on {port}"
        for name, parts in naming.items()
        if str(parts.port) != port
    ]


def test_the_upstream_url_names_the_upstream_service_and_its_port():
    services = compose()["services"]
    if "upstream" not in services:
        pytest.skip("compose runs no upstream service beside the connector")
    assert upstream_url_problems(services, connector_name(), ConnectorSettings) == []


def test_a_fork_with_its_own_url_setting_is_checked_by_that_setting_not_upstream_url():
    """A fork to an ERP (``ERP_URL``) that runs a fake of it as compose's ``upstream``
    service got a KeyError here: the check read ``UPSTREAM_URL`` whatever the connector
    declares."""
    import dataclasses

    from service.framework.settings import Settings
    from service.framework.settings import setting

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ErpSettings(Settings):
        erp_url: str = setting("ERP_URL", url_setting, meaning="Base URL of the ERP.")

    fake = ["python", "-m", "fake_erp", "--port", "8000"]
    good = {
        "erp": {"environment": {"ERP_URL": "http://upstream:8000"}},
        "upstream": {"command": fake},
    }
    assert upstream_url_problems(good, "erp", ErpSettings) == []
    wrong_port = {**good, "erp": {"environment": ["ERP_URL=http://upstream:9000"]}}
    assert upstream_url_problems(wrong_port, "erp", ErpSettings) == [
        "ERP_URL names port 9000, the upstream service listens on 8000"
    ]
    elsewhere = {**good, "erp": {"environment": {"ERP_URL": "https://erp.example"}}}
    assert (
        "none of the connector's URL settings (ERP_URL)"
        in upstream_url_problems(elsewhere, "erp", ErpSettings)[0]
    )
    no_port_option = {**good, "upstream": {"command": ["python", "-m", "fake_erp"]}}
    assert upstream_url_problems(no_port_option, "erp", ErpSettings) == []


def test_the_readmes_docker_commands_name_the_compose_service():
    commands = [c for c in readme_commands("docker-compose") if "exec" in c or "run" in c]
    assert ["docker-compose", "exec", connector_name(), "pytest"] in commands
    for command in commands:
        assert connector_name() in command, command


# --- CI -------------------------------------------------------------------------------------


def test_ci_runs_the_suite_the_compose_flow_and_pushes_only_version_tags():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["tags"] == ["v*"]
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    script = "\n".join(runs)
    for expected in (
        "python3 -m service.tools.dev test",
        "docker build",
        "docker compose up -d",
        ". ./.env.example",
        'curl -fsS "localhost:5000/$DEV_COLLECTION"',
        f"docker compose exec -T {connector_name()} pytest",
        "docker compose down",
    ):
        assert expected in script, expected
    push = workflow["jobs"]["push"]
    assert push["if"] == "startsWith(github.ref, 'refs/tags/v')"
    page = (ROOT / "docs" / "docker.md").read_text(encoding="utf-8")
    used = set(re.findall(r"secrets\.([A-Z_]+)", json.dumps(push)))
    assert used and all(name in page for name in used), used


# --- the contract's command, as the image starts it ---------------------------------------


def lay_out_image(stage: Stage, root: Path) -> Path:
    """Copy what the stage's COPY instructions copy to where they put it, under ``root``."""
    workdir = "/"
    for name, value in (i for s in stage.chain() for i in s.instructions):
        if name == "WORKDIR":
            workdir = value
        if name != "COPY":
            continue
        words = [w for w in shlex.split(value) if not w.startswith("--")]
        *sources, destination = words
        target = root / os.path.join(workdir, destination).lstrip("/")
        for source in sources:
            matches = sorted(glob.glob(source, root_dir=ROOT))
            assert matches, f"COPY {source}: nothing in the repository matches"
            for match in matches:
                if dockerignored(match):
                    continue
                origin = ROOT / match
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"),
                    )
                else:
                    into = target if destination.endswith("/") else target.parent
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(
                        origin, into / (origin.name if destination.endswith("/") else target.name)
                    )
    return root / stage.workdir().lstrip("/")


def in_image(value: str, root: Path) -> str:
    """An image path as it is laid out under ``root``; other values as they are."""
    return str(root / value.lstrip("/")) if value.startswith("/app") else value


def python_command(command: list[str]) -> list[str]:
    assert command[0] == "python", command
    return [sys.executable, *command[1:]]


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> requests.Response:
    try:
        wait_until_up(url, process, log, seconds=30, ok=lambda status: status == 200)
    except ServerError as error:
        pytest.fail(f"{url}: {error}")
    return requests.get(url, timeout=2)


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return servers.start(command, log=log, env=env, cwd=cwd)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=gunicorn_setting("graceful_timeout") + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def image_environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The final stage laid out under ``tmp_path`` (its directory, the app's), and the
    environment its processes get: a minimal one, then the Dockerfile's ENV."""
    final = stages()[""]
    root = tmp_path / "image"
    app = lay_out_image(final, root)
    for name in final.env().values():
        if name.startswith("/app/"):
            Path(in_image(name, root)).mkdir(parents=True, exist_ok=True)  # RUN mkdir
    base_env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    image_env = {name: in_image(value, root) for name, value in final.env().items()}
    return app, {**base_env, **image_env}


def serve_as_the_image_would(
    app: Path, env: dict[str, str], tmp_path: Path, collection: str | None
) -> None:
    """The Dockerfile's CMD in ``env``: healthy by /health and by the image's HEALTHCHECK,
    serving ``collection`` (unless None), stopping cleanly on SIGTERM, and no secret of
    the connector's in its log."""
    final = stages()[""]
    port = env["PORT"]
    cmd = exec_form(final.last("CMD"))
    gunicorn = [str(Path(sys.executable).with_name(cmd[0])), *cmd[1:]]
    connector = start(gunicorn, app, env, tmp_path / "connector.log")
    try:
        health = wait_for(f"http://127.0.0.1:{port}/health", connector, tmp_path / "connector.log")
        assert health.json() == {"status": "ok"}
        check = python_command(healthcheck_command(final))
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        if collection is not None:
            feed = requests.get(f"http://127.0.0.1:{port}/{collection}", timeout=60)
            assert feed.status_code == 200, feed.text  # .env.example's tokens agree
            assert feed.json() and all("_id" in entity for entity in feed.json())
    finally:
        assert stop(connector) == 0, (tmp_path / "connector.log").read_text()
    log = (tmp_path / "connector.log").read_text(errors="replace")
    for name in SECRETS:
        if env.get(name):
            assert env[name] not in log, name


def test_the_contract_command_starts_as_the_image_would_with_composes_settings(tmp_path):
    """The image's CMD with its ENV, compose's environment and .env.example: every setting
    the connector requires is there on a fresh clone, and it starts."""
    app, env = image_environment(tmp_path)
    env = {**env, **compose_environment(connector_service()), "PORT": str(free_port())}
    serve_as_the_image_would(app, env, tmp_path, collection=None)


def test_the_contract_command_serves_the_demo_as_compose_runs_it(tmp_path):
    if not (compose_runs_the_demo() and reads_the_demo(ConnectorSettings)):
        pytest.skip("compose runs no demo Records API for this connector")
    app, image_env = image_environment(tmp_path)
    services = compose()["services"]

    # The demo upstream, as compose runs it (on loopback, on a free port), from the stage
    # compose builds it from: a tool, so not the runtime stage.
    upstream_stage = stages()[services["upstream"]["build"]["target"]]
    upstream_app = lay_out_image(upstream_stage, tmp_path / "upstream-image")
    upstream_port = str(free_port())
    command = python_command(services["upstream"]["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = upstream_port
    upstream_env = {**image_env, **compose_environment(services["upstream"])}
    upstream = start(command, upstream_app, upstream_env, tmp_path / "upstream.log")
    try:
        wait_for(
            f"http://127.0.0.1:{upstream_port}/_admin/stats", upstream, tmp_path / "upstream.log"
        )
        check = python_command(services["upstream"]["healthcheck"]["test"][1:])
        check[-1] = check[-1].replace(":8000/", f":{upstream_port}/")
        assert subprocess.run(check, env=upstream_env, timeout=30).returncode == 0

        # The connector: the Dockerfile's CMD with its ENV, then compose's environment.
        env = {
            **image_env,
            **compose_environment(services[connector_name()]),
            "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
            "PORT": str(free_port()),
        }
        shown = env_file(ROOT / ".env.example")["DEV_COLLECTION"]
        serve_as_the_image_would(app, env, tmp_path, collection=shown)
        assert env["UPSTREAM_TOKEN"]  # a secret the log was checked for
    finally:
        stop(upstream)


def test_pytest_runs_started_by_tests_do_not_inherit_the_images_pytest_options():
    # The test image's PYTEST_ADDOPTS names service/tests/pytest.ini relative to /app; a
    # pytest a test starts in a directory of its own would fail to find it (conftest.py).
    assert "PYTEST_ADDOPTS" not in os.environ


def test_the_runtime_image_holds_only_the_runtime(tmp_path):
    """What Sesam pulls: the connector module, gunicorn's settings and the framework; no
    tools (dev runner, rename, demo upstream, benchmarks) and no tests."""
    root = tmp_path / "image"
    app = lay_out_image(stages()[""], root)
    files = sorted(
        str(path.relative_to(app))
        for path in app.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    module = CONTRACT[-1].split(":")[0].split(".")[-1]
    framework = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "service" / "framework").rglob("*.py")
        if "__pycache__" not in path.parts
    )
    expected = [
        "service/__init__.py",
        "service/gunicorn.conf.py",
        "service/requirements.txt",
        f"service/{module}.py",
        *framework,
    ]
    assert files == sorted(expected)
