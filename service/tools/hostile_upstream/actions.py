"""The misbehaviours a rule can answer with, each written at the byte level on the raw
connection. Each ends with the connection closed (by the caller, unless the client went
first): a hostile answer never leaves a connection to be reused."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.tools.hostile_upstream.bodies import deep_list
from service.tools.hostile_upstream.bodies import huge_list
from service.tools.hostile_upstream.rules import Rule
from service.tools.hostile_upstream.wire import Headers
from service.tools.hostile_upstream.wire import Peer
from service.tools.hostile_upstream.wire import Reply
from service.tools.hostile_upstream.wire import Request
from service.tools.hostile_upstream.wire import chunk
from service.tools.hostile_upstream.wire import head

JSON = "application/json"


@dataclass
class Exchange:
    """One request that a rule answers: the connection, the request, the tool's base URLs
    by listener, and the answer the default API would give (for ``trickle``)."""

    peer: Peer
    request: Request
    urls: dict[str, str]
    default: Callable[[], Reply]


def perform(rule: Rule, exchange: Exchange) -> None:
    ACTIONS[rule.action](exchange, rule.params, rule.prepared)


def _headers(prepared: dict[str, Any], content_type: str | None) -> Headers:
    """The rule's headers, after a Content-Type unless the rule names its own."""
    given: Headers = prepared["headers"]
    content_type = prepared.get("type", content_type)
    if content_type is None or any(name.lower() == "content-type" for name, _ in given):
        return list(given)
    return [("Content-Type", content_type), *given]


def status(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    reply = Reply(params["status"], _headers(prepared, None), prepared.get("body", b""))
    x.peer.send_reply(reply, close=True)


def redirect(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    location = params["location"]
    if location is None:
        target = params["target"] or x.request.target
        location = target if params["relative"] else x.urls[params["to"]] + target
    headers = [("Location", location), *_headers(prepared, JSON)]
    body = json.dumps({"moved_to": location}).encode()
    x.peer.send_reply(Reply(params["status"], headers, body), close=True)


def echo_auth(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    """As gateways do that explain a refusal by quoting what they refused."""
    quoted = [
        f"{name}: {value}"
        for name in ("Authorization", "X-Api-Key")
        if (value := x.request.header(name)) is not None
    ]
    quoted.append(f"query: {x.request.query}")
    message = f"refused {x.request.method} {x.request.path} ({'; '.join(quoted)})"
    body = json.dumps({"error": message}).encode()
    x.peer.send_reply(Reply(params["status"], _headers(prepared, JSON), body), close=True)


def gzip_bomb(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    headers = [("Content-Encoding", "gzip"), *_headers(prepared, JSON)]
    x.peer.send_reply(Reply(params["status"], headers, prepared["body"]), close=True)


def huge(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    length, pieces = huge_list(params["size"], params["field"])
    headers = _headers(prepared, JSON)
    if params["chunked"]:
        x.peer.send(head(200, headers, length=None, close=True))
        for piece in pieces:
            x.peer.send(chunk(piece), body=len(piece))
        x.peer.send(chunk(b""))
    else:
        x.peer.send(head(200, headers, length=length, close=True))
        for piece in pieces:
            x.peer.send(piece, body=len(piece))


def deep(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    body = deep_list(params["depth"], params["container"])
    x.peer.send_reply(Reply(200, _headers(prepared, JSON), body), close=True)


def endless(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    """A chunked body that never ends: ``prefix``, then ``filler`` in chunks of about
    ``chunk`` bytes every ``interval`` seconds, until the client closes."""
    failing = params["status"] >= 300
    prefix = params["prefix"]
    if prefix is None:
        prefix = '{"error": "' if failing else '{"data": ['
    filler = (params["filler"] or ("." if failing else " ")).encode()
    block = filler * max(1, params["chunk"] // len(filler))
    x.peer.send(head(params["status"], _headers(prepared, JSON), length=None, close=True))
    if prefix:
        x.peer.send(chunk(prefix.encode()), body=len(prefix.encode()))
    while True:
        x.peer.send(chunk(block), body=len(block))
        x.peer.pause(params["interval"])


def trickle(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    """An answer one byte every ``interval`` seconds: the one given, or the default API's."""
    if params["status"] is None and "body" not in prepared:
        reply = x.default()
        reply.headers += prepared["headers"]
    else:
        reply = Reply(params["status"] or 200, _headers(prepared, None), prepared.get("body", b""))
    start = head(reply.status, reply.headers, length=len(reply.body), close=True)
    part = params["part"]
    for data, counted, slow in (
        (start, False, part in ("all", "head")),
        (reply.body, True, part in ("all", "body")),
    ):
        if not slow:
            x.peer.send(data, body=len(data) if counted else 0)
            continue
        for index in range(len(data)):
            x.peer.pause(params["interval"])
            x.peer.send(data[index : index + 1], body=1 if counted else 0)


def hang(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    x.peer.wait_until_gone()


def close(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    x.peer.close(reset=params["reset"])


def raw(x: Exchange, params: dict[str, Any], prepared: dict[str, Any]) -> None:
    x.peer.send(prepared["body"], body=len(prepared["body"]))


ACTIONS: dict[str, Callable[[Exchange, dict[str, Any], dict[str, Any]], None]] = {
    "status": status,
    "json": status,
    "redirect": redirect,
    "echo_auth": echo_auth,
    "gzip_bomb": gzip_bomb,
    "huge": huge,
    "deep": deep,
    "endless": endless,
    "trickle": trickle,
    "hang": hang,
    "close": close,
    "raw": raw,
}
