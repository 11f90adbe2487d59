"""A threaded TCP proxy to a broker that can hold either direction, for tests whose main
thread blocks in a sync client call (a signal interrupts it there)."""

import contextlib
import socket
import threading

from chaos.load import wait_for


class GateProxy:
    """A threaded TCP proxy on loopback to a broker: `hold_replies()` keeps the broker's bytes
    (buffered, in order) from the client until `release_replies()`; `hold_requests()` stops
    reading what the client writes until `release_requests()`. `pushes` counts the PUSH
    lines that reached the broker."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.replies = threading.Event()
        self.replies.set()
        self.requests = threading.Event()
        self.requests.set()
        self.pushes = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def hold_replies(self) -> None:
        self.replies.clear()

    def release_replies(self) -> None:
        self.replies.set()

    def hold_requests(self) -> None:
        self.requests.clear()

    def release_requests(self) -> None:
        self.requests.set()

    def close(self) -> None:
        self.release_replies()
        self.release_requests()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, server]
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, source: socket.socket, sink: socket.socket) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while True:
                self.requests.wait()
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                seen = tail + data
                with self.lock:
                    self.pushes += seen.count(b"PUSH ")
                tail = seen[-4:]
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _down(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self.replies.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def wait_pushes(self, count: int, timeout: float = 10) -> None:
        wait_for(lambda: self.pushes >= count, timeout, f"{count} PUSH lines")
