"""An HTTP/1.1 upstream on loopback that keeps its connections open and counts them: for the
tests of what the client does with a connection (keeps it for the next page, closes it
after an error it does not read whole, closes a 401's before the request goes again)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager

#: status, headers, body. A Content-Length is added unless the headers name a
#: Transfer-Encoding (the body is then framed as it is).
Answer = tuple[int, dict[str, str], bytes]


class KeepAliveUpstream(http.server.ThreadingHTTPServer):
    """``answer(upstream, request)`` gives each GET's answer; ``answered`` counts them
    (the one being answered included), ``connections`` counts the connections opened, and
    ``ended`` is set whenever one has ended."""

    def __init__(
        self, answer: Callable[[KeepAliveUpstream, http.server.BaseHTTPRequestHandler], Answer]
    ) -> None:
        self.connections = 0
        self.answered = 0
        self.ended = threading.Event()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                upstream.connections += 1
                super().setup()

            def finish(self) -> None:
                super().finish()
                upstream.ended.set()

            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                upstream.answered += 1
                status, headers, body = answer(upstream, self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Transfer-Encoding" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def keepalive_upstream(
    answer: Callable[[KeepAliveUpstream, http.server.BaseHTTPRequestHandler], Answer],
) -> Iterator[KeepAliveUpstream]:
    """A ``KeepAliveUpstream`` serving for the block, then stopped."""
    upstream = KeepAliveUpstream(answer)
    thread = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield upstream
    finally:
        upstream.shutdown()
        upstream.server_close()
        thread.join(10)
