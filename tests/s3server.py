"""A real S3 API on 127.0.0.1 for the tests: moto's server mode (as zarr's and s3fs's own suites do).

Never any other address: the server binds 127.0.0.1 on a free port, and every client the tests
make (this process through ``os.environ``, subprocesses through :func:`s3_env`) is pointed at it
with ``AWS_ENDPOINT_URL`` and dummy credentials, so nothing can reach a real bucket.

    def test_x(s3):                 # fixture in conftest.py: a fresh bucket per test
        url = f"s3://{s3.bucket}/f.zarr"
        subprocess.run([...], env=s3.env)
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
       "AWS_SESSION_TOKEN": "testing-token", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@dataclass
class S3Server:
    """A running moto server: ``endpoint`` (http://127.0.0.1:PORT) and the environment that points at it."""
    server: object
    endpoint: str
    env_vars: dict = field(default_factory=dict)

    def env(self, base: dict | None = None) -> dict:
        """``base`` (default ``os.environ``) plus the variables that aim every AWS client at this server."""
        return {**(os.environ if base is None else base), **self.env_vars}

    def new_bucket(self) -> str:
        import s3fs

        name = f"t-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(**self.client_options()).mkdir(name)
        return name

    def client_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "key": ENV["AWS_ACCESS_KEY_ID"], "secret": ENV["AWS_SECRET_ACCESS_KEY"],
                "skip_instance_cache": True}

    def fs(self):
        """A fresh s3fs filesystem on this server (for reading back what a test wrote)."""
        import s3fs

        return s3fs.S3FileSystem(**self.client_options())


def start() -> S3Server:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1", host
    endpoint = f"http://127.0.0.1:{port}"
    return S3Server(server, endpoint, {**ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint,
                                       "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"})


@dataclass
class Bucket:
    """One test's bucket on the shared server."""
    server: S3Server
    bucket: str

    @property
    def env(self) -> dict:
        return self.server.env()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def fs(self):
        return self.server.fs()

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in this bucket (relative to the bucket)."""
        fs = self.fs()
        root = f"{self.bucket}/{prefix}".rstrip("/")
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return []
        return sorted(k[len(self.bucket) + 1:] for k in found)
