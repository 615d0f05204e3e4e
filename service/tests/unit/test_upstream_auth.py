"""The upstream auth objects: what they send, and that no secret shows anywhere.

The upstream is a fake transport mounted on the client's session (no sockets); OAuth2's
token endpoint is a tiny real server on loopback, since the auth object calls it itself.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import pytest
import requests
from requests.adapters import BaseAdapter

from service.framework import masking
from service.framework.deadlines import Deadline
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError
from service.framework.upstream_auth import ApiKey
from service.framework.upstream_auth import Basic
from service.framework.upstream_auth import BearerToken
from service.framework.upstream_auth import OAuth2ClientCredentials
from service.tests.unit.keepalive_upstream import KeepAliveUpstream
from service.tests.unit.keepalive_upstream import keepalive_upstream

SECRET = "s3cr3t-value-that-must-not-show"
BASE = "http://records.example"


class FakeTransport(BaseAdapter):
    """Answers each request with ``answer(request) -> (status, headers, body)``."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], tuple]) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request.copy())  # as sent: hooks may change it later
        status, headers, body = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = json.dumps(body).encode()
        response._content_consumed = True  # its body is all here, as requests marks it
        response.url = request.url
        response.request = request
        response.connection = self
        return response

    def close(self):
        pass


def client_with(auth, answer=lambda request: (200, {}, {"data": []}), base=BASE):
    client = UpstreamClient(base, auth=auth)
    transport = FakeTransport(answer)
    client.session.mount("http://", transport)
    client.session.mount("https://", transport)
    return client, transport


# --- the client's choice of scheme -------------------------------------------------------------


def test_a_bare_token_still_means_bearer():
    client = UpstreamClient(BASE, "the-token")
    transport = FakeTransport(lambda request: (200, {}, {}))
    client.session.mount("http://", transport)
    client.get_json(client.url("people"))
    assert transport.sent[0].headers["Authorization"] == "Bearer the-token"
    assert isinstance(client.session.auth, BearerToken)


@pytest.mark.parametrize("arguments", [{}, {"token": "t", "auth": BearerToken("t")}])
def test_the_client_takes_a_token_or_an_auth_object_not_both_nor_neither(arguments):
    with pytest.raises(TypeError, match="one of them"):
        UpstreamClient(BASE, **arguments)


def test_from_settings_passes_an_auth_object_on():
    from service.framework.settings import load_settings
    from service.tools.reference import ReferenceSettings

    settings = load_settings(
        ReferenceSettings, {"UPSTREAM_URL": BASE, "UPSTREAM_TOKEN": "test-token"}
    )
    client = UpstreamClient.from_settings(settings, BASE, auth=ApiKey(SECRET, header="X-Api-Key"))
    assert isinstance(client.session.auth, ApiKey)
    assert isinstance(
        UpstreamClient.from_settings(settings, BASE, "test-token").session.auth, BearerToken
    )


# --- API keys and basic auth -------------------------------------------------------------------


def test_an_api_key_in_a_header_replaces_the_bearer_header():
    client, transport = client_with(ApiKey(SECRET, header="X-Api-Key"))
    client.get_json(client.url("people"))
    assert transport.sent[0].headers["X-Api-Key"] == SECRET
    assert "Authorization" not in transport.sent[0].headers


def test_an_api_key_in_the_query_is_sent_but_not_shown_in_errors():
    client, transport = client_with(
        ApiKey(SECRET, query="api_key"), lambda request: (404, {}, {"error": "no such thing"})
    )
    with pytest.raises(UpstreamError) as raised:
        client.get_json(client.url("people"), {"limit": 5})
    assert f"api_key={SECRET}" in transport.sent[0].url
    assert SECRET not in str(raised.value) and SECRET not in raised.value.url
    assert "limit=5" in str(raised.value) and "api_key=<hidden>" in str(raised.value)


def test_an_api_key_header_is_not_sent_on_to_another_origin():
    """The client follows no redirect to another origin at all: the key, and the request,
    stay with the configured one, and the run fails naming where it was sent."""

    def answer(request):
        if request.url.startswith(BASE):
            return 302, {"Location": "http://elsewhere.example/people"}, {}
        return 200, {}, {"data": []}

    client, transport = client_with(ApiKey(SECRET, header="X-Api-Key"), answer)
    with pytest.raises(UpstreamError, match="another origin \\(http://elsewhere.example:80\\)"):
        client.get_json(client.url("people"))
    assert [request.url for request in transport.sent] == [f"{BASE}/people"]
    assert transport.sent[0].headers["X-Api-Key"] == SECRET


def test_an_api_key_header_follows_a_redirect_on_the_same_origin():
    def answer(request):
        if request.url.endswith("/old"):
            return 301, {"Location": "/people"}, {}
        return 200, {}, {"data": []}

    client, transport = client_with(ApiKey(SECRET, header="X-Api-Key"), answer)
    client.get_json(client.url("old"))
    assert transport.sent[1].headers["X-Api-Key"] == SECRET


def test_api_key_wants_exactly_one_place():
    with pytest.raises(TypeError):
        ApiKey(SECRET)
    with pytest.raises(TypeError):
        ApiKey(SECRET, header="X-Api-Key", query="key")


def test_basic_auth_sends_the_credentials():
    client, transport = client_with(Basic("someone", SECRET))
    client.get_json(client.url("people"))
    expected = base64.b64encode(f"someone:{SECRET}".encode()).decode()
    assert transport.sent[0].headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    "auth",
    [
        BearerToken(SECRET),
        ApiKey(SECRET, header="X-Api-Key"),
        ApiKey(SECRET, query="key"),
        Basic("someone", SECRET),
        OAuth2ClientCredentials("http://auth.example/token", "the-client", SECRET),
    ],
)
def test_no_repr_shows_a_secret(auth):
    assert SECRET not in repr(auth)
    assert SECRET not in repr(UpstreamClient(BASE, auth=auth).session.auth)


@pytest.mark.parametrize(
    ("auth", "shown"),
    [
        (lambda: BearerToken(SECRET), "BearerToken(token=<hidden>)"),
        (lambda: ApiKey(SECRET, header="X-Api-Key"), "ApiKey(key=<hidden>, header='X-Api-Key')"),
        (lambda: ApiKey(SECRET, query="key"), "ApiKey(key=<hidden>, query='key')"),
        (lambda: Basic("someone", SECRET), "Basic(username='someone', password=<hidden>)"),
    ],
)
def test_a_repr_says_what_the_auth_is_and_where_its_secret_goes(auth, shown):
    assert repr(auth()) == shown


@pytest.mark.parametrize(
    "make",
    [
        lambda value: BearerToken(value),
        lambda value: ApiKey(value, header="X-Api-Key"),
        lambda value: ApiKey(value, query="key"),
        lambda value: Basic("someone", value),
        lambda value: OAuth2ClientCredentials("http://auth.example/token", "the-client", value),
    ],
)
def test_a_secret_given_to_an_auth_object_in_code_is_masked(make):
    """A fork may build its auth from a value no setting declared secret (read from a file,
    made from two settings): the auth object hides it all the same."""
    value = "made-in-code-7f3a"
    make(value)
    assert masking.mask(f"the gateway quoted back {value}") == "the gateway quoted back <hidden>"


def test_the_basic_header_of_an_oauth_client_is_masked_whole():
    OAuth2ClientCredentials("http://auth.example/token", "the client", "made-in-code-7f3a")
    sent = base64.b64encode(b"the+client:made-in-code-7f3a").decode()  # form-encoded first
    assert masking.mask(f"Authorization: Basic {sent}") == "Authorization: Basic <hidden>"


def fork_session(auth, answer):
    """A fork's own requests session with a framework auth object: requests follows the
    redirects itself, without the UpstreamClient's rules."""
    session = requests.Session()
    session.auth = auth
    transport = FakeTransport(answer)
    session.mount("http://", transport)
    return session, transport


def test_an_api_key_header_is_dropped_on_a_redirect_to_another_origin_in_any_session():
    def answer(request):
        if request.url.startswith(BASE):
            return 302, {"Location": "http://elsewhere.example/people"}, {}
        return 200, {}, {"data": []}

    session, transport = fork_session(ApiKey(SECRET, header="X-Api-Key"), answer)
    session.get(f"{BASE}/people")
    assert transport.sent[0].headers["X-Api-Key"] == SECRET
    assert transport.sent[1].url == "http://elsewhere.example/people"
    assert "X-Api-Key" not in transport.sent[1].headers


def test_an_api_key_header_follows_a_redirect_on_the_same_origin_in_any_session():
    def answer(request):
        if request.url.endswith("/old"):
            return 301, {"Location": "/people"}, {}
        return 200, {}, {"data": []}

    session, transport = fork_session(ApiKey(SECRET, header="X-Api-Key"), answer)
    session.get(f"{BASE}/old")
    assert transport.sent[1].url == f"{BASE}/people"
    assert transport.sent[1].headers["X-Api-Key"] == SECRET


def test_an_api_key_in_the_query_is_masked_in_the_answers_url_in_any_session():
    session, transport = fork_session(ApiKey(SECRET, query="api_key"), lambda r: (200, {}, {}))
    response = session.get(f"{BASE}/people", params={"limit": 5})
    assert f"api_key={SECRET}" in transport.sent[0].url
    assert "limit=5" in response.url and "api_key=<hidden>" in response.url


# --- OAuth2 client credentials -----------------------------------------------------------------


class TokenServer:
    """A token endpoint on loopback: ``tok-1``, ``tok-2``, ... to the right client."""

    def __init__(self) -> None:
        self.fetches: list[dict[str, str]] = []
        self.accepts: list[str | None] = []  # each fetch's Accept header
        self.expires_in: int | str | None = 3600
        self.status = 200
        self.raw: bytes | None = None  # a 200 answer as it is, instead of a token
        self.headers: dict[str, str] = {}  # more headers of every answer
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                length = int(self.headers.get("Content-Length", 0))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.update(basic_user=user, basic_password=password)
                server.fetches.append(form)
                server.accepts.append(self.headers.get("Accept"))
                if server.raw is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(server.raw)))
                    self.end_headers()
                    self.wfile.write(server.raw)
                    return
                given = (form.get("basic_user") or form.get("client_id"),) + (
                    form.get("basic_password") or form.get("client_secret"),
                )
                if server.status != 200 or given != ("the-client", SECRET):
                    answer, status = {"error": "invalid_client"}, server.status
                    if status == 200:
                        status = 401
                else:
                    answer = {"access_token": f"tok-{len(server.fetches)}", "token_type": "Bearer"}
                    if server.expires_in is not None:
                        answer["expires_in"] = server.expires_in
                    status = 200
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_server():
    server = TokenServer()
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accepting(*tokens):
    """An upstream that takes only ``tokens``, given as a live set the test may change."""

    def answer(request):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return (200, {}, {"data": []}) if given in tokens else (401, {}, {"error": "bad token"})

    return answer


def test_the_token_is_fetched_once_and_cached(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    client, transport = client_with(auth, accepting("tok-1"))
    for _ in range(3):
        client.get_json(client.url("people"))
    assert len(token_server.fetches) == 1
    assert token_server.fetches[0]["grant_type"] == "client_credentials"
    assert token_server.accepts == ["application/json"]
    assert {request.headers["Authorization"] for request in transport.sent} == {"Bearer tok-1"}


def test_a_token_endpoint_that_redirects_is_not_followed(token_server):
    """The client's secret goes to the configured token URL only."""
    elsewhere = TokenServer()
    try:
        token_server.status = 307
        token_server.headers = {"Location": elsewhere.url}
        auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
        with pytest.raises(UpstreamError, match="307"):
            auth.token()
        assert elsewhere.fetches == []
    finally:
        elsewhere.close()


def test_the_token_is_refreshed_before_it_expires(token_server):
    clock = Clock()
    token_server.expires_in = 300
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, refresh_margin=60, clock=clock
    )
    assert auth.token() == "tok-1"
    clock.now += 239
    assert auth.token() == "tok-1"
    clock.now += 1  # 60 s before it expires
    assert auth.token() == "tok-2"


def test_a_401_fetches_a_new_token_and_sends_the_request_once_more(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    client, transport = client_with(auth, accepting("tok-2"))  # tok-1 was revoked
    assert client.get_json(client.url("people")) == {"data": []}
    assert [request.headers["Authorization"] for request in transport.sent] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert len(token_server.fetches) == 2


def test_a_resent_requests_answer_keeps_the_401_in_its_history(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    client, _ = client_with(auth, accepting("tok-2"))  # tok-1 was revoked
    response = client.request("GET", client.url("people"))
    assert response.status_code == 200
    assert [earlier.status_code for earlier in response.history] == [401]


def test_a_second_401_is_the_answer_not_a_loop(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    client, transport = client_with(auth, accepting())
    with pytest.raises(UpstreamError) as raised:
        client.get_json(client.url("people"))
    assert raised.value.status == 401
    assert len(transport.sent) == 2 and len(token_server.fetches) == 2


def test_a_late_401_does_not_throw_away_a_token_another_thread_fetched(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    assert auth.token() == "tok-1"
    auth.forget("tok-1")
    assert auth.token() == "tok-2"
    auth.forget("tok-1")  # a second thread's 401, for the token already replaced
    assert auth.token() == "tok-2"
    assert len(token_server.fetches) == 2


def test_the_secret_can_go_in_the_form(token_server):
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, secret_in="body", scope="read", extra={"a": "b"}
    )
    assert auth.token() == "tok-1"
    form = token_server.fetches[0]
    assert form["client_id"] == "the-client" and form["client_secret"] == SECRET
    assert form["scope"] == "read" and form["a"] == "b" and "basic_user" not in form


def test_without_expires_in_the_token_is_kept_until_a_401(token_server, caplog):
    clock = Clock()
    token_server.expires_in = None
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    with caplog.at_level(logging.INFO, logger="service.framework.upstream_auth"):
        assert auth.token() == "tok-1"
    assert "fetched an upstream access token, lifetime not given" in caplog.text
    clock.now += 86400
    assert auth.token() == "tok-1"


def test_a_fetched_token_is_masked_among_the_recent_ones_not_for_good(token_server):
    """Tokens come and go for as long as the connector runs: only the last few are kept."""
    OAuth2ClientCredentials(token_server.url, "the-client", SECRET).token()
    lasting, recent = masking.registered()
    assert "tok-1" in recent and "tok-1" not in lasting


def test_a_token_that_lives_one_second_is_fetched_again_after_half_of_it(token_server):
    clock = Clock()
    token_server.expires_in = 1
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    assert auth.token() == "tok-1"
    clock.now += 0.5
    assert auth.token() == "tok-2"


def test_a_refused_client_is_an_upstream_error_that_names_the_endpoint_only(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", "wrong-" + SECRET)
    client, _ = client_with(auth)
    with pytest.raises(UpstreamError) as raised:
        client.get_json(client.url("people"))
    message = str(raised.value)
    assert "token endpoint answered 401" in message and "invalid_client" in message
    assert token_server.url in message and SECRET not in message


def test_an_unreachable_token_endpoint_is_an_upstream_error(token_server):
    url = token_server.url
    token_server.close()
    auth = OAuth2ClientCredentials(url, "the-client", SECRET, timeout=(2, 2))
    with pytest.raises(UpstreamError, match="unreachable") as raised:
        auth.token()
    assert raised.value.__cause__ is None and SECRET not in str(raised.value)


def test_no_secret_or_token_reaches_a_log_line(token_server, caplog):
    caplog.set_level(logging.DEBUG)
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    client, _ = client_with(auth, accepting("tok-2"))
    client.get_json(client.url("people"))
    bad = OAuth2ClientCredentials(token_server.url, "the-client", "wrong-" + SECRET)
    with pytest.raises(UpstreamError):
        UpstreamClient(BASE, auth=bad).get_json(f"{BASE}/people")
    assert "fetched an upstream access token" in caplog.text
    for secret in (SECRET, "tok-1", "tok-2"):
        assert secret not in caplog.text


# --- promises a fork relies on (issue 20) -----------------------------------------------------


@pytest.mark.parametrize(
    ("location", "followed"),
    [
        ("http://records.example:8080/people", False),  # the same host, another port
        ("https://records.example/people", False),  # the same host, another scheme
        ("http://records.example:80/people", True),  # the default port, spelled out
        ("HTTP://Records.Example/people", True),  # scheme and host are not case-sensitive
    ],
)
def test_an_api_key_goes_only_where_the_origin_is_the_same(location, followed):
    def answer(request):
        if request.url.endswith("/old"):
            return 302, {"Location": location}, {}
        return 200, {}, {"data": []}

    client, transport = client_with(ApiKey(SECRET, header="X-Api-Key"), answer)
    if followed:
        assert client.get_json(client.url("old")) == {"data": []}
        assert transport.sent[1].headers["X-Api-Key"] == SECRET
    else:
        with pytest.raises(UpstreamError, match="another origin"):
            client.get_json(client.url("old"))
        assert len(transport.sent) == 1


def test_an_api_key_follows_an_https_redirect_that_spells_out_port_443():
    def answer(request):
        if request.url.endswith("/old"):
            return 302, {"Location": "https://records.example:443/people"}, {}
        return 200, {}, {"data": []}

    client, transport = client_with(
        ApiKey(SECRET, header="X-Api-Key"), answer, base="https://records.example"
    )
    assert client.get_json(client.url("old")) == {"data": []}
    assert transport.sent[1].headers["X-Api-Key"] == SECRET


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b'{"access_token": "tok-x", "token_type": "mac"}', "holds no bearer access_token"),
        (b'{"token_type": "Bearer"}', "holds no bearer access_token"),
        (b'{"access_token": "", "token_type": "Bearer"}', "holds no bearer access_token"),
        (b'{"access_token": 7, "token_type": "Bearer"}', "holds no bearer access_token"),
        (b'["tok-x"]', "holds no bearer access_token"),
        (b"<html>a login page</html>", "holds no bearer access_token"),
        (b'{"access_token": "tok x", "token_type": "Bearer"}', "characters a token cannot"),
    ],
)
def test_a_token_answer_that_is_not_a_bearer_token_is_an_upstream_error(token_server, answer, says):
    token_server.raw = answer
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError, match=says) as raised:
        auth.token()
    assert token_server.url in str(raised.value)
    assert raised.value.status == 200


def test_a_token_answer_of_64_kib_is_read_and_a_longer_one_is_refused(token_server):
    """A token endpoint answers a few hundred bytes: more than 64 KiB is not a token answer
    (a gateway's page, an endless body), and is refused unread, not cut to a token."""
    answer = b'{"access_token": "tok-x", "token_type": "Bearer"}'
    token_server.raw = answer + b" " * (65536 - len(answer))
    assert OAuth2ClientCredentials(token_server.url, "the-client", SECRET).token() == "tok-x"
    token_server.raw += b" "
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError, match="larger than the token answer's limit"):
        auth.token()


def test_a_token_type_in_any_case_and_no_token_type_both_mean_bearer(token_server):
    for answer in (
        b'{"access_token": "tok-a", "token_type": "bEaReR"}',
        b'{"access_token": "tok-b"}',
    ):
        token_server.raw = answer
        auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
        assert auth.token() in ("tok-a", "tok-b")


def test_an_expires_in_given_as_text_is_a_lifetime(token_server):
    clock = Clock()
    token_server.expires_in = "300"
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    assert auth.token() == "tok-1"
    clock.now += 240  # the default margin: 60 s before it expires
    assert auth.token() == "tok-2"


@pytest.mark.parametrize("lifetime", [0, -5, "soon", True, None])
def test_a_lifetime_that_is_not_one_keeps_the_token_until_a_401(token_server, lifetime):
    clock = Clock()
    token_server.expires_in = lifetime
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    assert auth.token() == "tok-1"
    clock.now += 86400
    assert auth.token() == "tok-1"


def test_by_default_a_token_is_fetched_again_a_minute_before_it_expires(token_server):
    clock = Clock()
    token_server.expires_in = 3600
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    assert auth.token() == "tok-1"
    clock.now += 3539
    assert auth.token() == "tok-1"
    clock.now += 1
    assert auth.token() == "tok-2"


def test_a_short_lived_token_is_refreshed_at_half_its_life_not_before_it_is_fetched(
    token_server,
):
    """A margin longer than half the lifetime would fetch a new token on every request."""
    clock = Clock()
    token_server.expires_in = 100
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, clock=clock)
    assert auth.token() == "tok-1"
    clock.now += 49
    assert auth.token() == "tok-1"
    clock.now += 1
    assert auth.token() == "tok-2"


def test_the_token_errors_name_the_oauth_code_never_its_free_text(token_server):
    token_server.status = 400
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value) == (
        f"the token endpoint answered 400 to POST {token_server.url}: invalid_client"
    )


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (
            {"error": "invalid_client", "error_description": f"no client with {SECRET}"},
            ": invalid_client",
        ),
        ({"error": f"bad {SECRET}"}, ""),  # not a code: free text, which may echo
        ({"error": "x" * 65}, ""),
        ({"error": ["invalid_client"]}, ""),
        (["invalid_client"], ""),
    ],
)
def test_a_token_error_shows_only_a_code_of_rfc_6749s_form(body, shown):
    from service.framework.upstream_auth import _oauth_error

    response = requests.Response()
    response._content = json.dumps(body).encode()
    assert _oauth_error(response) == shown


def test_a_token_error_that_is_not_json_shows_no_code():
    from service.framework.upstream_auth import _oauth_error

    response = requests.Response()
    response._content = b"<html>denied</html>"
    assert _oauth_error(response) == ""


def test_the_secret_goes_in_the_header_or_the_body_nowhere_else():
    with pytest.raises(ValueError, match='secret_in must be "header" or "body"'):
        OAuth2ClientCredentials("http://auth.example/token", "c", SECRET, secret_in="query")


def test_forget_without_a_token_drops_the_cached_one(token_server):
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    assert auth.token() == "tok-1"
    auth.forget()
    assert auth.token() == "tok-2"


def test_the_token_request_takes_no_credentials_from_the_environment(
    token_server, tmp_path, monkeypatch
):
    """A ~/.netrc entry for the token endpoint's host must not replace the client's own
    credentials (requests reads it when the session trusts the environment)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, secret_in="body")
    assert auth.token() == "tok-1"
    assert "basic_user" not in token_server.fetches[0]


def test_by_default_a_busy_token_endpoint_is_asked_four_times(token_server):
    token_server.status = 503
    token_server.headers = {"Retry-After": "0"}
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError, match=r"answered 503 .* \(asked 4 times\)"):
        auth.token()
    assert len(token_server.fetches) == 4


def test_without_retry_after_a_busy_token_endpoint_is_asked_again_after_half_a_second(
    token_server,
):
    """The backoff's first step is 0.5 s: within a 0.5 s bound it would pass it, so the
    fetch fails at once and says so."""
    token_server.status = 503
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, timeout=(0.2, 0.3))
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith(
        "(asking again in 0.5s would pass the token request's timeout (0.5s))"
    )
    assert len(token_server.fetches) == 1


def test_a_retry_after_that_is_no_number_nor_date_means_the_backoff(token_server):
    token_server.status = 503
    token_server.headers = {"Retry-After": "soon"}
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, timeout=(0.2, 0.3))
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith(
        "(asking again in 0.5s would pass the token request's timeout (0.5s))"
    )


def http_date(seconds_from_now: float, zone: str = "GMT") -> str:
    return time.strftime(
        f"%a, %d %b %Y %H:%M:%S {zone}", time.gmtime(time.time() + seconds_from_now)
    )


def test_a_retry_after_given_as_a_date_is_waited_until_then(token_server):
    token_server.status = 503
    token_server.headers = {"Retry-After": http_date(3600)}
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert re.search(r"asking again in 3[56]\d\d(\.\d+)?s would pass", str(raised.value))


def test_a_retry_after_date_in_the_past_asks_again_at_once(token_server):
    token_server.status = 503
    token_server.headers = {"Retry-After": http_date(-3600)}
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, timeout=(0.4, 0.5), retries=1
    )
    with pytest.raises(UpstreamError, match=r"\(asked 2 times\)"):
        auth.token()


def test_a_retry_after_date_without_a_zone_means_the_backoff(token_server):
    """RFC 5322's -0000: a time whose zone is unknown says nothing about when."""
    token_server.status = 503
    token_server.headers = {"Retry-After": http_date(3600, "-0000")}
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, timeout=(0.2, 0.3))
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith(
        "(asking again in 0.5s would pass the token request's timeout (0.5s))"
    )


def test_basic_auth_takes_a_username_beyond_latin_1():
    Basic("名前", "made-in-code-7f3a")
    assert masking.mask("made-in-code-7f3a") == "<hidden>"


def test_a_retry_after_of_zero_asks_again_at_once(token_server):
    token_server.status = 503
    token_server.headers = {"Retry-After": "0"}
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, timeout=(0.4, 0.5), retries=1
    )
    with pytest.raises(UpstreamError, match=r"answered 503 .* \(asked 2 times\)"):
        auth.token()
    assert len(token_server.fetches) == 2


def test_the_last_ask_for_a_token_is_the_answer_without_a_wait_after_it(token_server):
    """Asked as often as allowed: the failure says so, and waits for nothing more (the
    next wait, 1 s, would pass the 1.5 s bound, and would say so instead)."""
    token_server.status = 503
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, timeout=(0.5, 1.0), retries=1
    )
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith("(asked 2 times)")


def test_the_backoff_for_a_token_doubles(token_server):
    """0.5 s, then 1 s: within a 1.5 s bound the second wait would pass it."""
    token_server.status = 503
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET, timeout=(0.5, 1.0))
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith(
        "(asking again in 1s would pass the token request's timeout (1.5s))"
    )
    assert len(token_server.fetches) == 2


def test_a_token_endpoint_that_trickles_its_answer_is_cut_at_the_token_requests_bound():
    """A byte every 0.1 s never trips the read timeout; the bound of the whole request
    (its two timeouts added) ends it, and no token comes of it."""
    answer = b'{"access_token": "tok-slow", "token_type": "Bearer"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            sock.recv(65536)
            sock.sendall(head)
            for byte in answer:
                if done.is_set():
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return  # the client closed it: what the test waits for
                done.wait(0.1)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/token"
    auth = OAuth2ClientCredentials(url, "the-client", SECRET, timeout=(0.5, 1.0))
    try:
        with pytest.raises(UpstreamError, match="the token endpoint is unreachable"):
            auth.token()
    finally:
        done.set()
        listener.close()


def test_by_default_a_wait_past_40_seconds_for_a_token_fails_at_once(token_server):
    """The token request's bound is its timeouts added: 10 s to connect, 30 s to read."""
    token_server.status = 429
    token_server.headers = {"Retry-After": "41"}
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    with pytest.raises(UpstreamError) as raised:
        auth.token()
    assert str(raised.value).endswith(
        "(asking again in 41s would pass the token request's timeout (40s))"
    )
    assert len(token_server.fetches) == 1


def test_a_forks_star_import_gets_every_auth_block() -> None:
    """``from service.framework.upstream_auth import *`` works and brings every auth block."""
    namespace: dict[str, object] = {}
    exec("from service.framework.upstream_auth import *", namespace)
    assert {"ApiKey", "Basic", "BearerToken", "OAuth2ClientCredentials"} <= namespace.keys()


def test_the_backoff_of_a_busy_token_endpoint_doubles_from_half_a_second_to_8(
    token_server, monkeypatch
):
    """Without a Retry-After the waits are 0.5, 1, 2, 4 and then 8 s each (not waited
    here: each is recorded where the deadline would sleep it)."""
    token_server.status = 503
    waits: list[float] = []
    monkeypatch.setattr(Deadline, "sleep", lambda self, seconds: waits.append(seconds))
    auth = OAuth2ClientCredentials(
        token_server.url, "the-client", SECRET, retries=6, timeout=(10, 50)
    )
    with pytest.raises(UpstreamError, match=r"answered 503 .* \(asked 7 times\)"):
        auth.token()
    assert waits == [0.5, 1, 2, 4, 8, 8]


def test_the_resent_request_keeps_the_forks_own_hooks_but_not_the_resend(token_server):
    """The answer's request is the one sent the second time. A fork that sends it again
    (a retry of its own) has its own hooks called, and a 401 to it is the answer: no
    third token is fetched."""
    auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
    live = {"tok-2"}  # tok-1 was revoked
    session, _ = fork_session(
        auth,
        lambda request: (
            (200, {}, {"data": []})
            if request.headers["Authorization"].removeprefix("Bearer ") in live
            else (401, {}, {"error": "bad token"})
        ),
    )
    seen: list[int] = []

    def forks_hook(response, **kwargs):
        seen.append(response.status_code)
        return response

    first = session.get(f"{BASE}/people", hooks={"response": [forks_hook]})
    assert first.status_code == 200
    live.clear()
    seen.clear()
    again = session.send(first.request)
    assert again.status_code == 401
    assert seen == [401]
    assert len(token_server.fetches) == 2


def test_the_401s_connection_is_closed_before_the_request_goes_again(token_server):
    """The 401's body is not read (the answer is the resent request's): its connection is
    closed at once, not held open for as long as the answer keeps it in its history."""
    closed_first: list[bool] = []

    def answer(upstream: KeepAliveUpstream, request: http.server.BaseHTTPRequestHandler):
        if request.headers.get("Authorization") == "Bearer tok-2":
            closed_first.append(upstream.ended.wait(10))
            return 200, {}, b'{"data": []}'
        return 401, {}, b'{"error": "invalid_token"}' + b" " * 20000

    with keepalive_upstream(answer) as upstream:
        auth = OAuth2ClientCredentials(token_server.url, "the-client", SECRET)
        reader = UpstreamClient(upstream.url, auth=auth)
        assert reader.get_json(f"{upstream.url}/people") == {"data": []}
        assert closed_first == [True]
