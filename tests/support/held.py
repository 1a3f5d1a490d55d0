"""Clients that hold gRPC calls open, from raw HTTP/2 frames (the `h2` package): each connection
opens calls, sends their headers and the first bytes of a message it never finishes, and then
only reads what the server sends back."""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import numpy as np
import tritonclient.grpc as tgrpc


def timed_calls(client: tgrpc.InferenceServerClient) -> tuple[float, float]:
    """Seconds that ModelMetadata and then a one-row ModelInfer of the iris forest take (each
    given 5 s): what a real client sees while calls are held."""
    t0 = time.perf_counter()
    client.get_model_metadata("rf", client_timeout=5)
    t1 = time.perf_counter()
    inp = tgrpc.InferInput("features", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    client.infer("rf", [inp], client_timeout=5)
    return t1 - t0, time.perf_counter() - t1


# A gRPC message's 5-byte prefix (not compressed, 100 bytes long), and none of its 100 bytes.
PREFIX = b"\x00\x00\x00\x00\x64"


@dataclass
class _Conn:
    sock: socket.socket
    h2: h2.connection.H2Connection
    streams: set[int] = field(default_factory=set)
    closed: bool = False  # by the server: GOAWAY or end of file


class HeldCalls:
    """`connections` connections to `address` with `streams` held calls of `path` each. Each
    call sends `message` (by default a prefix that promises 100 bytes and none of them) and,
    with `end`, ends its side of the stream there."""

    def __init__(
        self,
        address: str,
        connections: int,
        streams: int = 1,
        path: str = "",
        *,
        message: bytes = PREFIX,
        end: bool = False,
    ):
        host, port = address.rsplit(":", 1)
        self.path = path or "/inference.GRPCInferenceService/ModelInfer"
        self.message, self.end = message, end
        self.selector = selectors.DefaultSelector()
        self.conns: list[_Conn] = []
        self.statuses: dict[str, int] = {}  # grpc-status (or "reset") -> calls that ended so
        self.refused_connections = 0
        for _ in range(connections):
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                self.refused_connections += 1
                continue
            conn = _Conn(sock, h2.connection.H2Connection(h2.config.H2Configuration()))
            conn.h2.initiate_connection()
            for _ in range(streams):
                self._open(conn, f"{host}:{port}")
            sock.sendall(conn.h2.data_to_send())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, conn)
            self.conns.append(conn)

    def _open(self, conn: _Conn, authority: str) -> None:
        sid = conn.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", self.path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if self.message:
            conn.h2.send_headers(sid, headers)
            conn.h2.send_data(sid, self.message, end_stream=self.end)
        else:
            conn.h2.send_headers(sid, headers, end_stream=self.end)
        conn.streams.add(sid)

    @property
    def held(self) -> int:
        """Calls still open: neither answered nor reset, on a connection still open."""
        return sum(len(c.streams) for c in self.conns if not c.closed)

    @property
    def open_connections(self) -> int:
        return sum(not c.closed for c in self.conns)

    def read(self, seconds: float) -> None:
        """Take what the server sends for `seconds`: settings, pings, answers, resets."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(min(left, 0.2)):
                self._read(key.data)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        try:
            events = conn.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._close(conn)
            return
        for event in events:
            if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                status = dict(event.headers).get(b"grpc-status")
                if status is not None and event.stream_id in conn.streams:
                    self._ended(conn, event.stream_id, status.decode())
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id in conn.streams:
                    self._ended(conn, event.stream_id, "reset")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close(conn)
                return
        try:
            conn.sock.sendall(conn.h2.data_to_send())  # acknowledgements of settings and pings
        except OSError:
            self._close(conn)

    def _ended(self, conn: _Conn, sid: int, status: str) -> None:
        conn.streams.discard(sid)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def _close(self, conn: _Conn) -> None:
        if not conn.closed:
            conn.closed = True
            self.selector.unregister(conn.sock)

    def close(self) -> None:
        for conn in self.conns:
            if not conn.closed:
                self.selector.unregister(conn.sock)
            conn.sock.close()
        self.selector.close()

    def __enter__(self) -> HeldCalls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
