"""Settings: required variables, defaults, and one clear line for a bad value.

The framework's behaviour is tested on the reference adapter's settings
(``service/tools/reference.py``, the same in every fork); the configuration table and the
start-up line are tested against this repository's connector, the one ``fork.toml``
names (``service.tools.apps``), whatever its upstream's settings are: the framework's
settings in docs/configuration.md, the connector's own on its page, docs/connector.md.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.framework.settings import ConfigError
from service.framework.settings import Settings
from service.framework.settings import Variable
from service.framework.settings import load_settings
from service.framework.settings import variables
from service.tools.apps import REFERENCE_APP
from service.tools.apps import connector_app
from service.tools.apps import connector_factory
from service.tools.apps import upstream_variables
from service.tools.dev import GUNICORN_ARGS
from service.tools.ownership import read_fork
from service.tools.reference import ReferenceSettings

ROOT = Path(__file__).resolve().parents[3]
BASE = {"UPSTREAM_URL": "http://records:8000/", "UPSTREAM_TOKEN": "hunter2"}
ConnectorSettings = connector_factory().settings_class  # the fork's, declared beside its adapter


def test_defaults_apply_and_the_url_loses_its_trailing_slash():
    settings = load_settings(ReferenceSettings, BASE)
    assert settings.upstream_url == "http://records:8000"
    assert settings.port == 5000
    assert settings.upstream_page_size == 1000
    assert settings.full_sync_delete is False


def test_the_token_never_shows_in_the_settings_repr():
    assert "hunter2" not in repr(load_settings(ReferenceSettings, BASE))


@pytest.mark.parametrize("missing", ["UPSTREAM_URL", "UPSTREAM_TOKEN"])
def test_required_variables(missing):
    environ = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is required"):
        load_settings(ReferenceSettings, environ)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "http"),
        ("PORT", "70000"),
        ("UPSTREAM_URL", "records:8000"),
        ("UPSTREAM_PAGE_SIZE", "0"),
        ("UPSTREAM_PAGE_SIZE", "1001"),
        ("LOG_LEVEL", "LOUD"),
        ("UPSTREAM_READ_TIMEOUT", "-1"),
        ("FULL_SYNC_DELETE", "maybe"),
    ],
)
def test_malformed_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load_settings(ReferenceSettings, {**BASE, name: value})


@pytest.mark.parametrize("value", ["ftp://records:8000", "http://", "https:///people"])
def test_the_upstream_url_needs_http_or_https_and_a_host(value):
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "UPSTREAM_URL": value})
    assert str(raised.value) == f"UPSTREAM_URL={value!r} must be an http:// or https:// URL"


def test_an_upstream_url_with_credentials_is_refused_and_they_are_not_shown():
    """requests would send them as basic auth instead of the token, and every message
    naming the URL would print them."""
    with pytest.raises(ConfigError) as raised:
        load_settings(
            ReferenceSettings,
            {**BASE, "UPSTREAM_URL": "https://someone:pa55-s3cr3t@records.example"},
        )
    assert str(raised.value) == (
        "UPSTREAM_URL='https://***@records.example' must not hold credentials "
        "(user:password@): use the token setting"
    )


def test_a_malformed_value_without_credentials_is_shown_as_it_is():
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "UPSTREAM_URL": "records:8000"})
    assert str(raised.value) == "UPSTREAM_URL='records:8000' must be an http:// or https:// URL"


@pytest.mark.parametrize("value", ["true", "1", "yes", "on", " TRUE ", "On"])
def test_a_switch_is_on_with_true_1_yes_or_on_in_any_case(value):
    settings = load_settings(ReferenceSettings, {**BASE, "FULL_SYNC_DELETE": value})
    assert settings.full_sync_delete is True


@pytest.mark.parametrize("value", ["false", "0", "no", "off", " FALSE ", "Off"])
def test_a_switch_is_off_with_false_0_no_or_off_in_any_case(value):
    settings = load_settings(ReferenceSettings, {**BASE, "FULL_SYNC_DELETE": value})
    assert settings.full_sync_delete is False


@pytest.mark.parametrize("value", ["maybe", "2", "y"])
def test_a_switch_is_nothing_else(value):
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "FULL_SYNC_DELETE": value})
    assert str(raised.value) == f"FULL_SYNC_DELETE={value!r} must be true or false"


@pytest.mark.parametrize(("value", "seconds"), [("0.001", 0.001), ("86399.5", 86399.5), ("7", 7.0)])
def test_a_time_bound_is_seconds_above_0_and_under_a_day(value, seconds):
    settings = load_settings(ReferenceSettings, {**BASE, "UPSTREAM_READ_TIMEOUT": value})
    assert settings.upstream_read_timeout == seconds


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("soon", "must be a number of seconds"),
        ("0", "must be a number of seconds above 0"),
        ("-1", "must be a number of seconds above 0"),
        ("86400", "must be a number of seconds above 0"),
    ],
)
def test_a_time_bound_out_of_range_is_refused_saying_what_it_takes(value, says):
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "UPSTREAM_READ_TIMEOUT": value})
    assert str(raised.value) == f"UPSTREAM_READ_TIMEOUT={value!r} {says}"


#: Each whole-number setting's range, as its declaration promises.
RANGES = [
    ("PORT", 1, 65535),
    ("WORKERS", 1, 64),
    ("THREADS", 1, 256),
    ("UPSTREAM_RETRIES", 0, 100),
    ("UPSTREAM_MAX_ANSWER_BYTES", 1024, 2**31),
    ("UPSTREAM_MAX_RECORD_BYTES", 1024, 2**31),
    ("UPSTREAM_POOL_SIZE", 1, 256),
    ("SINK_MAX_BODY_BYTES", 1, 2**31),
    ("WORKER_MEMORY_BUDGET", 1048576, 2**40),
    ("SINK_CONCURRENCY", 1, 64),
]
#: Room for the largest body in the budget, and a body small enough for the least budget.
ROOMY = {"SINK_MAX_BODY_BYTES": "1000", "WORKER_MEMORY_BUDGET": str(2**40)}


@pytest.mark.parametrize(("name", "low", "high"), RANGES)
def test_a_whole_number_setting_takes_its_range_and_nothing_past_it(name, low, high):
    field = {f.metadata["variable"].name: f.name for f in dataclasses.fields(Settings)}[name]
    for value in (low, high):
        settings = load_settings(ReferenceSettings, {**BASE, **ROOMY, name: str(value)})
        assert getattr(settings, field) == value
    for value in (low - 1, high + 1):
        with pytest.raises(ConfigError) as raised:
            load_settings(ReferenceSettings, {**BASE, **ROOMY, name: str(value)})
        assert str(raised.value) == f"{name}='{value}' must be between {low} and {high}"


def test_every_setting_says_what_it_means():
    """Shown when a required one is missing, and the first thing a fork's maintainer reads
    in the declaration."""
    declared = variables(ReferenceSettings)
    assert [v.name for v in declared if not v.meaning.strip()] == []


@pytest.mark.parametrize("value", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", " debug "])
def test_the_log_level_is_one_of_the_five_in_any_case(value):
    settings = load_settings(ReferenceSettings, {**BASE, "LOG_LEVEL": value})
    assert settings.log_level == value.strip().upper()


def test_the_state_directory_must_be_named():
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "STATE_DIR": "   "})
    assert str(raised.value) == "STATE_DIR='   ' must name a directory"


@pytest.mark.parametrize("given", ["AUTH_USERNAME", "AUTH_PASSWORD"])
def test_the_sesam_credentials_go_together(given):
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, given: "sesam-3f9a"})
    assert str(raised.value) == "AUTH_USERNAME and AUTH_PASSWORD go together: set both or neither"


@pytest.mark.parametrize(
    ("character", "code"), [("\x7f", "007F"), ("\x85", "0085"), ("\x9f", "009F")]
)
def test_a_c1_control_character_in_a_value_is_refused_naming_it(character, code):
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "STATE_DIR": f"/tmp/state{character}"})
    assert str(raised.value).startswith(
        f"STATE_DIR holds the control character U+{code} at character 11 of 11: remove it"
    )


LOGGING = """
import logging
from service.framework import masking
from service.framework.settings import configure_logging

logging.getLogger().addHandler(logging.NullHandler())  # a handler of someone else's
configure_logging("INFO")
configure_logging("INFO")  # once per process, however often it is called
masking.register("s3cret-5e1d")
logging.getLogger("service.framework.feed").info("sent s3cret-5e1d upstream")
logging.getLogger("service.framework.feed").debug("a line below the level")
"""


def test_the_log_goes_to_stdout_once_per_line_at_its_level_with_secrets_masked():
    result = subprocess.run(
        [sys.executable, "-c", LOGGING], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith(" INFO service.framework.feed: sent <hidden> upstream")


def test_a_malformed_secret_is_not_echoed():
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "UPSTREAM_TOKEN": "   "})
    assert "(secret)" in str(raised.value)


def settings_table(page: str) -> dict[str, list[str]]:
    """A docs page's table of settings: name -> [default, required, secret, meaning]."""
    rows = {}
    for line in (ROOT / "docs" / page).read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def table_problems(page: str, declared: tuple[Variable, ...]) -> list[str]:
    """What the page's table says otherwise than the declarations: a row for each declared
    setting with its default, required and secret columns, and no other row."""
    table = settings_table(page)
    problems = [f"docs/{page} has no row for {v.name}" for v in declared if v.name not in table]
    problems += [
        f"docs/{page} has a row for {name}, which is not declared there"
        for name in sorted(set(table) - {v.name for v in declared})
    ]
    for variable in declared:
        if variable.name not in table:
            continue
        default, required, secret, meaning = table[variable.name]
        expected = [
            f"`{variable.default}`" if variable.default else "",
            "yes" if variable.default is None else "no",
            "yes" if variable.secret else "no",
        ]
        if [default, required, secret] != expected or not meaning:
            problems.append(f"docs/{page}, {variable.name}: {table[variable.name]}, not {expected}")
    return problems


def test_the_configuration_table_is_the_frameworks_declarations():
    """docs/configuration.md, a page of the framework's, tables the framework's settings:
    the same in every fork."""
    assert table_problems("configuration.md", variables(Settings)) == []


def test_the_connectors_page_tables_the_settings_its_adapter_declares():
    """A fork's own settings have their rows on its own page, docs/connector.md, never on
    the framework's (which an upgrade replaces)."""
    declared = upstream_variables(ConnectorSettings)
    assert declared, "the connector declares no setting of its own: where is its upstream?"
    assert table_problems("connector.md", declared) == []


def test_a_table_that_leaves_out_or_misstates_a_setting_is_caught(tmp_path, monkeypatch):
    """The check above, on a table that lost a row and one that calls a secret not secret."""
    page = (ROOT / "docs" / "connector.md").read_text(encoding="utf-8")
    (tmp_path / "docs").mkdir()
    broken = page.replace("| `UPSTREAM_TOKEN` | | yes | yes |", "| `UPSTREAM_TOKEN` | | yes | no |")
    (tmp_path / "docs" / "connector.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    declared = upstream_variables(ReferenceSettings)
    assert [p.split(":")[0] for p in table_problems("connector.md", declared)] == [
        "docs/connector.md, UPSTREAM_TOKEN"
    ]
    missing = tuple(v for v in variables(Settings) if v.name == "PORT")
    assert table_problems("connector.md", missing)[0] == "docs/connector.md has no row for PORT"


def gunicorn_output(app: str | None, **environ: str) -> str:
    """What gunicorn prints when it cannot start ``app`` (None: the one the contract's
    command serves, fork.toml's) in an environment of ``environ``."""
    env = {"PATH": str(Path(sys.executable).parent), **environ}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, *GUNICORN_ARGS, *([app] if app else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return (result.stdout + result.stderr).strip()


def test_gunicorn_stops_with_one_line_when_a_variable_is_missing():
    output = gunicorn_output(REFERENCE_APP, UPSTREAM_TOKEN="hunter2")
    assert output == "configuration error: UPSTREAM_URL is required: Base URL of the Records API."


def test_the_contract_command_serves_fork_tomls_app_and_stops_naming_its_first_required_variable():
    """The command names no app: gunicorn's config serves the one fork.toml names, and
    checks that app's settings, not the framework's alone."""
    assert read_fork().app == connector_app()
    required = [v for v in variables(ConnectorSettings) if v.default is None]
    assert required, "the connector requires no setting: where is its upstream?"
    output = gunicorn_output(None)
    first = required[0]
    assert output == f"configuration error: {first.name} is required: {first.meaning}"


def test_the_contract_command_without_fork_toml_stops_with_one_line_naming_it(tmp_path):
    """An image or checkout that lost fork.toml has no app to serve: one line, no traceback."""
    shutil.copytree(
        ROOT / "service",
        tmp_path / "service",
        ignore=shutil.ignore_patterns("tests", "tools", "__pycache__"),
    )
    env = {"PATH": str(Path(sys.executable).parent)}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, *GUNICORN_ARGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert re.fullmatch(
        r"configuration error: no app to serve: cannot read \S+/fork\.toml "
        r"\(No such file or directory\)",
        output,
    ), output
