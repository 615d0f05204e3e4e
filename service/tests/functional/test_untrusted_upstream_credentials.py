"""An upstream that redirects writes and reads elsewhere, or quotes the credentials back
(issue 18, items 4 and 5), against the real server: the reference connector under
gunicorn in front of the hostile upstream, whose second origin (``other``) serves the same
records and accepts the same tokens, so that anything that leaves the configured origin
would be seen to work there, and is logged.

Each test checks what Sesam gets (a 502 naming the Location or the origin, never a 200
counting a write that did not happen, never a token), what each origin saw and that
``/health`` answers throughout and afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.tests.framework_kit import ROOT
from service.tests.framework_kit import connector_environment
from service.tests.functional.untrusted_upstream_kit import HOSTILE_SETTINGS
from service.tests.functional.untrusted_upstream_kit import HealthWatch
from service.tests.functional.untrusted_upstream_kit import HostileConnector
from service.tests.functional.untrusted_upstream_kit import entries
from service.tests.functional.untrusted_upstream_kit import read_feed
from service.tests.functional.untrusted_upstream_kit import requests_to
from service.tests.functional.untrusted_upstream_kit import serving
from service.tests.functional.untrusted_upstream_oauth import APP as OAUTH_APP
from service.tests.hostile_kit import HOSTILE_CLIENT_ID
from service.tests.hostile_kit import HOSTILE_CLIENT_SECRET
from service.tests.hostile_kit import HOSTILE_TOKEN
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import header
from service.tests.hostile_kit import rule
from service.tools.apps import REFERENCE_APP
from service.tools.servers import free_port

pytest_plugins = ["service.tests.hostile_kit"]

TIME = "2026-01-01T00:00:00.000000Z"
UNUSED_TOKEN = "static-token-not-sent"  # the OAuth app's UPSTREAM_TOKEN: never used


@pytest.fixture(scope="module")
def connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    with serving(hostile_server, tmp_path_factory.mktemp("credentials")) as served:
        yield served


@pytest.fixture(scope="module")
def oauth_connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    """The reference adapter with OAuth2 client credentials (``untrusted_upstream_oauth``)."""
    with serving(
        hostile_server,
        tmp_path_factory.mktemp("oauth"),
        app=OAUTH_APP,
        UPSTREAM_TOKEN=UNUSED_TOKEN,
        OAUTH_TOKEN_URL=f"{hostile_server.url}/oauth/token",
        OAUTH_CLIENT_ID=HOSTILE_CLIENT_ID,
        OAUTH_CLIENT_SECRET=HOSTILE_CLIENT_SECRET,
    ) as served:
        yield served


def people(count: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"r{n}", "updated_at": TIME, "n": n} for n in range(count)]


def incremental(connector: HostileConnector, entities: list[dict[str, Any]]) -> Any:
    return connector.post("people", json=entities, params={"is_full": "false"})


# --- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "to"),
    [(301, "other"), (302, "other"), (303, "other"), (307, "other"), (308, "other")]
    + [(302, "main"), (307, "main")],
)
def test_a_put_answered_with_a_redirect_is_a_502_naming_the_location(
    hostile, connector, status, to
):
    """Before issue 18 each counted as written (200, "upserts": 1): after 302/303 the
    write became a GET at the other origin, after 301 its body was dropped, after 307/308
    the record went to the other origin. Not even a redirect within the origin is
    followed: the write was not done where it was asked for."""
    hostile.seed("people", [])
    hostile.set_rules(
        rule("redirect", method="PUT", path="/people/a", status=status, to=to, target="/people/b")
    )
    with HealthWatch(connector):
        response = incremental(connector, [{"_id": "a", "name": "Ada"}])
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["summary"]["upserts"] == 0
    (failed,) = body["failed"]
    assert failed["upstream_status"] == status
    location = f"{hostile.other_url if to == 'other' else hostile.url}/people/b"
    assert f"a redirect to {location}: a write is never sent on" in failed["reason"], failed
    assert "nothing was written" in failed["reason"]
    assert requests_to(hostile, "PUT") == 1  # neither followed nor tried again
    assert hostile.log(listener="other") == []
    assert hostile.records("people") == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_list_redirected_to_another_origin_is_a_502_and_nothing_goes_there(
    hostile, connector, status
):
    """Before issue 18 the other origin's list was served to Sesam as the collection."""
    hostile.seed("people", people())
    hostile.set_rules(rule("redirect", method="GET", prefix="/people", status=status))
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    detail = feed.json()["detail"]
    other = hostile.other_url.removeprefix("http://")
    assert f"a redirect to another origin (http://{other})" in detail, detail
    assert hostile.log(listener="other") == []  # no request, so no credential
    assert requests_to(hostile, "GET") == 1


def test_a_list_redirected_within_its_origin_is_followed(hostile, connector):
    hostile.seed("people", people())
    hostile.set_rules(
        rule("redirect", method="GET", prefix="/people", to="main", status=302, times=1)
    )
    feed = read_feed(connector.url, "people")
    assert feed.status == 200, feed.body[:300]
    assert [entity["_id"] for entity in feed.json()] == ["r0", "r1", "r2"]
    assert requests_to(hostile, "GET") == 2
    assert hostile.log(listener="other") == []


def test_an_oauth2_token_never_reaches_another_origin(hostile, oauth_connector):
    """The OAuth2 block resends a request with a new token when the upstream answers 401.
    Before issue 18 that hook rode along with a redirect: a list redirected to another
    origin that answered 401 got a fresh token there. Now no request goes there at all,
    and a 401 from the configured origin still gets its one resend with a new token."""
    hostile.seed("people", people())
    # A token, as it should be (fetched now: the tool forgot the tokens of earlier tests,
    # so a token the connector holds from one is refused, and fetched again).
    assert read_feed(oauth_connector.url, "people").status == 200
    (token_request,) = entries(hostile, "POST", path="/oauth/token")
    assert not header(token_request, "Authorization")[0].startswith("Bearer")
    (bearer,) = header(entries(hostile, "GET")[-1], "Authorization")
    assert bearer.startswith("Bearer ") and bearer != f"Bearer {UNUSED_TOKEN}"
    issued = hostile.stats()["tokens_issued"]

    hostile.set_rules(
        rule("redirect", method="GET", prefix="/people", status=302),
        rule("redirect", method="PUT", prefix="/people/", status=307),
        rule("status", listener="other", status=401, json={"error": "invalid_token"}),
    )
    with HealthWatch(oauth_connector):
        feed = read_feed(oauth_connector.url, "people")
        written = incremental(oauth_connector, [{"_id": "a", "name": "Ada"}])
    assert feed.status == 502, feed.body[:300]
    assert "another origin" in feed.json()["detail"]
    assert written.status_code == 502, written.text
    assert written.json()["summary"]["upserts"] == 0
    assert hostile.log(listener="other") == []
    assert hostile.stats()["tokens_issued"] == issued  # no new token for anyone

    # The configured origin refuses the token once: a new one, and the request again.
    hostile.set_rules(rule("status", method="GET", prefix="/people", status=401, times=1))
    assert read_feed(oauth_connector.url, "people").status == 200
    assert hostile.stats()["tokens_issued"] == issued + 1
    assert hostile.log(listener="other") == []


# --- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401])
def test_an_upstream_error_that_quotes_the_token_back_is_masked(hostile, connector, status):
    """Some gateways explain a refusal by quoting the request's Authorization header:
    before issue 18 the token went into Sesam's 502 and the log."""
    hostile.seed("people", people())
    hostile.set_rules(
        rule("echo_auth", method="GET", prefix="/people", status=status),
        rule("echo_auth", method="PUT", prefix="/people/", status=status),
    )
    mark = connector.mark()
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people")
        written = incremental(connector, [{"_id": "a", "name": "Ada"}])
    assert feed.status == 502 and written.status_code == 502
    # The error's text is shown, with the token masked in it.
    assert "(Authorization: Bearer <hidden>; query: limit=" in feed.json()["detail"]
    assert "(Authorization: Bearer <hidden>; query: )" in written.json()["failed"][0]["reason"]
    assert HOSTILE_TOKEN not in feed.body.decode() + written.text
    log = connector.wait_for_log('"POST /people?is_full=false HTTP/1.1" 502', after=mark)
    assert "Bearer <hidden>" in log
    assert HOSTILE_TOKEN not in connector.log_text()


def test_an_oauth2_token_quoted_back_is_masked(hostile, oauth_connector):
    hostile.seed("people", people())
    assert read_feed(oauth_connector.url, "people").status == 200
    token = header(entries(hostile, "GET")[-1], "Authorization")[0].removeprefix("Bearer ")
    hostile.set_rules(rule("echo_auth", method="GET", prefix="/people", status=400))
    mark = oauth_connector.mark()
    feed = read_feed(oauth_connector.url, "people")
    assert feed.status == 502
    assert "(Authorization: Bearer <hidden>;" in feed.json()["detail"]
    assert token not in feed.body.decode()
    oauth_connector.wait_for_log('"GET /people HTTP/1.1" 502', after=mark)
    log = oauth_connector.log_text()
    assert token not in log and HOSTILE_CLIENT_SECRET not in log


def test_a_token_ending_in_a_newline_stops_start_up_naming_the_setting(hostile, tmp_path: Path):
    """Before issue 18 it was accepted; then every request failed with a 500 whose
    traceback logged the token."""
    token = HOSTILE_TOKEN + "\n"  # as copied from a file
    env = connector_environment(
        hostile.url,
        free_port(),
        tmp_path / "state",
        **{**HOSTILE_SETTINGS, "UPSTREAM_TOKEN": token},
    )
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-c", "service/gunicorn.conf.py", REFERENCE_APP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    output = (result.stdout + result.stderr).strip()
    assert output.splitlines() == [
        f"configuration error: UPSTREAM_TOKEN holds a line break at character {len(token)} "
        f"of {len(token)}: remove it (a value copied from a file often ends in a line break)"
    ]
    assert HOSTILE_TOKEN not in output
    assert hostile.log() == []  # nothing was asked with it
