"""A real S3-compatible server (moto's server mode) on loopback, with one bucket: the batch
job's, the registry's and the prediction log's storage in the tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks.servers import Process, free_port, http_ready


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    bucket: str
    credentials: dict[str, str]

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.credentials["AWS_ACCESS_KEY_ID"],
            secret=self.credentials["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
        )

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        """The Secret the manifests read object-store credentials from (docs/deploy.md, step 5)."""
        return {"bentos-object-store": self.credentials}


@contextmanager
def moto_server(bucket: str) -> Iterator[ObjectStore]:
    """moto's server mode, started by the one launcher, with `bucket` made."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    store = ObjectStore(
        endpoint,
        bucket,
        {
            "AWS_ACCESS_KEY_ID": "bentos-test",
            "AWS_SECRET_ACCESS_KEY": "bentos-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        },
    )
    server = Process(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        ready=http_ready(f"{endpoint}/moto-api/"),
        port=port,
    ).wait_ready(60)
    try:
        store.fs().mkdir(bucket)
        yield store
    finally:
        server.stop()
