"""The Sesam config in sesam/ stays consistent with the code a user uploads it beside.

A drift here shows only on a Sesam node: a pipe that reads a path the connector does not
serve, a system that talks to the wrong port, a variable the connector never reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.connector import ConnectorSettings
from service.connector import Records
from service.framework.settings import load_settings
from service.framework.settings import variables
from service.tools.demo_upstream import seed_collections

ROOT = Path(__file__).resolve().parents[3]
SESAM = ROOT / "sesam"
SECRET = re.compile(r"\$SECRET\(([a-z0-9][a-z0-9_-]*)\)")
DEFAULTS = {variable.name: variable.default for variable in variables(ConnectorSettings)}


def load_config() -> list[dict[str, Any]]:
    files = sorted(SESAM.glob("**/*.json"))
    assert files, "no Sesam config in sesam/"
    config = []
    for path in files:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        config.extend(loaded if isinstance(loaded, list) else [loaded])
    return config


def the_system() -> dict[str, Any]:
    systems = [c for c in load_config() if c["type"] == "system:microservice"]
    assert len(systems) == 1, systems
    return systems[0]


def pipes() -> list[dict[str, Any]]:
    return [c for c in load_config() if c["type"] == "pipe"]


def feed_pipes() -> list[dict[str, Any]]:
    return [p for p in pipes() if p.get("source", {}).get("type") == "json"]


def sink_pipes() -> list[dict[str, Any]]:
    return [p for p in pipes() if p.get("sink", {}).get("type") == "json"]


def test_every_file_is_json_with_a_unique_id_and_a_type():
    config = load_config()
    ids = [c["_id"] for c in config]
    assert len(ids) == len(set(ids)), ids
    for entry in config:
        assert isinstance(entry["_id"], str) and "/" not in entry["_id"]
        assert entry["type"] in ("pipe", "system:microservice"), entry["_id"]


def test_the_system_talks_to_the_port_the_connector_binds_by_default():
    docker = the_system()["docker"]
    assert docker["port"] == int(DEFAULTS["PORT"])
    assert "PORT" not in docker["environment"] or docker["environment"]["PORT"] == str(
        docker["port"]
    )


def test_the_microservice_id_is_a_valid_docker_name():
    # Sesam names the container after the system's _id.
    assert re.fullmatch(r"[a-z][a-z0-9-]*", the_system()["_id"])


def test_the_environment_names_only_variables_the_connector_reads():
    environment = the_system()["docker"]["environment"]
    known = set(DEFAULTS)
    assert set(environment) <= known, set(environment) - known
    required = {v.name for v in variables(ConnectorSettings) if v.default is None}
    assert required <= set(environment), required - set(environment)


def test_secrets_come_from_sesam_secrets_and_nothing_else_does():
    environment = the_system()["docker"]["environment"]
    for variable in variables(ConnectorSettings):
        value = environment.get(variable.name)
        if value is None:
            continue
        if variable.secret:
            assert SECRET.fullmatch(value), f"{variable.name} must be $SECRET(name)"
        else:
            assert "$SECRET(" not in str(value), variable.name


def test_the_environment_parses_as_the_connector_would_read_it():
    environment = the_system()["docker"]["environment"]
    # Sesam hands non-string values over as JSON text; secrets arrive as their value.
    as_text = {
        name: SECRET.sub("a-secret-value", value) if isinstance(value, str) else json.dumps(value)
        for name, value in environment.items()
    }
    settings = load_settings(ConnectorSettings, as_text)
    assert settings.port == the_system()["docker"]["port"]


def test_the_memory_fits_the_workers():
    docker = the_system()["docker"]
    workers = int(docker["environment"].get("WORKERS", DEFAULTS["WORKERS"]))
    # About 35 MB per gunicorn worker plus the master (docs/configuration.md, WORKERS).
    assert docker["memory"] >= 35 * (workers + 1), docker


def test_the_sesam_page_names_the_secret_to_set():
    names = SECRET.findall(json.dumps(the_system()))
    assert names
    page = (ROOT / "docs" / "sesam.md").read_text(encoding="utf-8")
    for name in names:
        assert name in page, f"docs/sesam.md does not name secret {name}"


def test_the_system_runs_the_image_that_compose_builds_and_ci_pushes():
    repository = the_system()["docker"]["image"].rsplit(":", 1)[0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    (connector,) = [s for name, s in compose["services"].items() if name != "upstream"]
    assert connector["image"].rsplit(":", 1)[0] == repository
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    assert workflow["env"]["IMAGE"] == repository


@pytest.mark.parametrize("pipe", pipes(), ids=lambda p: p["_id"])
def test_every_pipe_uses_the_system_and_a_collection_the_connector_serves(pipe):
    endpoints = [
        part
        for part in (pipe.get("source"), pipe.get("sink"))
        if part and part.get("type") == "json"
    ]
    assert endpoints, f"{pipe['_id']} neither reads nor writes through the connector"
    for endpoint in endpoints:
        assert endpoint["system"] == the_system()["_id"]
        assert Records.collection.fullmatch(endpoint["url"]), endpoint["url"]
        if compose_runs_the_demo_upstream():
            # The demo has it, so the config works against docker-compose too.
            assert endpoint["url"] in seed_collections()


def compose_runs_the_demo_upstream() -> bool:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    command = compose["services"].get("upstream", {}).get("command", [])
    return "service.tools.demo_upstream" in command


def test_the_feed_pipe_pages_by_since():
    feeds = feed_pipes()
    assert feeds, "no pipe reads through the feed"
    for pipe in feeds:
        source = pipe["source"]
        assert source["supports_since"] is True
        assert source["is_chronological"] is True
        # The feed's _updated tokens sort as strings in feed order (service/framework/feed.py).
        assert source.get("is_since_comparable", True) is True
        assert isinstance(source["page_size"], int) and source["page_size"] > 0


def test_a_sink_pipe_writes_a_dataset():
    sinks = sink_pipes()
    assert sinks, "no pipe writes through the sink"
    for pipe in sinks:
        assert pipe["source"]["type"] == "dataset"
        assert pipe["source"]["dataset"]


def test_no_sink_pipe_writes_a_collection_back_from_its_own_feed():
    # Every write gives a record a new updated_at: the feed would read it again, and the
    # sink would write it again, for ever.
    feed_datasets = {
        p.get("sink", {}).get("dataset", p["_id"]): p["source"]["url"] for p in feed_pipes()
    }
    for pipe in sink_pipes():
        read_from = feed_datasets.get(pipe["source"]["dataset"])
        assert read_from != pipe["sink"]["url"], pipe["_id"]


def test_the_system_sends_the_basic_auth_the_connector_asks_for():
    system = the_system()
    environment = system["docker"]["environment"]
    assert system["authentication"] == "basic"
    assert system["username"] == environment["AUTH_USERNAME"]
    assert system["password"] == environment["AUTH_PASSWORD"]
