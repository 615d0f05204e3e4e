"""The Docker flow on a real engine: the image built, the compose flow up, the suite inside
the container, the runtime image under Sesam's 128 MB, SIGTERM during a stream.

Every test here needs a Docker engine and skips, saying so, when none answers or when
``ENGINE_TESTS=off`` (the fork CI's test job sets it; its docker job runs these). Where the machine's
engine needs host networking (``../shared/tools/docker-engine`` beside the repository, as on
the project's development machines), its ``compose`` and ``build`` wrappers are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from service.tests.framework_kit import ROOT
from service.tests.framework_kit import UPSTREAM_TOKEN
from service.tests.framework_kit import running_demo_upstream
from service.tests.loads import MB
from service.tests.loads import slow_feeds_beside_maximum_batches
from service.tests.loads import small_entities_batch
from service.tools.dev import default_collection
from service.tools.servers import free_port

ENGINE_TOOL = ROOT.parent / "shared" / "tools" / "docker-engine"
COMPOSE_PORTS = (5000, 8000)  # docker-compose.yml: the connector's and the upstream's
CGROUP_V2_LIMIT = "/sys/fs/cgroup/memory.max"
CGROUP_V1_LIMIT = "/sys/fs/cgroup/memory/memory.limit_in_bytes"


def engine_problem() -> str | None:
    """Why no engine can be used, or None."""
    if os.environ.get("ENGINE_TESTS") == "off":
        return "ENGINE_TESTS=off (CI's test job: its docker job runs these)"
    if shutil.which("docker") is None:
        return "needs a Docker engine: the docker command is not installed"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"needs a Docker engine: docker info failed ({error})"
    if result.returncode != 0:
        return "needs a Docker engine: none answers (docker info failed)"
    return None


_PROBLEM = engine_problem()
pytestmark = [
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
    # building images and running the whole suite in a container outlast pytest.ini's 300 s
    pytest.mark.timeout(3600),
    # compose's fixed ports (5000, 8000), the machine's one engine, a bound of 128 MB: alone
    pytest.mark.serial,
]


def host_tool(*command: str) -> list[str]:
    """``docker compose``/``docker build``, through this machine's wrapper if it has one."""
    if ENGINE_TOOL.is_file() and os.access(ENGINE_TOOL, os.X_OK):
        return [str(ENGINE_TOOL), *command]
    return ["docker", *command]


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s: {what}")


# --- the compose flow ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_up() -> Iterator[dict[str, str]]:
    """The compose flow, up under a project name of its own: the environment naming it."""
    busy = [port for port in COMPOSE_PORTS if not port_is_free(port)]
    assert not busy, f"docker-compose.yml needs ports {busy} free on this machine"
    project = f"connector-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project}
    try:
        result = run(
            host_tool("compose", "up", "--build", "--detach", "--wait", "--wait-timeout", "300"),
            timeout=1200,
            env=env,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield env
    finally:
        logs = run(host_tool("compose", "logs", "--no-color"), timeout=120, env=env)
        down = run(host_tool("compose", "down", "--volumes"), timeout=300, env=env)
        if down.returncode != 0:
            print(logs.stdout[-5000:], down.stderr[-2000:], file=sys.stderr)


def test_compose_up_serves_the_feed_on_the_published_port(compose_up):
    # the collection .env.example names (DEV_COLLECTION), as CI's smoke test reads it
    response = requests.get(f"http://127.0.0.1:5000/{default_collection()}", timeout=60)
    assert response.status_code == 200, response.text
    entities = response.json()
    assert entities and all("_id" in e and "_updated" in e for e in entities)
    assert requests.get("http://127.0.0.1:5000/health", timeout=10).json() == {"status": "ok"}


def test_the_suite_is_green_inside_the_container(compose_up):
    result = run(
        host_tool("compose", "exec", "-T", "connector", "pytest", "-q"),
        timeout=3000,
        env=compose_up,
    )
    summary = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert " passed" in result.stdout
    # pytest's count of failures, not the word (a skip's reason may say "a failed mount")
    assert not re.search(r"\b\d+ failed\b", result.stdout), summary


# --- the runtime image ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_image() -> str:
    tag = f"connector-runtime-test:{uuid.uuid4().hex[:8]}"
    result = run(host_tool("build", "--tag", tag, "."), timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield tag
    run(["docker", "image", "rm", "--force", tag], timeout=120)


@pytest.fixture(scope="module")
def synthetic_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo Records API on the host, with a computed collection of a million records."""
    yield from running_demo_upstream(
        tmp_path_factory.mktemp("engine-upstream"),
        "--server",
        "gunicorn",
        "--synthetic",
        "big=1000000",
    )


@contextlib.contextmanager
def container(image: str, upstream: str, *options: str) -> Iterator[tuple[str, str]]:
    """The runtime image on the host's network at a free port: (container id, its URL)."""
    port = free_port()
    result = run(
        [
            "docker",
            "run",
            "--detach",
            "--network",
            "host",
            "--env",
            f"PORT={port}",
            "--env",
            f"UPSTREAM_URL={upstream}",
            "--env",
            f"UPSTREAM_TOKEN={UPSTREAM_TOKEN}",
            *options,
            image,
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        yield container_id, url
    finally:
        logs = run(["docker", "logs", container_id], timeout=60)
        run(["docker", "rm", "--force", container_id], timeout=120)
        print(logs.stdout[-3000:], logs.stderr[-3000:], file=sys.stderr)


def inspect(container_id: str) -> dict:
    result = run(["docker", "inspect", container_id], timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_the_runtime_image_is_healthy_under_128_mb_with_a_big_feed_and_a_big_batch(
    runtime_image, synthetic_upstream
):
    """Sesam's default container: --memory 128m. A 300,000-entity feed and a batch of the
    largest size later, the container was never OOM-killed and its health check passes."""
    with container(runtime_image, synthetic_upstream, "--memory", "128m") as (cid, url):
        limit = run(
            ["docker", "exec", cid, "sh", "-c", f"cat {CGROUP_V2_LIMIT} || cat {CGROUP_V1_LIMIT}"],
            timeout=60,
        )
        assert limit.stdout.split() == [str(128 * MB)], "the engine ignored --memory"
        wait_for(
            lambda: inspect(cid)["State"].get("Health", {}).get("Status") == "healthy",
            120,
            "the image's HEALTHCHECK reports healthy",
        )
        marks = 0
        with requests.get(f"{url}/big", params={"limit": 300_000}, stream=True, timeout=600) as r:
            assert r.status_code == 200
            tail = b""
            for chunk in r.iter_content(1 << 16):
                marks += (tail + chunk).count(b'"_id":') - tail.count(b'"_id":')
                tail = chunk[-8:]
        assert marks == 300_000
        entities = ",".join(f'{{"_id":"e-{i:07d}","v":{i}}}' for i in range(280_000))
        body = f"[{entities}]".encode()[: 8 * MB]
        body = body[: body.rfind(b"},") + 1] + b"]"
        answer = requests.post(f"{url}/nosuch", data=body, timeout=600)
        assert answer.status_code == 502, answer.text[:500]  # checked whole, first write fails
        state = inspect(cid)["State"]
        assert state["Running"] and not state["OOMKilled"], state
        assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_under_128_mb_slow_feeds_beside_maximum_batches_are_served_or_refused_never_killed(
    runtime_image, synthetic_upstream
):
    """Issue 18's load in Sesam's default container: sixteen feed readers that stop
    reading and four batches of the largest size at once. What fits in the worker's
    memory budget is served, the rest gets 503 with Retry-After; /health answers
    throughout; the container is never OOM-killed, and answers afterwards."""
    with container(runtime_image, synthetic_upstream, "--memory", "128m") as (cid, url):
        wait_for(lambda: _answers(url), 60, "the connector answers")
        body = small_entities_batch(8 * MB)
        stalled, answers = slow_feeds_beside_maximum_batches(url, "/big", body)
        try:
            state = inspect(cid)["State"]
            assert state["Running"] and not state["OOMKilled"], state
            assert 200 in answers and set(answers) <= {200, 502, 503}, answers
        finally:
            for sock in stalled:
                sock.close()
        wait_for(lambda: _answers(url), 60, "the connector answers after the load")
        assert not inspect(cid)["State"]["OOMKilled"]


def test_sigterm_ends_a_stream_cleanly(runtime_image, synthetic_upstream):
    """docker stop during a feed: gunicorn lets the stream run for its graceful_timeout, then
    the answer ends either whole or broken (never a valid array that is short), and the
    container exits 0 before docker would kill it."""
    with container(runtime_image, synthetic_upstream) as (cid, url):
        wait_for(lambda: _answers(url), 60, "the connector answers")
        with requests.get(f"{url}/big", stream=True, timeout=120) as response:
            assert response.status_code == 200
            body = bytearray()
            chunks = response.iter_content(1 << 16)
            while len(body) < 1 << 20:
                body += next(chunks)
            stopped = subprocess.Popen(
                ["docker", "stop", "--time", "60", cid],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with contextlib.suppress(requests.exceptions.ChunkedEncodingError):
                for chunk in chunks:
                    body += chunk
        assert stopped.wait(timeout=90) == 0
        state = inspect(cid)["State"]
        assert state["ExitCode"] == 0, state
        try:
            entities = json.loads(body)
        except ValueError:
            entities = None  # broken: Sesam's run fails, nothing is deleted
        assert entities is None or len(entities) == 1_000_000
        logs = run(["docker", "logs", cid], timeout=60)
        assert "Traceback" not in logs.stdout + logs.stderr


def _answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    return False
