"""The two listeners and the life of a connection: read a request, answer it by the first
rule that takes it (then close) or by the default API (and keep the connection alive, as
HTTP/1.1 does), and record who closed the connection and how much body went out first."""

from __future__ import annotations

import socket
import socketserver
import threading

from service.tools.hostile_upstream import admin
from service.tools.hostile_upstream import api
from service.tools.hostile_upstream.actions import Exchange
from service.tools.hostile_upstream.actions import perform
from service.tools.hostile_upstream.state import State
from service.tools.hostile_upstream.wire import BadRequest
from service.tools.hostile_upstream.wire import ClientGone
from service.tools.hostile_upstream.wire import Peer
from service.tools.hostile_upstream.wire import Reply
from service.tools.hostile_upstream.wire import Request
from service.tools.hostile_upstream.wire import Stopping
from service.tools.hostile_upstream.wire import error_reply

LOOPBACK = "127.0.0.1"


class Listener(socketserver.ThreadingTCPServer):
    """One origin on loopback; a thread per connection, none waited for at exit."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, name: str, port: int, tool: HostileServer) -> None:
        self.name = name
        self.tool = tool
        super().__init__((LOOPBACK, port), Handler)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """The connection closed itself, as its action chose (a FIN or a reset)."""
        assert isinstance(request, socket.socket)
        request.close()


class Handler(socketserver.BaseRequestHandler):
    server: Listener

    def handle(self) -> None:
        self.server.tool.serve(self.server.name, self.request)


class HostileServer:
    """Both listeners over one state; ``start`` binds and serves them in threads."""

    def __init__(self, state: State, port: int = 0, other_port: int = 0) -> None:
        self.state = state
        self.listeners = [Listener("main", port, self), Listener("other", other_port, self)]
        state.urls = {listener.name: listener.url for listener in self.listeners}

    def start(self) -> None:
        for listener in self.listeners:
            threading.Thread(
                target=listener.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            ).start()

    def stop(self) -> None:
        """Stop accepting, and tell every connection to end (their threads see the flag
        within a fraction of a second)."""
        self.state.stopping.set()
        for listener in self.listeners:
            listener.shutdown()
            listener.server_close()

    def serve(self, listener: str, sock: socket.socket) -> None:
        peer = Peer(sock, self.state.stopping)
        connection = self.state.opened(listener, peer)
        closed_by = "server"
        try:
            while True:
                request = peer.read_request()
                if request is None:
                    closed_by = "client"
                    break
                if listener == "main" and request.path.startswith(admin.PREFIX):
                    connection.admin += 1
                    reply = admin.answer(self.state, request)
                    peer.send_reply(reply, close=not request.keep_alive, counted=False)
                elif (rule := self.state.received(connection, request)) is not None:
                    exchange = Exchange(
                        peer, request, self.state.urls, lambda r=request: self.default(r)
                    )
                    perform(rule, exchange)
                    break
                else:
                    peer.send_reply(self.default(request), close=not request.keep_alive)
                if not request.keep_alive:
                    break
        except ClientGone:
            closed_by = "client"
        except Stopping:
            closed_by = "shutdown"
        except BadRequest as error:
            try:
                peer.send_reply(error_reply(error.status, str(error)), close=True, counted=False)
            except (ClientGone, Stopping):
                pass
        finally:
            peer.close()
            self.state.closed(connection, closed_by)

    def default(self, request: Request) -> Reply:
        with self.state.lock:
            state = self.state
            return api.answer(request, state.store, state.oauth, state.token)
