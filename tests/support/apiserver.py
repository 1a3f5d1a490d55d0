"""A recording stand-in for the Kubernetes API server (none can run here): it answers a PATCH
of a Deployment with the smallest Deployment the `kubernetes` client accepts, and keeps each
request as the API server would receive it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: Any


@dataclass
class ApiServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)

    def client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))


@contextmanager
def api_server() -> Iterator[ApiServer]:
    stand_in = ApiServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            stand_in.requests.append(
                Recorded(self.command, self.path, self.headers["content-type"], json.loads(body))
            )
            name = self.path.rsplit("/", 1)[-1]
            reply = json.dumps(
                {
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": {"name": name},
                    "spec": {
                        "selector": {"matchLabels": {"app": name}},
                        "template": {"spec": {"containers": [{"name": "server"}]}},
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stand_in.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
