"""The app from the factory, in process (pytest-flask's ``client``), over a real upstream.

pytest-flask keeps a request context open around each test, which would hide a missing
``stream_with_context``; the streamed feed is therefore also tested over HTTP against
gunicorn in ``functional/``.
"""

from __future__ import annotations

import json

import pytest

from service.connector import ConnectorSettings
from service.connector import create_app
from service.framework.settings import ConfigError
from service.framework.settings import load_settings


def test_health_answers_without_the_upstream(tmp_path):
    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "UPSTREAM_TOKEN": "test-token",
            "STATE_DIR": str(tmp_path),
        }
    )
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_the_factory_refuses_bad_settings():
    with pytest.raises(ConfigError, match="UPSTREAM_PAGE_SIZE"):
        create_app(
            {
                "UPSTREAM_URL": "http://x",
                "UPSTREAM_TOKEN": "test-token",
                "UPSTREAM_PAGE_SIZE": "5000",
            }
        )


# This connector's settings (the framework's own behaviour is tested on the reference
# adapter's, in unit/test_config.py).
SETTINGS = {"UPSTREAM_URL": "http://records:8000/", "UPSTREAM_TOKEN": "hunter2"}


def test_the_settings_defaults_and_the_url_without_its_trailing_slash():
    settings = load_settings(ConnectorSettings, SETTINGS)
    assert settings.upstream_url == "http://records:8000"
    assert settings.upstream_page_size == 1000
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("missing", ["UPSTREAM_URL", "UPSTREAM_TOKEN"])
def test_the_upstreams_url_and_token_are_required(missing):
    environ = {k: v for k, v in SETTINGS.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is required"):
        load_settings(ConnectorSettings, environ)


@pytest.mark.parametrize(
    ("name", "value"),
    [("UPSTREAM_URL", "records:8000"), ("UPSTREAM_PAGE_SIZE", "0"), ("UPSTREAM_PAGE_SIZE", "1001")],
)
def test_a_malformed_upstream_setting_is_named(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load_settings(ConnectorSettings, {**SETTINGS, name: value})


def test_a_malformed_token_is_not_echoed():
    with pytest.raises(ConfigError) as raised:
        load_settings(ConnectorSettings, {**SETTINGS, "UPSTREAM_TOKEN": "   "})
    assert "(secret)" in str(raised.value)


def test_the_feed_answers_a_json_array_of_entities(client, upstream):
    response = client.get("/people")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    entities = json.loads(response.get_data())
    assert {e["_id"] for e in entities} == set(upstream.live("people"))


def test_the_feed_resumes_from_since(client, upstream):
    full = json.loads(client.get("/companies").get_data())
    rest = json.loads(
        client.get("/companies", query_string={"since": full[1]["_updated"]}).get_data()
    )
    assert [e["_id"] for e in rest] == [e["_id"] for e in full[2:]]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing/here/at/all", 404),
        ("DELETE", "/people", 405),
        ("GET", "/UPPER", 404),
    ],
)
def test_errors_are_json(client, upstream, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) >= {"error", "detail"}
    assert body["error"]


def test_method_not_allowed_keeps_its_allow_header(client, upstream):
    response = client.delete("/people")
    assert "GET" in response.headers["Allow"]


def auth_app(tmp_path, **extra):
    config = {
        "UPSTREAM_URL": "http://127.0.0.1:9",
        "UPSTREAM_TOKEN": "test-token",
        "STATE_DIR": str(tmp_path),
        "AUTH_USERNAME": "sesam",
        "AUTH_PASSWORD": "pa55word",
    }
    config.update(extra)
    return create_app(config).test_client()


@pytest.mark.parametrize("credentials", [None, ("sesam", "wrong"), ("other", "pa55word")])
def test_with_basic_auth_on_a_wrong_or_missing_password_is_a_json_401(tmp_path, credentials):
    client = auth_app(tmp_path)
    for method, path in (("GET", "/people"), ("POST", "/people")):
        response = client.open(path, method=method, auth=credentials, json=[])
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].lower().startswith("basic")
        assert response.get_json()["error"] == "Unauthorized"
        assert "pa55word" not in response.get_data(as_text=True)


def test_with_basic_auth_health_stays_open_for_the_container_check(tmp_path):
    assert auth_app(tmp_path).get("/health").status_code == 200


def test_with_basic_auth_the_right_password_gets_through(upstream, tmp_path):
    config = {
        "UPSTREAM_URL": upstream.url,
        "UPSTREAM_TOKEN": upstream.token,
        "STATE_DIR": str(tmp_path),
        "AUTH_USERNAME": "sesam",
        "AUTH_PASSWORD": "pa55word",
    }
    guarded = create_app(config).test_client()
    response = guarded.get("/companies", auth=("sesam", "pa55word"))
    assert response.status_code == 200
    assert {e["_id"] for e in json.loads(response.get_data())} == set(upstream.live("companies"))
    assert guarded.post("/companies", json=[], auth=("sesam", "pa55word")).status_code == 200


def test_auth_needs_both_username_and_password():
    from service.framework.settings import ConfigError

    with pytest.raises(ConfigError, match="AUTH_USERNAME and AUTH_PASSWORD go together"):
        create_app(
            {"UPSTREAM_URL": "http://x", "UPSTREAM_TOKEN": "test-token", "AUTH_USERNAME": "s"}
        )
