"""A recording stand-in for the Kubernetes API server (none can run here). It keeps each
request as the API server would receive it and answers the few the jobs send:
- PATCH of a Deployment, with the smallest Deployment the `kubernetes` client accepts;
- GET of a CronJob it was given (404 otherwise);
- POST of a Job, created once per name (409 for a name it holds, as the API server does).
A kubeconfig pointing at it lets a job's own process find it as `kubectl` would."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_CRONJOB = re.compile(r"/apis/batch/v1/namespaces/([^/]+)/cronjobs/([^/?]+)")
_JOBS = re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs")


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
    cronjobs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (namespace, name)
    jobs: dict[tuple[str, str], dict] = field(default_factory=dict)

    def client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this server (JSON is YAML)."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "monitor", "user": {"token": "stand-in"}}],
                    "contexts": [
                        {
                            "name": "stand-in",
                            "context": {
                                "cluster": "stand-in",
                                "user": "monitor",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "stand-in",
                }
            )
        )
        return path


@contextmanager
def api_server() -> Iterator[ApiServer]:
    stand_in = ApiServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            stand_in.requests.append(
                Recorded(self.command, self.path, self.headers.get("content-type", ""), body)
            )
            return body

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str) -> None:
            self._reply(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "code": code,
                },
            )

        def do_PATCH(self) -> None:
            self._record()
            name = self.path.rsplit("/", 1)[-1]
            self._reply(
                200,
                {
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": {"name": name},
                    "spec": {
                        "selector": {"matchLabels": {"app": name}},
                        "template": {"spec": {"containers": [{"name": "server"}]}},
                    },
                },
            )

        def do_GET(self) -> None:
            self._record()
            match = _CRONJOB.fullmatch(self.path)
            found = match and stand_in.cronjobs.get((match[1], match[2]))
            if found:
                self._reply(200, found)
            else:
                self._status(404, "NotFound")

        def do_POST(self) -> None:
            body = self._record()
            match = _JOBS.fullmatch(self.path)
            if not match:
                self._status(404, "NotFound")
                return
            key = (match[1], body["metadata"]["name"])
            if key in stand_in.jobs:
                self._status(409, "AlreadyExists")
                return
            stand_in.jobs[key] = body
            self._reply(201, body)

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
