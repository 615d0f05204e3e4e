"""sesam/expected/ is what the connector serves: ``sesam test`` on a node compares the
published feed with these files, so they are remade here from the running connector
(over the demo Records API's seed data) with the local Sesam runner, and must match.

A connector to another upstream makes its files over its own upstream's data, and checks
them in its own tests (``expected_outputs`` against its connector under test)."""

from __future__ import annotations

import pytest

from service.tests.framework_kit import DEMO_SETTINGS
from service.tools import apps
from service.tools.sesam_expected import SESAM
from service.tools.sesam_expected import as_sesam_verify_compares
from service.tools.sesam_expected import expected_outputs


def test_the_expected_output_is_what_the_runner_pulls_from_the_connector(
    connector_factory, upstream
):
    if not apps.reads_the_demo(apps.connector_factory().settings_class):
        pytest.skip("the connector does not read the demo Records API: its own tests check it")
    # This repository's connector, over the demo with its seed data.
    connector = connector_factory(app=apps.connector_app(), **DEMO_SETTINGS)
    outputs = expected_outputs(connector.url)
    assert outputs, "no test spec in sesam/expected compares a feed's output"
    for path, text in outputs.items():
        assert path.parent == SESAM / "expected"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date: python -m service.tools.sesam_expected URL"
        )


def test_only_what_sesam_verify_compares_is_kept():
    entity = {
        "_id": "p-1",
        "_updated": "x",
        "_deleted": False,
        "score": 3.0,
        "half": 1.5,
        "nested": {"_ts": 1, "n": 2.0},
    }
    assert as_sesam_verify_compares(entity) == {
        "_id": "p-1",
        "score": 3,
        "half": 1.5,
        "nested": {"n": 2},
    }
    assert as_sesam_verify_compares({"_id": "x", "_deleted": True}) == {
        "_id": "x",
        "_deleted": True,
    }
