"""Basic auth for Sesam's calls, on the connector under gunicorn: what Sesam gets when the
system's ``authentication`` is set right, wrong, or not at all (``service/framework/auth.py``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from service.tests.framework_kit import Connector
from service.tests.framework_kit import Upstream
from service.tests.framework_kit import running_connector

USERNAME = "sesam-ø"  # not ASCII: compared as the UTF-8 Sesam sends
PASSWORD = "pa55-wörd"


@pytest.fixture(scope="module")
def guarded(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    yield from running_connector(
        upstream_server.url,
        tmp_path_factory.mktemp("basic-auth"),
        AUTH_USERNAME=USERNAME,
        AUTH_PASSWORD=PASSWORD,
    )


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def answer(
    connector: Connector, authorization: str | None, path: str = "people"
) -> requests.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.get(f"{connector.url}/{path}", headers=headers, timeout=60)


def test_the_right_credentials_get_the_feed(guarded: Connector, upstream: Upstream) -> None:
    response = answer(guarded, basic(USERNAME, PASSWORD))
    assert response.status_code == 200, response.text
    assert {e["_id"] for e in response.json()} == set(upstream.live("people"))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic(USERNAME, "wrong"),
        basic("other", PASSWORD),
        basic(USERNAME, ""),
        basic("", PASSWORD),
        basic(USERNAME, PASSWORD + "x"),
        # the right secret in another scheme is not basic auth
        "Bearer " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(),
        "Basic !!!not-base64",
    ],
)
def test_anything_else_is_a_json_401_asking_for_basic_auth(
    guarded: Connector, upstream: Upstream, authorization: str | None
) -> None:
    for path in ("people", "transform/people-record"):
        response = answer(guarded, authorization, path)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["WWW-Authenticate"] == 'Basic realm="connector"'
        assert response.json()["error"] == "Unauthorized"
        assert PASSWORD not in response.text
    assert upstream.stats()["GET"] == 0


def test_health_answers_without_credentials(guarded: Connector) -> None:
    response = answer(guarded, None, "health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_without_auth_settings_no_credentials_are_asked(connector: Connector) -> None:
    assert answer(connector, None).status_code == 200
    assert answer(connector, basic("anyone", "anything")).status_code == 200
