"""Pre-encoded pages for the benchmarks (``--pre-encoded PAGE_SIZE``): the synthetic
collections' list pages encoded once at start and served from memory."""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import flask

from service.tools.demo_upstream.app import UpstreamState
from service.tools.demo_upstream.app import _fresh_stats


class PreEncodedPages:
    """WSGI middleware: every list page of the synthetic collections at one page size,
    encoded once at start and then served from memory as bytes.

    Why: computing and encoding a page in Python makes this server the slow part of a
    feed benchmark, so every connector looks close to the limit. With ``--pre-encoded``
    a page costs the server next to nothing and a benchmark measures its client. The
    bytes are the computed pages' own (built through the app), so nothing else changes;
    a request for anything else (another page size, ``updated_since``, a write, a wrong
    token) or while a fault or latency is set goes to the app as usual. Memory: the
    whole encoded collection (about 320 bytes a record).
    """

    def __init__(self, app: flask.Flask, page_size: int) -> None:
        self.state: UpstreamState = app.extensions["demo_upstream"]
        self.wsgi_app = app.wsgi_app
        self.limit = str(page_size)
        self.pages: dict[tuple[str, str | None], bytes] = {}
        client = app.test_client()
        headers = {"Authorization": f"Bearer {self.state.token}"}
        for name in self.state.synthetic:
            params = {"limit": self.limit}
            while True:
                response = client.get(f"/{name}", query_string=params, headers=headers)
                body = response.get_data()
                if response.status_code != 200:
                    raise RuntimeError(f"pre-encoding {name}: HTTP {response.status_code}")
                self.pages[(f"/{name}", params.get("cursor"))] = body
                tail = body[body.rindex(b'"next_cursor":') :]  # the envelope's last key
                cursor = json.loads(b"{" + tail)["next_cursor"]
                if cursor is None:
                    break
                params["cursor"] = cursor
        self.state.stats = _fresh_stats()  # building the pages is not traffic
        self.authorization = f"Bearer {self.state.token}".encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.page(environ)
        if body is None:
            return self.wsgi_app(environ, start_response)
        with self.state.lock:
            self.state.stats["GET"] += 1
            self.state.stats["list_pages"] += 1
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def page(self, environ: dict[str, Any]) -> bytes | None:
        """The stored page this request asks for, or None to let the app answer."""
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        cursor = query.pop("cursor", [None])
        if query != {"limit": [self.limit]} or len(cursor) != 1:
            return None
        body = self.pages.get((environ.get("PATH_INFO", ""), cursor[0]))
        if body is None or self.faults_set():
            return None
        given = environ.get("HTTP_AUTHORIZATION", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self.authorization):
            return None  # the app answers 401 with its own words
        return body

    def faults_set(self) -> bool:
        """A fault that touches list pages is armed: the app serves (and counts) them.
        ``change_after_pages`` counts every list page served, so it goes to the app too."""
        faults = self.state.faults
        return any(
            faults.get(name)
            for name in ("latency_ms", "storm", "fail_after_pages", "change_after_pages")
        )
