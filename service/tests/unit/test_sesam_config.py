"""The Sesam config in sesam/ stays consistent with the code a user uploads it beside.

A drift here shows only on a Sesam node: a pipe that reads a path the connector does not
serve, a system that talks to the wrong port, a variable the connector never reads. What
the config must hold comes from this repository's connector (its adapter and settings
class, found by the gunicorn command: ``service.tools.apps``), so these checks run
unchanged in a fork to any upstream.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.framework.adapter import Adapter
from service.framework.settings import load_settings
from service.framework.settings import url
from service.framework.settings import variables
from service.tests.framework_kit import compose_runs_the_demo
from service.tools import rename
from service.tools.apps import connector_factory
from service.tools.apps import reads_the_demo
from service.tools.demo_upstream import seed_collections

ROOT = Path(__file__).resolve().parents[3]
SESAM = ROOT / "sesam"
CONNECTOR = connector_factory()
ConnectorSettings = CONNECTOR.settings_class
ConnectorAdapter = CONNECTOR.adapter_class
SECRET = re.compile(r"\$SECRET\(([a-z0-9][a-z0-9_-]*)\)")
ENV = re.compile(r"\$ENV\(([a-z0-9][a-z0-9_-]*)\)")
DEFAULTS = {variable.name: variable.default for variable in variables(ConnectorSettings)}
# What sesam-py reads in the folder: config (pipes/, systems/, node-metadata.conf.json),
# the profile's variables (test-env.json), test specs and expected output (expected/),
# test input (testdata/).
KNOWN = ("pipes", "systems", "expected", "testdata", "test-env.json", "node-metadata.conf.json")


def load_config() -> list[dict[str, Any]]:
    """The pipe and system configs: pipes/*.conf.json and systems/*.conf.json only, as
    sesam-py uploads them."""
    files = sorted([*SESAM.glob("pipes/*.conf.json"), *SESAM.glob("systems/*.conf.json")])
    assert files, "no Sesam config in sesam/pipes and sesam/systems"
    config = []
    for path in files:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        config.extend(loaded if isinstance(loaded, list) else [loaded])
    return config


def profile() -> dict[str, Any]:
    return json.loads((SESAM / "test-env.json").read_text(encoding="utf-8"))


def with_variables(value: str) -> str:
    """A config value as the node resolves it: $ENV from the profile, secrets made up."""
    value = ENV.sub(lambda match: str(profile()[match.group(1)]), value)
    return SECRET.sub("a-secret-value", value)


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


def test_every_config_is_json_with_a_unique_id_and_a_type():
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
        name: with_variables(value) if isinstance(value, str) else json.dumps(value)
        for name, value in environment.items()
    }
    settings = load_settings(ConnectorSettings, as_text)
    assert settings.port == the_system()["docker"]["port"]
    assert "a-secret-value" not in repr(settings)  # with_variables' made-up secrets


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
        assert name in page, f"docs/sesam.md does not name secret {name} (the system sets it)"


def test_the_system_runs_the_image_ci_pushes_under_a_name_docker_hub_takes():
    repository = the_system()["docker"]["image"].rsplit(":", 1)[0]
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    assert workflow["env"]["IMAGE"] == repository
    parts = repository.split("/")
    if len(parts) == 2 and "." not in parts[0] and ":" not in parts[0]:
        # Docker Hub: the namespace is 4 to 30 lowercase letters and digits, no dashes.
        assert re.fullmatch(r"[a-z0-9]{4,30}", parts[0]), parts[0]
    assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", parts[-1]), parts[-1]


def test_docker_compose_push_cannot_publish_the_test_stage_as_the_image_sesam_pulls():
    repository = the_system()["docker"]["image"].rsplit(":", 1)[0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        target = (service.get("build") or {}).get("target", "")
        if target != "runtime" and "build" in service:
            # Compose skips a service without an image name when it pushes.
            assert "image" not in service, f"docker-compose push would publish {name}'s {target}"
        if str(service.get("image", "")).rsplit(":", 1)[0] == repository:
            assert target == "runtime", name


def the_adapter() -> Adapter:
    environment = the_system()["docker"]["environment"]
    settings = {name: with_variables(value) for name, value in environment.items()}
    return ConnectorAdapter(load_settings(ConnectorSettings, settings))


def has_transforms() -> bool:
    """Whether the connector serves HTTP transforms (``Adapter.transform`` overridden)."""
    return ConnectorAdapter.transform is not Adapter.transform


def transform_pipes() -> list[dict[str, Any]]:
    return [p for p in pipes() if (p.get("transform") or {}).get("type") == "http"]


def is_output_or_endpoint(pipe: dict[str, Any]) -> bool:
    """sesam-py's test: a pipe whose sink is not a dataset (its sink is the pipe's output)."""
    return (pipe.get("sink") or {}).get("type", "dataset") != "dataset"


@pytest.mark.parametrize("pipe", pipes(), ids=lambda p: p["_id"])
def test_every_pipe_uses_the_system_and_a_collection_or_transform_the_connector_serves(pipe):
    endpoints = [
        part
        for part in (pipe.get("source"), pipe.get("sink"))
        if part and part.get("type") == "json"
    ]
    transform = pipe.get("transform") or {}
    if not endpoints and transform.get("type") != "http":
        # Only the endpoint pipe that publishes a dataset for sesam test talks to no one.
        assert pipe["sink"]["type"] == "http_endpoint", pipe["_id"]
        return
    for endpoint in endpoints:
        assert endpoint["system"] == the_system()["_id"]
        assert ConnectorAdapter.collection.fullmatch(endpoint["url"]), endpoint["url"]
        if compose_runs_the_demo_upstream():
            # The demo has it, so the config works against docker-compose too.
            assert endpoint["url"] in seed_collections()
    if transform:
        assert transform["system"] == the_system()["_id"]
        prefix, _, name = transform["url"].partition("transform/")
        assert prefix == "" and name, transform["url"]
        assert the_adapter().transform(name) is not None, f"the connector has no {name!r}"
        if compose_runs_the_demo_upstream():
            assert name.rpartition("-")[0] in seed_collections()


def test_the_transform_pipe_reads_only_so_previews_may_call_it():
    if not has_transforms():
        assert not transform_pipes(), "the connector serves no HTTP transform"
        return
    assert transform_pipes(), "no pipe runs the connector's HTTP transform"
    for pipe in transform_pipes():
        # The reference transform only reads: Sesam may call it in previews.
        assert pipe["transform"]["side_effects"] is False
        assert pipe["transform"].get("batch_size", 100) <= 100


def test_the_feed_pipe_fails_on_an_empty_source_instead_of_deleting_its_dataset():
    for pipe in feed_pipes():
        assert pipe["source"]["if_source_empty"] == "fail", pipe["_id"]


@pytest.mark.parametrize("pipe", pipes(), ids=lambda p: p["_id"])
def test_every_pipe_that_talks_to_the_connector_has_a_schedule(pipe):
    if pipe.get("sink", {}).get("type") == "http_endpoint":
        assert "pump" not in pipe  # an endpoint pipe has no pump: it is read on request
        return
    pump = pipe.get("pump") or {}
    assert pump.get("cron_expression") or pump.get("schedule_interval"), pipe["_id"]


def test_the_system_does_not_retry_what_a_retry_cannot_fix():
    strategy = the_system()["retry_strategy"]

    def statuses(key: str) -> set[int]:
        found: set[int] = set()
        for part in key.split(","):
            low, _, high = part.partition("-")
            found.update(range(int(low), int(high or low) + 1))
        return found

    no_retry = set()
    for key, rule in strategy.items():
        if key != "default" and rule.get("batch_retries") == 0:
            assert rule["max_retries_per_entity"] == 0, key
            no_retry |= statuses(key)
    # Every 4xx but 429 (the connector rides out the upstream's 429s itself; its own
    # answers are 400, 401, 404, 409, 413) fails at once; 5xx keep Sesam's retries.
    assert no_retry == set(range(400, 500)) - {429}
    assert "default" not in strategy


def test_the_system_waits_longer_than_the_connector_can_stay_silent():
    system = the_system()
    environment = system["docker"]["environment"]

    def setting(name: str) -> float:
        return float(environment.get(name, DEFAULTS[name]))

    tries = setting("UPSTREAM_RETRIES") + 1
    per_try = setting("UPSTREAM_CONNECT_TIMEOUT") + setting("UPSTREAM_READ_TIMEOUT")
    longest_silence = tries * per_try + setting("UPSTREAM_FEED_RETRY_BUDGET")
    assert system["read_timeout"] > longest_silence
    assert system["connect_timeout"] >= 30  # the container may still be starting


def test_the_folder_holds_only_what_sesam_py_reads():
    assert sorted(p.name for p in SESAM.iterdir() if p.name not in KNOWN) == []


def test_the_node_metadata_is_there_so_sesam_upload_can_turn_scheduling_off():
    # sesam upload sets task_manager.disable_user_pipes (and eager_load_microservices) only
    # by replacing a node-metadata.conf.json already in what it uploads: without the file,
    # pipes run on their schedules and -enable-user-pipes changes nothing (sesam-py,
    # upload and replace_file_in_zipfile; docs/sesam-node.md).
    path = SESAM / "node-metadata.conf.json"
    assert path.is_file(), "without it sesam upload leaves pipe scheduling on"
    metadata = json.loads(path.read_text(encoding="utf-8"))
    assert metadata["_id"] == "node" and metadata["type"] == "metadata"


def test_the_profile_holds_every_variable_the_config_reads_and_no_secret():
    variables_read = set(ENV.findall(json.dumps(load_config())))
    assert variables_read, "the config reads no per-environment variable"
    assert set(profile()) == variables_read
    for name, value in profile().items():
        assert isinstance(value, str), name
        assert "$SECRET(" not in value and not re.search(r"token|password|secret", name), (
            f"{name}: the profile (sesam/test-env.json) is a file, and a name with token, "
            "password or secret says it holds one; a secret goes in $SECRET(...) on the node, "
            "and a variable that is not secret is named otherwise (erp-auth-url, not "
            "erp-token-url): docs/forking.md"
        )
    # The upstream's address differs per environment: every URL setting comes from it.
    environment = the_system()["docker"]["environment"]
    urls = [v.name for v in variables(ConnectorSettings) if v.parse is url]
    assert any(name in environment for name in urls), f"the system sets none of {urls}"
    for name in urls:
        if name in environment:
            assert "$ENV(" in environment[name], name


def test_every_output_and_endpoint_pipe_has_a_test_spec_and_each_spec_its_file():
    # sesam verify fails on an output or endpoint pipe without a spec, and on a spec that
    # names any other pipe (sesam-py, load_test_specs and verify).
    checked = {p["_id"]: p for p in pipes() if is_output_or_endpoint(p)}
    spec_files = sorted((SESAM / "expected").glob("*.test.json"))
    named = {}
    for path in spec_files:
        spec = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(spec, dict), path.name
        name = path.name[: -len(".test.json")]
        named[spec.get("pipe", name)] = spec
        expected = SESAM / "expected" / spec.get("file", f"{name}.json")
        if spec.get("ignore") is True:
            assert spec.get("description"), f"{path.name}: say why it is ignored"
            assert not expected.exists(), f"{path.name} is ignored but {expected.name} exists"
        else:
            entities = json.loads(expected.read_text(encoding="utf-8"))
            assert isinstance(entities, list)
            # sesam update drops deleted entities unless the spec says ignore_deletes
            # false (its default is true): a tombstone in the file needs it.
            if any(entity.get("_deleted") is True for entity in entities):
                assert spec.get("ignore_deletes") is False, (
                    f"{path.name}: {expected.name} holds a deleted entity, which sesam update "
                    'would drop: set "ignore_deletes": false'
                )
    assert sorted(named) == sorted(checked)
    assert any(spec.get("ignore") is not True for spec in named.values())


def compose_runs_the_demo_upstream() -> bool:
    """docker-compose.yml starts the demo Records API beside a connector that reads it (a
    fork to another upstream drops or replaces that service: test_docker_artifacts.py)."""
    return compose_runs_the_demo() and reads_the_demo(ConnectorSettings)


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


def doc_snippets() -> list[tuple[str, dict[str, Any]]]:
    """The docs' JSON blocks that show a pipe or a pipe's source, sink or transform, with
    the connector's name as the folder has it (a renamed fork's docs keep the original's
    in their examples)."""
    name = rename.current_names(ROOT).name
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```json\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            text = re.sub(rf"\b{rename.ORIGINAL}\b", name, block.strip())
            if re.match(r'"(source|sink|transform)":', text):
                found.append((page.name, json.loads("{" + text + "}")))
            elif text.startswith("{") and '"type": "pipe"' in text:
                found.append((page.name, json.loads(text)))
    return found


def test_the_docs_show_pipes_as_the_folder_ships_them():
    # A snippet a reader pastes into a node must work there: the folder's system id, and
    # every property the shipped pipe has (a json source pages only with
    # is_since_comparable).
    snippets = doc_snippets()
    assert snippets, "no page shows a pipe's source or sink"
    shipped = {p["_id"]: p for p in pipes()}
    for page, snippet in snippets:
        if "_id" in snippet:  # a whole pipe, maybe without its description and pump
            pipe = shipped.get(snippet["_id"], {})
            assert snippet == {key: pipe.get(key) for key in snippet}, f"{page}: {snippet}"
            continue
        ((part, shown),) = snippet.items()
        assert any(pipe.get(part) == shown for pipe in shipped.values()), (
            f"{page} shows a {part} that no pipe in sesam/pipes has: {shown}"
        )
