"""Rules: which request a misbehaviour answers, and each action's parameters, checked when
the rule is set so that a typo fails the test's set-up with a 400 instead of passing
silently. Defaults are filled in here; the actions (``actions``) read them as given."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from service.tools.hostile_upstream.bodies import gzip_bomb
from service.tools.hostile_upstream.wire import Request

GIB = 1 << 30
MIB = 1 << 20
LISTENERS = ("main", "other", "any")
MATCH_KEYS = {"listener", "method", "path", "prefix", "query"}
BODY_KEYS = ("json", "text", "base64")


class RuleError(ValueError):
    """A rule that cannot be set: 400 with this message."""


def _status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 999


def _count(low: int) -> Callable[[object], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _text(value: object) -> bool:
    return isinstance(value, str)


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _one_of(*choices: object) -> Callable[[object], bool]:
    return lambda value: value in choices


def _flag(value: object) -> bool:
    return isinstance(value, bool)


def _anything(value: object) -> bool:
    return True


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


# Each action's parameters: name -> (check, what a wrong value is told, default).
Param = tuple[Callable[[object], bool], str, Any]
HEADERS: Param = (_anything, "an object or a list of [name, value]", [])
BODY: dict[str, Param] = {
    "json": (_anything, "any JSON", None),
    "text": (_optional(_text), "a string", None),
    "base64": (_optional(_text), "base64 text", None),
}
ACTIONS: dict[str, dict[str, Param]] = {
    "status": {"status": (_status, "an HTTP status", 500), "headers": HEADERS, **BODY},
    "json": {"status": (_status, "an HTTP status", 200), "headers": HEADERS, **BODY},
    "redirect": {
        "status": (_one_of(301, 302, 303, 307, 308), "301, 302, 303, 307 or 308", 302),
        "to": (_one_of("other", "main"), '"other" or "main"', "other"),
        "target": (_optional(_nonempty), "a path with its query", None),
        "relative": (_flag, "true or false", False),
        "location": (_optional(_nonempty), "a Location header's text", None),
        "headers": HEADERS,
    },
    "echo_auth": {"status": (_status, "an HTTP status", 502), "headers": HEADERS},
    "gzip_bomb": {
        "size": (_count(1), "a number of bytes >= 1", GIB),
        "status": (_status, "an HTTP status", 200),
        "prefix": (_text, "a string", '{"data": ['),
        "filler": (_nonempty, "a non-empty string", " "),
        "headers": HEADERS,
    },
    "huge": {
        "size": (_optional(_count(1)), "a number of bytes >= 1", None),
        "field": (_optional(_count(1)), "a number of bytes >= 1", None),
        "chunked": (_flag, "true or false", False),
        "headers": HEADERS,
    },
    "deep": {
        "depth": (_count(1), "a number of levels >= 1", 10_000),
        "container": (_one_of("list", "object"), '"list" or "object"', "list"),
        "headers": HEADERS,
    },
    "endless": {
        "status": (_status, "an HTTP status", 200),
        "prefix": (_optional(_text), "a string", None),
        "filler": (_optional(_nonempty), "a non-empty string", None),
        "chunk": (_count(1), "a number of bytes >= 1", 64 * 1024),
        "interval": (_seconds, "a number of seconds >= 0", 0.01),
        "headers": HEADERS,
    },
    "trickle": {
        "interval": (_seconds, "a number of seconds >= 0", 1.0),
        "part": (_one_of("all", "head", "body"), '"all", "head" or "body"', "all"),
        "status": (_optional(_status), "an HTTP status", None),
        "headers": HEADERS,
        **BODY,
    },
    "hang": {},
    "close": {"reset": (_flag, "true or false", False)},
    "raw": {"base64": (_optional(_text), "base64 text", None), "text": BODY["text"]},
}


@dataclass(eq=False)
class Rule:
    """One rule as set, its parameters with their defaults, and how often it answered."""

    spec: dict[str, Any]
    action: str
    params: dict[str, Any]
    listener: str = "main"
    method: str | None = None
    path: str | None = None
    prefix: str | None = None
    query: str | None = None
    times: int | None = None
    used: int = 0
    prepared: dict[str, Any] = field(default_factory=dict)

    def answers(self, listener: str, request: Request) -> bool:
        """Whether this rule answers ``request`` (on ``listener``) now."""
        return (
            (self.times is None or self.used < self.times)
            and self.listener in (listener, "any")
            and (self.method is None or self.method == request.method)
            and (self.path is None or self.path == request.path)
            and (self.prefix is None or request.path.startswith(self.prefix))
            and (self.query is None or self.query in request.query)
        )

    def describe(self) -> dict[str, Any]:
        return {**self.spec, "used": self.used}


def parse_rules(body: object) -> list[Rule]:
    """A rule or a list of rules, as ``PUT``/``POST /_hostile/rules`` take them."""
    given = body if isinstance(body, list) else [body]
    rules = []
    for number, spec in enumerate(given):
        try:
            rules.append(parse_rule(spec))
        except RuleError as error:
            raise RuleError(f"rule {number}: {error}") from None
    return rules


def parse_rule(spec: object) -> Rule:
    if not isinstance(spec, dict):
        raise RuleError("a rule is an object with an action")
    action = spec.get("action")
    if action not in ACTIONS:
        raise RuleError(f"action must be one of {sorted(ACTIONS)}, not {action!r}")
    allowed = ACTIONS[action]
    unknown = set(spec) - {"action", "match", "times"} - set(allowed)
    if unknown:
        raise RuleError(f"{action} takes {sorted(allowed)}, not {sorted(unknown)}")
    params: dict[str, Any] = {}
    for name, (check, what, default) in allowed.items():
        value = spec.get(name, default)
        if not check(value):
            raise RuleError(f"{action}.{name} must be {what}")
        params[name] = value
    rule = Rule(dict(spec), action, params, **_match(spec.get("match", {})))
    times = spec.get("times")
    if times is not None and not _count(1)(times):
        raise RuleError("times must be an integer >= 1, or null (for ever)")
    rule.times = times
    rule.prepared = _prepare(action, params)
    return rule


def _match(match: object) -> dict[str, Any]:
    if not isinstance(match, dict) or not set(match) <= MATCH_KEYS:
        raise RuleError(f"match must be an object with keys from {sorted(MATCH_KEYS)}")
    listener = match.get("listener", "main")
    if listener not in LISTENERS:
        raise RuleError(f"match.listener must be one of {list(LISTENERS)}")
    for name in ("method", "path", "prefix", "query"):
        if not _optional(_text)(match.get(name)):
            raise RuleError(f"match.{name} must be a string")
    if match.get("path") is not None and match.get("prefix") is not None:
        raise RuleError("match takes a path (exact) or a prefix, not both")
    method = match.get("method")
    return {
        "listener": listener,
        "method": method.upper() if method else None,
        "path": match.get("path"),
        "prefix": match.get("prefix"),
        "query": match.get("query"),
    }


def _prepare(action: str, params: dict[str, Any]) -> dict[str, Any]:
    """What an action sends, worked out once: headers as pairs, the body's bytes."""
    prepared: dict[str, Any] = {"headers": _headers(params.get("headers", []))}
    given = [key for key in BODY_KEYS if params.get(key) is not None]
    if len(given) > 1:
        raise RuleError(f"give one body of {list(BODY_KEYS)}, not {given}")
    if action == "raw" and not given:
        raise RuleError("raw needs the bytes to send: base64 (or text)")
    if action == "json" and not given:
        raise RuleError("json needs the body to send: json (or text, base64)")
    if given:
        prepared["body"], prepared["type"] = _body(given[0], params[given[0]])
    if action == "huge" and params["size"] is None and params["field"] is None:
        params["size"] = 200 * MIB
    if action == "gzip_bomb":
        prefix, filler = params["prefix"].encode(), params["filler"].encode()
        prepared["body"] = gzip_bomb(params["size"], prefix, filler)
    return prepared


def _body(kind: str, value: Any) -> tuple[bytes, str]:
    if kind == "json":
        return json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json"
    if kind == "text":
        return value.encode("utf-8"), "text/plain; charset=utf-8"
    try:
        return base64.b64decode(value, validate=True), "application/octet-stream"
    except binascii.Error:
        raise RuleError("base64 is not valid base64") from None


def _headers(given: object) -> list[tuple[str, str]]:
    """Headers as pairs, in order, duplicates kept (two Content-Lengths are a test case)."""
    pairs = list(given.items()) if isinstance(given, dict) else given
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        for pair in pairs
    ):
        raise RuleError("headers must be an object or a list of [name, value]")
    for name, value in pairs:
        if not name or any(c in name + value for c in "\r\n") or ":" in name:
            raise RuleError(f"header {name!r} cannot go into a head (use raw for that)")
    return [(name, value) for name, value in pairs]
