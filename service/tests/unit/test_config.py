"""Settings: required variables, defaults, and one clear line for a bad value.

The framework's behaviour is tested on the reference adapter's settings
(``service/tools/reference.py``, the same in every fork); the configuration table and the
start-up line are tested against this repository's connector, the one its gunicorn
command names (``service.tools.apps``), whatever its upstream's settings are.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.framework.settings import ConfigError
from service.framework.settings import load_settings
from service.framework.settings import variables
from service.tools.apps import REFERENCE_APP
from service.tools.apps import connector_app
from service.tools.apps import connector_factory
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


def test_a_malformed_secret_is_not_echoed():
    with pytest.raises(ConfigError) as raised:
        load_settings(ReferenceSettings, {**BASE, "UPSTREAM_TOKEN": "   "})
    assert "(secret)" in str(raised.value)


def configuration_table() -> dict[str, list[str]]:
    """docs/configuration.md's table: name -> [default, required, secret, meaning]."""
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_configuration_table_is_the_declarations():
    """Every declared setting has its row with its default, required and secret columns, and
    the table names no setting that is not declared."""
    table = configuration_table()
    declared = variables(ConnectorSettings)
    assert sorted(table) == sorted(v.name for v in declared)
    for variable in declared:
        default, required, secret, meaning = table[variable.name]
        assert default == (f"`{variable.default}`" if variable.default else ""), variable.name
        assert required == ("yes" if variable.default is None else "no"), variable.name
        assert secret == ("yes" if variable.secret else "no"), variable.name
        assert meaning, variable.name


def gunicorn_output(app: str, **environ: str) -> str:
    """What gunicorn prints when it cannot start ``app`` in an environment of ``environ``."""
    env = {"PATH": str(Path(sys.executable).parent), **environ}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-c", "service/gunicorn.conf.py", app],
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


def test_the_connectors_command_stops_with_one_line_naming_its_first_required_variable():
    required = [v for v in variables(ConnectorSettings) if v.default is None]
    assert required, "the connector requires no setting: where is its upstream?"
    output = gunicorn_output(connector_app())
    first = required[0]
    assert output == f"configuration error: {first.name} is required: {first.meaning}"
