"""A TCP proxy between a client and a server that can lose the server's answers for real: requests still
reach the server (which handles and commits them), the bytes it sends back are swallowed, and then the
connection is cut, as a network that fails after the request went through would; or hold the client's
requests back until released, as a slow network would, so a test can act while a call is on its way; or
delay each of them, as a distant server would. It is also an address a test owns for its whole run: the
server behind it may be stopped and another started on any port (``forward_to``), so a client reconnects
to the same address without the test freeing a port and binding it again, which another process (a
parallel test worker) may take in between.
(A real proxy over real sockets; only the moment of the failure or delay is staged by the test.)"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class AnswerLosingProxy:
    def __init__(self, target: str | None) -> None:
        """``target``: the server's address, or None for none yet (see ``forward_to``)."""
        self._target = _host_port(target)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._holding = False
        self._dead: set[socket.socket] = set()  # server sides whose answers are dropped (dead paths)
        self._closed = False
        self.connections = 0  # accepted so far
        self.swallowed_bytes = 0  # of answers, while holding
        self._requests_flow = threading.Event()  # cleared while requests are held back
        self._requests_flow.set()
        self.held_request_bytes = 0  # of requests held back (counted as they arrive)
        self._request_delay_s = 0.0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def forward_to(self, target: str | None) -> None:
        """New connections go to ``target`` from now on; with None, each is closed as soon as it is accepted,
        as a server that is down refuses it (the open ones go on: they end with their server)."""
        with self._lock:
            self._target = _host_port(target)

    def hold_answers(self) -> None:
        """From now on, bytes from the server are read and dropped (requests still go through)."""
        with self._lock:
            self._holding = True

    def kill_open_paths(self) -> None:
        """The connections open now go silent for good, as a path a NAT or load balancer dropped does:
        their answers are read and dropped, nothing is reset; new connections forward normally."""
        with self._lock:
            self._dead.update(self._open)

    def hold_requests(self) -> None:
        """From now on, bytes from the client wait in the proxy until ``release_requests``."""
        self._requests_flow.clear()

    def release_requests(self) -> None:
        self._requests_flow.set()

    def delay_requests(self, seconds: float) -> None:
        """From now on, each read of the client's bytes reaches the server ``seconds`` late (one command
        per read, for a client that waits for each answer: a round trip ``seconds`` longer)."""
        self._request_delay_s = seconds

    def cut(self) -> None:
        """Closes every open connection (the client sees it reset mid-call) and forwards normally again,
        so the client's next connection works."""
        with self._lock:
            doomed, self._open = self._open, []
            self._holding = False
            self._dead.clear()
        for sock in doomed:
            _close(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _close(self._listener)
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                target = self._target
            try:
                if target is None:
                    raise ConnectionRefusedError("no server behind the proxy")
                server = socket.create_connection(target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._closed:
                    _close(client)
                    _close(server)
                    return
                self.connections += 1
                self._open += [client, server]
            for source, sink, answers in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, answers), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if not answers and self._request_delay_s:
                    time.sleep(self._request_delay_s)
                if not answers and not self._requests_flow.is_set():
                    with self._lock:
                        self.held_request_bytes += len(data)
                    self._requests_flow.wait()
                with self._lock:
                    swallow = answers and (self._holding or source in self._dead)
                    if swallow:
                        self.swallowed_bytes += len(data)
                if not swallow:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _host_port(address: str | None) -> tuple[str, int] | None:
    if address is None:
        return None
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
