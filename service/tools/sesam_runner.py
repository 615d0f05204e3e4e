"""The local Sesam runner: run a connector the way Sesam's pipes do, before any Sesam node.

    .venv/bin/python -m service.tools.sesam_runner pull URL [--page-size N] [--state FILE] [--out FILE|-]
                                            [--full]
    .venv/bin/python -m service.tools.sesam_runner push URL FILE [--batch-size N] [--full] [--retries N]
    .venv/bin/python -m service.tools.sesam_runner transform URL FILE|- [--batch-size N] [--out FILE|-]

``pull`` is a ``json`` source with ``supports_since``, ``is_chronological`` and
``page_size``: it asks ``?limit=N``, then ``?since=<_updated of the last entity>&limit=N``
until a page comes back empty, and keeps the last ``_updated`` in a small JSON state
file (one entry per URL) for the next run. ``--full`` ignores the stored since.

``push`` is a ``json`` sink: it POSTs a JSON array file in batches with ``sequence_id``,
``is_full``, ``request_id`` and ``previous_request_id``, ``is_first``/``is_last`` on a full
sync, and always a final empty batch.

``transform`` is an ``http`` transform: it POSTs the entities of a JSON array file (``-``:
standard input) in batches of ``--batch-size`` and writes what the transform answers, in
order. Run a transform over a feed by piping ``pull URL --full --out -`` into it.

Why it is strict: Sesam takes any valid JSON array as the whole truth, so the runner
fails, with one line naming the breach, wherever Sesam would be misled: a body that does
not parse (the connector's way of reporting a failure mid-stream), a non-2xx status, an
entity without a string ``_id``, an ``_updated`` that does not increase (as a string), a
page longer than ``limit``, a 409 from a sink. A failed pull leaves the state file and the
output file as they were. Exit status: 0 success, 1 failure or protocol breach, 2 usage.

Standard library and ``requests`` only, so it runs anywhere the connector's tests run. The
protocols themselves (paging, the sequence parameters, batches) are
``service.tools.sesam_client``'s, shared with the tests and the benchmarks; this module
adds the checks, the state file, the output and the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import requests

from service.tools.sesam_client import DEFAULT_BATCH_SIZE
from service.tools.sesam_client import TIMEOUT
from service.tools.sesam_client import Paging
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import SesamClient
from service.tools.sesam_client import batches
from service.tools.sesam_client import encode

PROG = ".venv/bin/python -m service.tools.sesam_runner"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_STATE = ".runner-state.json"  # ignored by the repository's .gitignore
DEFAULT_PAGE_SIZE = 1000
DEFAULT_RETRIES = 3  # Sesam retries a failed batch 3 times by default
STATE_VERSION = 1


class RunnerError(Exception):
    """The connector failed or broke the protocol: exit 1 with this one line."""


class UsageError(Exception):
    """Wrong arguments, or an input file that is not what it must be: exit 2."""


# --- pull: pages, since, state ------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused, as any JSON parser but Python's would."""
    return json.loads(body, parse_constant=_reject_constant)


def updated_text(entity: dict[str, Any], index: int) -> str:
    """An entity's ``_updated`` as Sesam hands it back: a string (ints become text)."""
    if "_updated" not in entity or entity["_updated"] is None:
        raise RunnerError(
            f"entity {index} (_id {entity['_id']!r}) has no _updated, so Sesam cannot page on since"
        )
    value = entity["_updated"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RunnerError(
            f"entity {index} (_id {entity['_id']!r}) has _updated {value!r}; "
            "it must be a string or an integer"
        )
    return str(value)


def check_page(
    body: bytes | str, *, since: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One feed page as Sesam's json source takes it: the entities and the next since.

    ``since`` is what was asked with (None on the first page of a full run). Every
    ``_updated`` must be greater, as a string, than the one before it and than ``since``:
    that is what ``is_chronological`` promises, and what keeps paging from looping.
    """
    try:
        page = parse_json(body)
    except ValueError as error:
        raise RunnerError(
            "the body is not valid JSON, so the stream was broken or truncated "
            f"(the connector's failure contract): {error}"
        ) from None
    if not isinstance(page, list):
        raise RunnerError(f"the body is a JSON {type(page).__name__}, not an array of entities")
    if len(page) > limit:
        raise RunnerError(f"the page has {len(page)} entities, more than limit={limit}")
    previous = since
    for index, entity in enumerate(page):
        if not isinstance(entity, dict):
            raise RunnerError(
                f"entity {index} of the page is a JSON {type(entity).__name__}, not an object"
            )
        if not isinstance(entity.get("_id"), str):
            raise RunnerError(
                f"entity {index} of the page has no string _id (_id is {entity.get('_id')!r})"
            )
        updated = updated_text(entity, index)
        if previous is not None and updated <= previous:
            if previous == since:
                raise RunnerError(
                    f"since does not advance: asked since={since!r} and got _id "
                    f"{entity['_id']!r} with _updated {updated!r}, which is not after it"
                )
            raise RunnerError(
                f"_updated does not increase as a string (is_chronological): _id "
                f"{entity['_id']!r} has {updated!r} after {previous!r}"
            )
        previous = updated
    return page, previous


def load_state(path: Path) -> dict[str, Any]:
    """The state file's contents; a missing file is an empty state."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": STATE_VERSION, "pulls": {}}
    except OSError as error:
        raise UsageError(f"cannot read the state file {path}: {error.strerror}") from None
    try:
        state = json.loads(text)
    except ValueError:
        raise UsageError(
            f"the state file {path} is not JSON; delete it to start over with a full run"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("version") != STATE_VERSION
        or not isinstance(state.get("pulls"), dict)
    ):
        raise UsageError(
            f"the state file {path} is not a runner state file (version "
            f"{STATE_VERSION}); delete it to start over with a full run"
        )
    return state


def stored_since(state: dict[str, Any], url: str) -> str | None:
    entry = state["pulls"].get(url)
    since = entry.get("since") if isinstance(entry, dict) else None
    return since if isinstance(since, str) else None


def save_since(
    path: Path, url: str, since: str | None, *, now: Callable[[], dt.datetime] | None = None
) -> None:
    """Record a finished pull; written to a temporary file and renamed, so a crash while
    saving never leaves a half-written state file."""
    state = load_state(path)
    if since is None:
        state["pulls"].pop(url, None)
    else:
        moment = (now or (lambda: dt.datetime.now(dt.UTC)))()
        state["pulls"][url] = {"since": since, "finished": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class ArrayWriter:
    """Writes a JSON array page by page, so a pull holds one page in memory at a time.

    To a file, it writes ``FILE.tmp`` and renames it to ``FILE`` only on success: a failed
    run leaves no file that looks complete, and an earlier ``FILE`` stays as it was. To
    stdout, it cannot take bytes back, so on failure it leaves out the closing ``]``,
    exactly as the connector does: what was written does not parse. In a ``with`` block
    it aborts when the block raises; the block calls ``commit`` when it is done.
    """

    def __init__(self, out: str) -> None:
        self.name = "stdout" if out == "-" else out  # for the summary line
        self.target: Path | None = None if out == "-" else Path(out)
        self.temporary: Path | None = None
        self.count = 0
        if self.target is None:
            self.stream: IO[bytes] = sys.stdout.buffer
        else:
            if self.target.is_dir():
                raise UsageError(f"--out {out} is a directory")
            self.temporary = self.target.with_name(self.target.name + ".tmp")
            try:
                self.stream = self.temporary.open("wb")
            except OSError as error:
                raise UsageError(f"cannot write {self.temporary}: {error.strerror}") from None
        self.stream.write(b"[")

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.abort()

    def write(self, entities: list[dict[str, Any]]) -> None:
        for entity in entities:
            text = json.dumps(entity, ensure_ascii=False, allow_nan=False)
            self.stream.write(("\n" if self.count == 0 else ",\n").encode("utf-8"))
            self.stream.write(text.encode("utf-8"))
            self.count += 1
        self.stream.flush()

    def commit(self) -> None:
        self.stream.write(b"\n]\n")
        self.stream.flush()
        if self.target is not None and self.temporary is not None:
            self.stream.close()
            os.replace(self.temporary, self.target)

    def abort(self) -> None:
        if self.temporary is not None:
            self.stream.close()
            self.temporary.unlink(missing_ok=True)
        else:
            self.stream.write(b"\n")  # no closing ']': the output does not parse
            self.stream.flush()


# --- push: reading the file, batches, sequence parameters ---------------------------------


def iter_json_array(
    stream: IO[str], *, chunk_size: int = 1 << 16, name: str = "the file"
) -> Iterator[Any]:
    """The elements of a JSON array read from ``stream`` a chunk at a time.

    Holds one element (and one chunk) in memory, so a file of millions of entities can be
    pushed. Raises UsageError naming the offset when the text is not one JSON array.
    """
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    buffer = ""
    offset = 0  # characters dropped from the front of the buffer
    position = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, position, offset, eof
        if eof:
            return False
        if position > chunk_size:
            buffer = buffer[position:]
            offset += position
            position = 0
        chunk = stream.read(max(chunk_size, len(buffer) - position))
        if not chunk:
            eof = True
            return False
        buffer += chunk
        return True

    def next_char() -> str:
        """The next non-blank character, without consuming it; '' at the end."""
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n":
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not fill():
                return ""

    def cut_short(error: json.JSONDecodeError) -> bool:
        """Whether the element may just go on in the next chunk (else the file is bad,
        and reading on would only fill memory)."""
        return error.pos >= len(buffer) - 6 or error.msg.startswith("Unterminated string")

    def fail(what: str) -> UsageError:
        return UsageError(
            f"{name} is not a JSON array of entities: {what} at character {offset + position}"
        )

    if next_char() != "[":
        raise fail("expected '['")
    position += 1
    if next_char() == "]":
        position += 1
    else:
        while True:
            if next_char() == "":
                raise fail("the text ends inside the array")
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError as error:
                    if cut_short(error) and fill():
                        continue
                    position = error.pos
                    raise fail(f"invalid JSON ({error.msg})") from None
                except ValueError as error:  # NaN, Infinity
                    raise fail(f"invalid JSON ({error})") from None
                if end == len(buffer) and fill():
                    continue  # a number may go on in the next chunk
                break
            position = end
            yield value
            char = next_char()
            if char == "":
                raise fail("the text ends inside the array")
            position += 1
            if char == "]":
                break
            if char != ",":
                raise fail("expected ',' or ']'")
    if next_char() != "":
        raise fail("text after the closing ']'")


def check_entity(value: Any, index: int) -> dict[str, Any]:
    """What Sesam's sink would send: an object with a string ``_id``."""
    if not isinstance(value, dict):
        raise UsageError(
            f"entity {index} of the file is a JSON {type(value).__name__}, not an object"
        )
    if not isinstance(value.get("_id"), str):
        raise UsageError(f"entity {index} of the file has no string _id")
    return value


def read_checked(stream: IO[str], name: str) -> Iterator[dict[str, Any]]:
    """The entities of the JSON array in ``stream``, each one what Sesam's sink would send."""
    try:
        for index, value in enumerate(iter_json_array(stream, name=name)):
            yield check_entity(value, index)
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text") from None


def read_entities(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as stream:
            yield from read_checked(stream, str(path))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


# --- HTTP ---------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """The URL with any password in it masked, for messages and the state file."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url!r} is not an http:// or https:// URL")
    return url


def check_status(response: requests.Response) -> None:
    """A non-2xx answer fails the run, as it fails a pipe."""
    if not 200 <= response.status_code < 300:
        raise RunnerError(http_failure(response))


def http_failure(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.reason}{error_detail(response)}"


def error_detail(response: requests.Response) -> str:
    """The connector's own error text (``{"error", "detail"}``), short, when it sent one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = " - ".join(str(body[key]) for key in ("error", "detail") if body.get(key))
    return f": {text[:300]}" if text else ""


def describe_failure(error: requests.RequestException) -> str:
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return (
            "the connection broke mid-body, so the stream was truncated "
            "(the connector's failure contract)"
        )
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return f"no connection within {TIMEOUT[0]:.0f}s"
    if isinstance(error, requests.exceptions.Timeout) or "timed out" in str(error):
        return f"no answer within {TIMEOUT[1]:.0f}s"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "cannot connect (is the connector running?)"
    return f"{type(error).__name__}"


@contextmanager
def named_failures(what: str) -> Iterator[None]:
    """Any failure of one request, of the connection or of the answer's checks, fails the
    run with one line that starts with ``what``, the request."""
    try:
        yield
    except requests.RequestException as error:
        raise RunnerError(f"{what}: {describe_failure(error)}") from None
    except RunnerError as error:
        raise RunnerError(f"{what}: {error}") from None


def plural(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


class Progress:
    """A line on stderr every ``every`` seconds: entities so far, rate and elapsed time."""

    def __init__(
        self,
        verb: str,
        every: float,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verb = verb
        self.every = every
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.shown = self.started

    def line(self, count: int, extra: str = "") -> str:
        elapsed = self.clock() - self.started
        rate = count / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.verb}: {plural(count, 'entity', 'entities')}{extra}, "
            f"{rate:.0f}/s, {elapsed:.1f}s elapsed"
        )

    def update(self, count: int, extra: str = "") -> None:
        if self.clock() - self.shown >= self.every:
            self.shown = self.clock()
            print(self.line(count, extra), file=self.stream, flush=True)

    def summary(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def run_pull(
    url: str,
    *,
    page_size: int,
    state_path: Path,
    out: str,
    full: bool,
    progress_every: float,
    session: requests.Session | None = None,
) -> int:
    """Page through the feed like Sesam's json source; commit output and state on success."""
    key = shown_url(url)
    if not state_path.parent.is_dir():
        raise UsageError(f"--state {state_path}: the directory does not exist")
    paging = Paging(page_size, None if full else stored_since(load_state(state_path), key))
    started_from = paging.since
    client = SesamClient(url, session=session)
    progress = Progress("pull", progress_every)

    def fetch(params: dict[str, str]) -> list[dict[str, Any]]:
        with named_failures(f"GET {key} (since={paging.since!r}, limit={page_size})"):
            response = client.get(params)
            check_status(response)
            entities, _ = check_page(response.content, since=paging.since, limit=page_size)
        return entities

    with ArrayWriter(out) as writer:
        for entities in paging.pages(fetch):
            writer.write(entities)
            progress.update(writer.count, f", {plural(paging.requests, 'page')}")
        writer.commit()
    since, pages = paging.since, paging.requests
    if since != started_from or full:
        save_since(state_path, key, since)
    kind = "full run" if started_from is None else f"incremental run from since={started_from!r}"
    progress.summary(
        progress.line(writer.count, f" in {plural(pages, 'request')}")
        + f": {kind}, wrote {writer.name}, since is now {since!r} "
        f"(kept in {state_path})"
    )
    return EXIT_OK


def post_batch(
    client: SesamClient,
    body: bytes,
    params: dict[str, str],
    *,
    retries: int,
    retry_delay: float,
    what: str,
) -> None:
    """POST one batch; retry a failure like Sesam, but never a 409 (the sync is over)."""
    failure = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_delay)
        try:
            response = client.post(None, params, raw=body)
        except requests.RequestException as error:
            failure = describe_failure(error)
            continue
        if response.status_code == 409:
            raise RunnerError(
                f"{what}: HTTP 409 Conflict{error_detail(response)}: the sink refused the "
                "sequence; Sesam would stop and later restart the whole sync with a new one"
            )
        if 200 <= response.status_code < 300:
            return
        failure = http_failure(response)
    tries = "once" if retries == 0 else f"{retries + 1} times"
    raise RunnerError(f"{what}: failed {tries}, last: {failure}")


def run_push(
    url: str,
    path: Path,
    *,
    batch_size: int,
    full: bool,
    retries: int,
    retry_delay: float,
    progress_every: float,
    session: requests.Session | None = None,
    new_id: Callable[[], str] | None = None,
) -> int:
    """Push a JSON array file like Sesam's json sink; the file is checked whole first."""
    total = sum(1 for _ in read_entities(path))  # a bad file fails before any request
    key = shown_url(url)
    client = SesamClient(url, session=session)
    sequence = Sequence(full=full, new_id=new_id)
    progress = Progress("push", progress_every)
    sent = 0
    requests_made = 0
    for batch in batches(read_entities(path), batch_size):
        params = sequence.params(last=not batch)
        body = encode(batch)
        what = (
            f"POST {key} (batch {requests_made + 1}, {len(batch)} entities, "
            f"sequence_id={sequence.sequence_id}, is_full={params['is_full']})"
        )
        post_batch(client, body, params, retries=retries, retry_delay=retry_delay, what=what)
        sent += len(batch)
        requests_made += 1
        progress.update(sent, f" of {total}")
    kind = "full sync" if full else "incremental sync"
    progress.summary(
        progress.line(sent, f" in {plural(requests_made, 'request')}")
        + f": {kind} sequence_id={sequence.sequence_id} done"
    )
    return EXIT_OK


# --- transform: a pipe's http transform -------------------------------------------------


def read_entity_stream(file: str) -> Iterator[dict[str, Any]]:
    """The entities of a JSON array file, or of standard input for ``-``, one at a time."""
    if file != "-":
        yield from read_entities(Path(file))
        return
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    yield from read_checked(stdin, "standard input")


def check_transformed(body: bytes) -> list[dict[str, Any]]:
    """A transform's answer as Sesam takes it: a JSON array of objects with string _ids."""
    try:
        answer = parse_json(body)
    except ValueError as error:
        raise RunnerError(f"the answer is not valid JSON: {error}") from None
    if not isinstance(answer, list):
        raise RunnerError(f"the answer is a JSON {type(answer).__name__}, not an array")
    for index, entity in enumerate(answer):
        if not isinstance(entity, dict) or not isinstance(entity.get("_id"), str):
            raise RunnerError(f"entity {index} of the answer is not an object with a string _id")
    return answer


def run_transform(
    url: str,
    file: str,
    *,
    batch_size: int,
    out: str,
    progress_every: float,
    session: requests.Session | None = None,
) -> int:
    """POST batches like Sesam's http transform; any non-2xx fails the run (as it fails a
    pipe's), and the output is committed only when every batch was transformed."""
    key = shown_url(url)
    client = SesamClient(url, session=session)
    progress = Progress("transform", progress_every)
    sent = 0
    requests_made = 0
    with ArrayWriter(out) as writer:
        for batch in batches(read_entity_stream(file), batch_size):
            if not batch:
                break  # the transform gets no final empty batch, unlike a sink
            with named_failures(f"POST {key} (batch {requests_made + 1}, {len(batch)} entities)"):
                response = client.post(batch)
                check_status(response)
                writer.write(check_transformed(response.content))
            sent += len(batch)
            requests_made += 1
            progress.update(sent, f", {writer.count} out")
        writer.commit()
    progress.summary(
        progress.line(sent, f" in {plural(requests_made, 'request')}")
        + f": {plural(writer.count, 'entity', 'entities')} out, wrote {writer.name}"
    )
    return EXIT_OK


# --- command line -------------------------------------------------------------------------


def _whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return number

    return parse


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= number < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return number


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog=PROG,
        description="Run a connector the way Sesam's pipes do: pull its feed like a json "
        "source, push entities to it like a json sink.",
        epilog="Exit status: 0 success, 1 failure or protocol breach, 2 usage error.",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="{pull,push,transform}")
    pull = commands.add_parser(
        "pull",
        help="pull a feed like a json source (supports_since, is_chronological)",
        description="Pull URL page by page like a Sesam json source with supports_since, "
        "is_chronological and page_size. Without --full, start from the since "
        "kept in the state file by the last successful run.",
    )
    pull.add_argument("url", metavar="URL", help="the feed, e.g. http://localhost:5000/people")
    pull.add_argument(
        "--page-size",
        type=_whole_number(1),
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"entities asked for per request (default {DEFAULT_PAGE_SIZE})",
    )
    pull.add_argument(
        "--state",
        type=Path,
        default=Path(DEFAULT_STATE),
        metavar="FILE",
        help=f"where the since value is kept per URL (default {DEFAULT_STATE})",
    )
    pull.add_argument(
        "--out",
        default="-",
        metavar="FILE|-",
        help="write the entities here as a JSON array (default -, stdout)",
    )
    pull.add_argument("--full", action="store_true", help="a full run: ignore the stored since")
    push = commands.add_parser(
        "push",
        help="push a JSON file of entities like a json sink",
        description="POST the entities of FILE (a JSON array) to URL in batches like a "
        "Sesam json sink, with the sequence parameters and a final empty batch.",
    )
    push.add_argument("url", metavar="URL", help="the sink, e.g. http://localhost:5000/people")
    push.add_argument("file", type=Path, metavar="FILE", help="a JSON array of entities")
    push.add_argument(
        "--batch-size",
        type=_whole_number(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"entities per request (default {DEFAULT_BATCH_SIZE})",
    )
    push.add_argument(
        "--full",
        action="store_true",
        help="a full sync: is_first, previous_request_id chain, is_last",
    )
    push.add_argument(
        "--retries",
        type=_whole_number(0),
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"retries of a failed batch (default {DEFAULT_RETRIES})",
    )
    push.add_argument(
        "--retry-delay",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="wait between retries (default 1)",
    )
    transform = commands.add_parser(
        "transform",
        help="run entities through an http transform",
        description="POST the entities of FILE (a JSON array; - for standard input) to URL "
        "in batches like a Sesam http transform and write the answers, in order. "
        "Over a feed: pull FEED --full --out - | transform URL -",
    )
    transform.add_argument(
        "url", metavar="URL", help="e.g. http://localhost:5000/transform/people-record"
    )
    transform.add_argument("file", metavar="FILE|-", help="a JSON array of entities")
    transform.add_argument(
        "--batch-size",
        type=_whole_number(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"entities per request (default {DEFAULT_BATCH_SIZE}, the transform's default)",
    )
    transform.add_argument(
        "--out",
        default="-",
        metavar="FILE|-",
        help="write the transformed entities here as a JSON array (default -, stdout)",
    )
    for command in (pull, push, transform):
        command.add_argument(
            "--progress-every",
            type=_seconds,
            default=5.0,
            metavar="SECONDS",
            help="a progress line on stderr this often (default 5)",
        )
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad arguments
    try:
        url = check_url(args.url)
        if args.command == "pull":
            return run_pull(
                url,
                page_size=args.page_size,
                state_path=args.state,
                out=args.out,
                full=args.full,
                progress_every=args.progress_every,
            )
        if args.command == "transform":
            return run_transform(
                url,
                args.file,
                batch_size=args.batch_size,
                out=args.out,
                progress_every=args.progress_every,
            )
        return run_push(
            url,
            args.file,
            batch_size=args.batch_size,
            full=args.full,
            retries=args.retries,
            retry_delay=args.retry_delay,
            progress_every=args.progress_every,
        )
    except UsageError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except RunnerError as error:
        print(f"{PROG} {args.command} failed: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; nothing committed", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
