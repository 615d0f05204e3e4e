"""Secrets out of every text the connector shows: registered once, masked everywhere, and
settings that could only leak them refused at start-up (issue 18)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sys
from urllib.parse import quote

import pytest

from service.framework import masking
from service.framework.errors import UpstreamContractError
from service.framework.settings import ConfigError
from service.framework.settings import Settings
from service.framework.settings import load_settings
from service.framework.settings import setting
from service.framework.settings import text
from service.framework.upstream_auth import Basic
from service.framework.upstream_errors import UpstreamError
from service.tools.reference import ReferenceSettings

TOKEN = "tok-9f8e7d6c5b4a"  # noqa: S105 -- a test value
SETTINGS = {"UPSTREAM_URL": "http://records.example", "UPSTREAM_TOKEN": TOKEN}


def test_a_secret_setting_is_masked_in_every_form_it_travels_in():
    load_settings(ReferenceSettings, SETTINGS)
    for form in (TOKEN, quote(TOKEN, safe=""), json.dumps(TOKEN)[1:-1]):
        assert masking.mask(f"Authorization: Bearer {form}!") == "Authorization: Bearer <hidden>!"


def test_a_secret_with_special_characters_is_masked_percent_encoded_and_json_escaped():
    secret = 'p@ss/w"rd&1'
    masking.register(secret)
    assert masking.mask(f"?key={quote(secret, safe='')}") == "?key=<hidden>"
    assert masking.mask(json.dumps({"echo": secret})) == '{"echo": "<hidden>"}'


def test_basic_auth_registers_what_it_sends_on_the_wire():
    Basic("user", "hunter2-password")
    sent = base64.b64encode(b"user:hunter2-password").decode()
    assert masking.mask(f"got Authorization: Basic {sent}") == "got Authorization: Basic <hidden>"


def test_a_longer_secret_that_holds_a_shorter_one_is_hidden_whole():
    masking.register("abcd")
    masking.register("xxabcdxx")
    assert masking.mask("[xxabcdxx]") == "[<hidden>]"


def test_fetched_tokens_are_kept_for_masking_only_while_recent():
    tokens = [f"fetched-token-{n:03d}" for n in range(masking.RECENT_TOKENS + 1)]
    for token in tokens:
        masking.register(token, transient=True)
    assert masking.mask(tokens[-1]) == "<hidden>"
    assert masking.mask(tokens[0]) == tokens[0]  # the oldest went out of the window


def test_an_upstream_error_masks_what_the_upstream_quoted_back():
    load_settings(ReferenceSettings, SETTINGS)
    error = UpstreamError(
        f"upstream answered 502 to GET http://x/people: saw Bearer {TOKEN}",
        url=f"http://x/people?key={TOKEN}",
    )
    assert TOKEN not in str(error) and TOKEN not in error.url
    assert "saw Bearer <hidden>" in str(error)


def test_a_contract_error_quoting_upstream_data_is_masked():
    masking.register(TOKEN)
    assert TOKEN not in str(UpstreamContractError(f"record {TOKEN!r} has no 'id'"))


def test_the_log_formatter_masks_messages_and_tracebacks():
    masking.register(TOKEN)
    handler = logging.Handler()
    handler.setFormatter(masking.MaskingFormatter(logging.Formatter("%(levelname)s %(message)s")))
    try:
        raise ValueError(f"Invalid header value b'Bearer {TOKEN}\\n'")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed: %s", (TOKEN,), None)
        record.exc_info = sys.exc_info()
    line = handler.format(record)
    assert TOKEN not in line
    assert "ERROR failed: <hidden>" in line and "Traceback" in line  # in the format it wraps


def test_nothing_registered_masks_nothing():
    masking.restore((frozenset(), ()))
    assert masking.mask("Bearer abcdef") == "Bearer abcdef"


# --- settings that could only leak a secret are refused at start-up --------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (f"{TOKEN}\n", "a line break at character 17 of 17"),
        (f"{TOKEN}\r\n", "a line break at character 17 of 18"),
        (f"tok\x00{TOKEN}", "the control character U+0000 at character 4"),
        (f"{TOKEN}\x7f", "the control character U+007F"),
    ],
)
def test_a_setting_with_a_control_character_is_refused_naming_it_never_its_value(value, what):
    with pytest.raises(ConfigError) as refused:
        load_settings(ReferenceSettings, {**SETTINGS, "UPSTREAM_TOKEN": value})
    message = str(refused.value)
    assert message.startswith(f"UPSTREAM_TOKEN holds {what}")
    assert TOKEN not in message


def test_a_url_with_a_line_break_is_refused_too():
    with pytest.raises(ConfigError, match="UPSTREAM_URL holds a line break"):
        load_settings(ReferenceSettings, {**SETTINGS, "UPSTREAM_URL": "http://records\n"})


def test_a_multiline_setting_takes_line_breaks_and_tabs_but_no_other_control():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WithKey(Settings):
        key: str = setting("PRIVATE_KEY", text, secret=True, multiline=True, meaning="A PEM key.")

    pem = "-----BEGIN KEY-----\n\tabcdef\r\n-----END KEY-----\n"
    assert load_settings(WithKey, {"PRIVATE_KEY": pem}).key == pem
    with pytest.raises(ConfigError, match=r"PRIVATE_KEY holds the control character U\+001B"):
        load_settings(WithKey, {"PRIVATE_KEY": pem + "\x1b"})


def test_a_secret_too_short_to_mask_is_refused():
    with pytest.raises(ConfigError, match="UPSTREAM_TOKEN is shorter than 4 characters"):
        load_settings(ReferenceSettings, {**SETTINGS, "UPSTREAM_TOKEN": "abc"})
    load_settings(ReferenceSettings, {**SETTINGS, "UPSTREAM_TOKEN": "abcd"})
    assert masking.mask("abcd") == "<hidden>"


# --- what the registry keeps, and for how long (issue 20) --------------------------------------


def test_a_secret_that_begins_another_is_not_left_half_shown():
    masking.register("abcd")
    masking.register("abcdefgh")
    assert masking.mask("[abcdefgh]") == "[<hidden>]"


def test_the_last_sixteen_fetched_tokens_are_masked_and_the_seventeenth_back_is_not():
    tokens = [f"fetched-token-{n:03d}" for n in range(17)]
    for token in tokens:
        masking.register(token, transient=True)
    assert masking.mask(tokens[0]) == tokens[0]
    assert all(masking.mask(token) == "<hidden>" for token in tokens[1:])


def test_a_token_fetched_twice_holds_one_place_among_the_recent():
    masking.register("first-token", transient=True)
    masking.register("again-token", transient=True)
    masking.register("again-token", transient=True)
    for n in range(14):
        masking.register(f"later-token-{n:02d}", transient=True)
    assert masking.mask("first-token") == "<hidden>"  # sixteen distinct tokens


def test_a_secret_setting_is_masked_however_many_tokens_are_fetched_after_it():
    load_settings(ReferenceSettings, SETTINGS)
    for n in range(40):
        masking.register(f"fetched-token-{n:03d}", transient=True)
    assert masking.mask(f"Bearer {TOKEN}") == "Bearer <hidden>"


def test_a_value_too_short_to_mask_is_masked_in_none_of_its_forms():
    """Three characters would hide ordinary text wherever they occur: not even their
    longer percent-encoded or JSON-escaped forms are masked."""
    masking.restore((frozenset(), ()))
    masking.register("a b")
    masking.register('"é', transient=True)
    text = 'q=a%20b&r=a+b "\\"\\u00e9" a b'
    assert masking.mask(text) == text


def test_restore_keeps_what_was_saved_and_forgets_what_came_after():
    masking.restore((frozenset(), ()))  # from nothing: what earlier tests fetched is gone
    masking.register("registered-before")
    masking.register("fetched-before", transient=True)
    saved = masking.registered()
    masking.register("registered-later")
    masking.register("fetched-later", transient=True)
    masking.restore(saved)
    assert masking.mask("registered-later fetched-later") == "registered-later fetched-later"
    assert masking.mask("registered-before fetched-before") == "<hidden> <hidden>"
    # ... each as it was kept: a fetched token among the recent ones, which later fetches
    # push out, not kept for good
    assert masking.registered() == (frozenset({"registered-before"}), ("fetched-before",))
