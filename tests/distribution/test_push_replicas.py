"""Pushes through several replicas' endpoints (one PostgreSQL catalog, one
shared blob directory) without session affinity: any replica goes on with an
upload session another opened (distribution/uploads.py, store/resumable.py)."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import wait_until
from tests.api.scale_out import Replica, ReplicaSet, replica_set
from tests.archives import sha
from tests.distribution.conftest import Client
from tests.distribution.round_robin import round_robin
from tests.distribution.test_push import (
    OCI_MANIFEST,
    chunk,
    descriptor,
    make_image,
    monolithic,
    put_manifest,
    start,
    stored,
)
from tests.distribution.test_push_skopeo import copy, inspect, write_layout
from tests.pg import Cluster

PUSH = ("--registry-listen", "127.0.0.1:0", "--registry-allow-push", "--registry-allow-delete")


@pytest.fixture(scope="module")
def replicas(
    postgres_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaSet]:
    base = tmp_path_factory.mktemp("push-replicas")
    with replica_set(postgres_cluster, base, ["a", "b"], extra=PUSH) as started:
        yield started


def endpoint(replica: Replica) -> Client:
    assert replica.server.registry_address is not None
    return Client(replica.server.registry_address)


def session_files(replicas: ReplicaSet, replica: Replica) -> list[Path]:
    return replicas.ingest_files(replica.id)


def test_an_upload_goes_on_from_replica_to_replica(replicas: ReplicaSet) -> None:
    a, b = replicas.live()
    blob = os.urandom(3 << 20)  # random bytes: a plain blob, hashed as it comes
    third = len(blob) // 3
    location = start(endpoint(a), "demo/spread").headers["Location"]
    assert len(session_files(replicas, a)) == 1
    first = chunk(endpoint(b), location, blob[:third], 0)  # b takes it from a
    assert (first.status, first.headers["Range"]) == (202, f"0-{third - 1}")
    assert (session_files(replicas, a), len(session_files(replicas, b))) == ([], 1)
    # a's memory of the session is stale now: it notices, and takes it back
    second = chunk(endpoint(a), location, blob[third : 2 * third], third)
    assert (second.status, second.headers["Range"]) == (202, f"0-{2 * third - 1}")
    status = endpoint(b).get(location)  # asked of either, the same range
    assert (status.status, status.headers["Range"]) == (204, f"0-{2 * third - 1}")
    done = endpoint(b).request("PUT", location + f"?digest={sha(blob)}", {}, blob[2 * third :])
    assert (done.status, done.headers["Docker-Content-Digest"]) == (201, sha(blob))
    assert stored(a.stub, sha(blob)) == blob
    assert session_files(replicas, a) == session_files(replicas, b) == []
    assert endpoint(a).get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]


def test_a_gzip_layer_continued_elsewhere_keeps_its_diff_id(replicas: ReplicaSet) -> None:
    a, b = replicas.live()
    image = make_image("spread-layer", layers=1)
    layer = image.layers[0]
    half = len(layer) // 2
    location = start(endpoint(a), "demo/layered").headers["Location"]
    assert chunk(endpoint(a), location, layer[:half], 0).status == 202
    # b hashes a's half again (inflating it) and goes on
    done = endpoint(b).request("PUT", location + f"?digest={sha(layer)}", {}, layer[half:])
    assert done.status == 201, done.body
    assert monolithic(endpoint(b), "demo/layered", image.config).status == 201
    # the manifest PUT checks the layer's diff_id against the config's
    answer = put_manifest(endpoint(a), "demo/layered", "1", image.manifest, OCI_MANIFEST)
    assert answer.status == 201, answer.body
    assert inspect(b.stub, "demo/layered:1").manifest.digest == image.digest


def test_a_session_held_by_a_request_is_busy_on_every_replica(replicas: ReplicaSet) -> None:
    a, b = replicas.live()
    location = start(endpoint(a), "demo/held").headers["Location"]
    (file,) = session_files(replicas, a)
    with file.open("rb") as held:  # a request of some replica, in the middle of its work
        fcntl.flock(held, fcntl.LOCK_EX)
        for replica in (a, b):
            refused = chunk(endpoint(replica), location, b"x" * 100, 0)
            assert (refused.status, refused.error_codes()) == (400, ["BLOB_UPLOAD_INVALID"])
            assert "busy" in refused.body.decode()
        fcntl.flock(held, fcntl.LOCK_UN)
    assert chunk(endpoint(b), location, b"x" * 100, 0).status == 202
    assert endpoint(a).request("DELETE", location).status == 204  # a takes it to cancel it
    assert session_files(replicas, a) == session_files(replicas, b) == []


def test_a_session_is_unknown_under_another_repository_on_any_replica(
    replicas: ReplicaSet,
) -> None:
    a, b = replicas.live()
    location = start(endpoint(a), "demo/mine").headers["Location"]
    elsewhere = location.replace("/demo/mine/", "/demo/theirs/")
    for replica in (a, b):
        answer = chunk(endpoint(replica), elsewhere, b"y" * 10, 0)
        assert (answer.status, answer.error_codes()) == (404, ["BLOB_UPLOAD_UNKNOWN"])
    assert endpoint(b).request("DELETE", location).status == 204


def test_skopeo_pushes_through_a_round_robin_balancer(replicas: ReplicaSet, tmp_path: Path) -> None:
    a, b = replicas.live()
    image = make_image("balanced", layers=3)
    write_layout(tmp_path / "in", [*image.blobs, image.manifest],
                 descriptor(OCI_MANIFEST, image.manifest), "1")  # fmt: skip
    endpoints = [r.server.registry_address or "" for r in (a, b)]
    with round_robin(endpoints) as balancer:
        copy(f"oci:{tmp_path / 'in'}:1", f"docker://{balancer.address}/demo/balanced:1")
    # every session went on from one replica to the other
    sessions: dict[str, list[int]] = {}
    for _, path, turn in balancer.served:
        if path.rstrip("/").rpartition("/")[0].endswith("/blobs/uploads"):
            sessions.setdefault(path, []).append(turn)
    assert len(sessions) == len(image.blobs), balancer.served
    assert all(set(turns) == {0, 1} for turns in sessions.values()), balancer.served
    for replica in (a, b):
        shown = inspect(replica.stub, "demo/balanced:1")
        assert shown.manifest.digest == image.digest
        assert [layer.digest for layer in shown.layers] == [sha(x) for x in image.layers]


def test_a_second_request_while_one_is_in_the_middle_of_a_chunk_is_busy(
    replicas: ReplicaSet,
) -> None:
    a, b = replicas.live()
    location = start(endpoint(a), "demo/midway").headers["Location"]
    (file,) = session_files(replicas, a)
    host, port = (a.server.registry_address or "").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as first:
        first.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 200\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + b"m" * 100
        )
        wait_until(lambda: locked(file))  # the first request holds the session
        for replica in (a, b):
            refused = chunk(endpoint(replica), location, b"n" * 10, 0)
            assert (refused.status, refused.error_codes()) == (400, ["BLOB_UPLOAD_INVALID"])
        first.sendall(b"m" * 100)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += first.recv(4096)
        assert reply.startswith(b"HTTP/1.1 202"), reply
        assert b"Range: 0-199" in reply
    assert endpoint(b).request("DELETE", location).status == 204


def locked(path: Path) -> bool:
    """Whether a request holds the session file's lock, as /proc/locks lists it
    (read without taking it: a probe that locked it could refuse the request)."""
    found = path.stat()
    file_id = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if fields[1] == "FLOCK" and fields[5] == file_id:
            return True
    return False


def test_the_first_bytes_of_a_layer_sent_one_by_one_to_each_replica(replicas: ReplicaSet) -> None:
    """Until four bytes have come, a session cannot tell gzip from zstd: what came
    is kept in its file as it is, and whichever replica gets the rest hashes it."""
    a, b = replicas.live()
    image = make_image("byte-by-byte", layers=1)
    layer = image.layers[0]
    location = start(endpoint(a), "demo/bytes").headers["Location"]
    for at, replica in enumerate((b, a, b)):
        answer = chunk(endpoint(replica), location, layer[at : at + 1], at)
        assert (answer.status, answer.headers["Range"]) == (202, f"0-{at}")
    rest = chunk(endpoint(a), location, layer[3:], 3)
    assert rest.status == 202
    done = endpoint(b).request("PUT", location + f"?digest={sha(layer)}", {}, b"")
    assert done.status == 201, done.body
    assert monolithic(endpoint(a), "demo/bytes", image.config).status == 201
    answer = put_manifest(endpoint(b), "demo/bytes", "1", image.manifest, OCI_MANIFEST)
    assert answer.status == 201, answer.body  # the layer's diff_id, checked against the config
    assert inspect(a.stub, "demo/bytes:1").manifest.digest == image.digest


def test_sessions_another_replica_took_do_not_count_against_the_cap(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    capped = (*PUSH, "--registry-max-upload-sessions", "2")
    with replica_set(postgres_cluster, tmp_path, ["a", "b"], extra=capped) as started:
        a, b = started.live()
        locations = [start(endpoint(b), "demo/cap").headers["Location"] for _ in range(2)]
        refused = endpoint(b).request("POST", "/v2/demo/cap/blobs/uploads/")
        assert (refused.status, refused.error_codes()) == (429, ["TOOMANYREQUESTS"])
        for location in locations:  # a takes both: b holds none now
            assert chunk(endpoint(a), location, b"t" * 10, 0).status == 202
        assert endpoint(b).request("POST", "/v2/demo/cap/blobs/uploads/").status == 202
        for location in locations:
            assert endpoint(a).request("DELETE", location).status == 204
