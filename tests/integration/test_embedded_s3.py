"""make run's embedded S3 keeps its objects across a restart (service/cli/embedded_s3.py)."""

from __future__ import annotations

import socket

from service.cli import embedded_s3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_objects_survive_a_restart_of_the_embedded_server(tmp_path):
    folder = tmp_path / "s3"
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    objects = {("feeds", "tenants/1/FD00001/JS00001-x.csv"): b"sku\nA\n", ("other", "k"): b"v"}
    server = embedded_s3.start(port)
    try:
        s3 = embedded_s3.client(endpoint)
        for bucket in {b for b, _ in objects}:
            s3.create_bucket(Bucket=bucket)
        for (bucket, key), body in objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert embedded_s3.save(endpoint, folder) == 2
    finally:
        embedded_s3.stop(server)
    server = embedded_s3.start(port)  # a new, empty server
    try:
        assert embedded_s3.restore(endpoint, folder) == 2
        s3 = embedded_s3.client(endpoint)
        for (bucket, key), body in objects.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        # Saving again replaces the folder's contents exactly.
        s3.delete_object(Bucket="other", Key="k")
        assert embedded_s3.save(endpoint, folder) == 1
        assert not (folder / "other" / "k").exists()
    finally:
        embedded_s3.stop(server)
