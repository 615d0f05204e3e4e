"""sesam/expected/ is what the connector serves: ``sesam test`` on a node compares the
published feed with these files, so they are remade here from the running connector
(over the demo Records API's seed data) with the local Sesam runner, and must match.

A connector to another upstream makes its files over its own upstream's data, and checks
them in its own tests (``expected_outputs`` against its connector under test)."""

from __future__ import annotations

import json

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
    # sesam-py's number fixes: a float printed as N.0 becomes N, 1e+20 does not; an
    # integer of more than 16 digits goes through a float.
    assert as_sesam_verify_compares([2.0, 1e20, 12345678901234567]) == [
        2,
        1e20,
        12345678901234568,
    ]


def test_deleted_entities_are_kept_only_where_the_spec_says_ignore_deletes_false(
    connector, upstream, tmp_path
):
    """As ``sesam update`` writes: a spec without ``ignore_deletes`` (true by default) gets
    no deleted entity, so a tombstone in an expected file needs ``false`` there."""
    folder = tmp_path / "sesam"
    (folder / "pipes").mkdir(parents=True)
    (folder / "expected").mkdir()
    feed = {
        "_id": "feed",
        "type": "pipe",
        "source": {"type": "json", "system": "connector", "url": "people", "page_size": 5},
    }
    for name, spec in (("keeps", {"ignore_deletes": False}), ("drops", {})):
        pipe = {
            "_id": name,
            "type": "pipe",
            "source": {"type": "dataset", "dataset": "feed"},
            "sink": {"type": "http_endpoint"},
        }
        (folder / "pipes" / f"{name}.conf.json").write_text(json.dumps(pipe))
        (folder / "expected" / f"{name}.test.json").write_text(json.dumps(spec))
    (folder / "pipes" / "feed.conf.json").write_text(json.dumps(feed))
    outputs = {
        path.name: json.loads(text)
        for path, text in expected_outputs(connector.url, folder).items()
    }
    kept = {e["_id"] for e in outputs["keeps.json"] if e.get("_deleted") is True}
    assert kept == {"p-21"}, "the demo's tombstone p-21 should come through paging by since"
    assert [e for e in outputs["drops.json"] if e.get("_deleted")] == []
    assert len(outputs["drops.json"]) == len(outputs["keeps.json"]) - 1
