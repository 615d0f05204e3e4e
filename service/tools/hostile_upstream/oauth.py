"""Who may call the default API: the static bearer token, and the tokens that an OAuth2
client-credentials endpoint (``POST /oauth/token``) issues, so that the connector's OAuth
block can be caught sending a token, or fetching a fresh one, where it must not."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import unquote_plus

from service.tools.hostile_upstream.wire import Reply
from service.tools.hostile_upstream.wire import Request
from service.tools.hostile_upstream.wire import error_reply
from service.tools.hostile_upstream.wire import json_reply

DEFAULT_EXPIRES_IN = 3600


@dataclass
class OAuth:
    """The client the token endpoint knows (none: every token request is refused), how long
    its tokens live, and the tokens it issued, with the monotonic time each expires."""

    client_id: str | None = None
    client_secret: str | None = None
    expires_in: float = DEFAULT_EXPIRES_IN
    issued: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "expires_in": self.expires_in,
            "issued": self.count,
            "live": sum(1 for expiry in self.issued.values() if expiry > now),
        }

    def configure(self, body: object) -> None:
        if not isinstance(body, dict) or not set(body) <= {
            "client_id",
            "client_secret",
            "expires_in",
        }:
            raise ValueError("the body must be an object of client_id, client_secret, expires_in")
        for name in ("client_id", "client_secret"):
            if name in body and not isinstance(body[name], str | None):
                raise ValueError(f"{name} must be a string or null")
        expires_in = body.get("expires_in", self.expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise ValueError("expires_in must be a number of seconds")
        self.client_id = body.get("client_id", self.client_id)
        self.client_secret = body.get("client_secret", self.client_secret)
        self.expires_in = expires_in

    def accepts(self, token: str) -> bool:
        expiry = self.issued.get(token)
        return expiry is not None and expiry > time.monotonic()

    def token_endpoint(self, request: Request) -> Reply:
        """RFC 6749 section 4.4: client credentials in HTTP basic auth or in the form."""
        if request.method != "POST":
            return error_reply(405, "POST a client-credentials grant", [("Allow", "POST")])
        form = {
            key: values[0]
            for key, values in parse_qs(request.body.decode("utf-8", "replace")).items()
        }
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            name, _, secret = pair.partition(":")
            client_id, client_secret = unquote_plus(name), unquote_plus(secret)
        if form.get("grant_type") != "client_credentials":
            return json_reply(400, {"error": "unsupported_grant_type"})
        if not self._known(client_id, client_secret):
            return json_reply(
                401, {"error": "invalid_client"}, [("WWW-Authenticate", 'Basic realm="oauth"')]
            )
        token = "hostile-" + secrets.token_urlsafe(24)
        self.issued[token] = time.monotonic() + self.expires_in
        self.count += 1
        return json_reply(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in},
            [("Cache-Control", "no-store")],
        )

    def _known(self, client_id: str | None, client_secret: str | None) -> bool:
        if self.client_id is None or self.client_secret is None:
            return False
        same_id = hmac.compare_digest((client_id or "").encode(), self.client_id.encode())
        same_secret = hmac.compare_digest(
            (client_secret or "").encode(), self.client_secret.encode()
        )
        return same_id and same_secret
