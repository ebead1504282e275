"""What a push asks of the registry, and what leaves the store.

Each blob the registry lacks is sent in two requests: the POST that opens an
upload session and one PUT ``?digest=`` carrying the whole blob (no PATCH).
The bytes are the store's verified read: a blob damaged in the store fails the
push with DATA_LOSS, and the body stops short of its end, so the registry
(the hostile one here, which records what it gets, and the real one) never
commits it.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server, wait_until
from tests.api.test_service import check_summary, error_info, load
from tests.archives import ImageSpec, sha, tar_of
from tests.pki import make_pki
from tests.registry.conftest import Stub, push, stop_cleanly
from tests.registry.distribution import Distribution, skopeo, start_distribution
from tests.registry.recording import RecordingRegistry

#: a layer the store reads in many chunks (1 MiB each), still BIG once compressed
BIG = 20 << 20


@pytest.fixture
def recording() -> Iterator[RecordingRegistry]:
    registry = RecordingRegistry()
    with registry.running():
        yield registry


@pytest.fixture
def logged_registry(tmp_path: Path) -> Iterator[Distribution]:
    running = start_distribution(tmp_path / "logged-registry", log_level="info")
    yield running
    running.stop()


def _spec(name: str, big: bool = False) -> ImageSpec:
    """Two layers; with ``big`` the second is incompressible and BIG bytes."""
    second = os.urandom(BIG) if big else b"b" * 3000
    return ImageSpec([name], [tar_of({"etc/a": b"a" * 5000}), tar_of({"bin/b": second})])


def _blobs(stub: Stub, name: str) -> dict[str, int]:
    """digest → size of the image's layers and config, as stored."""
    details = stub.Inspect(pb.InspectRequest(image=name))
    found = {layer.digest: layer.size for layer in details.layers}
    config = details.image.id
    return {**found, config: 0}


def _digest_of(path_qs: str) -> str:
    return parse_qs(urlsplit(path_qs).query)["digest"][0]


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
def test_each_blob_goes_in_one_post_and_one_put(
    stub: Stub, server: Server, recording: RecordingRegistry, big: bool
) -> None:
    name = f"{recording.host}/app:1"
    load(stub, _spec(name, big))
    blobs = _blobs(stub, name)
    pushed = push(stub, name)

    log = recording.log
    assert log[0] == ("GET", "/v2/")
    kinds = Counter(
        (method, "upload" if "/blobs/uploads/" in path else path.split("?")[0])
        for method, path in log[1:]
    )
    assert kinds == Counter(
        {
            **{("HEAD", f"/v2/app/blobs/{digest}"): 1 for digest in blobs},
            ("POST", "upload"): len(blobs),
            ("PUT", "upload"): len(blobs),
            ("PUT", "/v2/app/manifests/1"): 1,
        }
    )
    uploads = [path for method, path in log if method == "PUT" and "/blobs/uploads/" in path]
    assert sorted(map(_digest_of, uploads)) == sorted(blobs)
    for digest in blobs:  # each PUT carried the whole blob: the registry hashed it
        assert sha(recording.blobs[digest]) == digest
    assert not recording.uploads  # no session left open
    manifest, _ = recording.manifests[("app", "1")]
    assert sha(manifest) == pushed.last.digest


def _damage(server: Server, digest: str, at: int) -> None:
    """Flip one byte of a stored blob in place (same size: only its hash tells)."""
    path = server.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [0, -1], ids=["first-byte", "last-byte"])
def test_a_damaged_stored_blob_is_refused_and_the_registry_commits_nothing(
    stub: Stub, server: Server, recording: RecordingRegistry, at: int
) -> None:
    name = f"{recording.host}/app:1"
    load(stub, _spec(name, big=True))
    big = max(_blobs(stub, name).items(), key=lambda item: item[1])[0]
    _damage(server, big, at)

    with pytest.raises(grpc.RpcError) as caught:
        push(stub, name)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "write it again" in str(caught.value.details())
    assert error_info(caught.value).metadata["digest"] == big
    assert big not in recording.blobs
    # its upload was tried once (DATA_LOSS is not retried) and got less than the blob
    sent = [p for m, p in recording.log if m == "PUT" and "/blobs/uploads/" in p]
    assert [_digest_of(p) for p in sent].count(big) == 1
    assert ("app", "1") not in recording.manifests
    # marked damaged now (Check agrees); the next push finds it so again
    assert not check_summary(stub).ok
    with pytest.raises(grpc.RpcError) as again:
        push(stub, name)
    assert again.value.code() == grpc.StatusCode.DATA_LOSS
    assert big not in recording.blobs


def test_a_real_registry_takes_a_monolithic_put_and_never_a_damaged_blob(
    stub: Stub, server: Server, logged_registry: Distribution
) -> None:
    host = logged_registry.host
    good, bad = f"{host}/good/app:1", f"{host}/bad/app:1"
    load(stub, _spec(good, big=True))
    offset = logged_registry.log_size()
    push(stub, good)

    def manifest_logged() -> bool:
        return any(
            m == "PUT" and "/manifests/" in u for m, u, _ in logged_registry.requests_since(offset)
        )

    wait_until(manifest_logged)  # the log line follows the answer
    requests = logged_registry.requests_since(offset)
    sessions = [(m, s) for m, u, s in requests if "/blobs/uploads/" in u]
    blobs = _blobs(stub, good)
    assert sorted(sessions) == sorted([("POST", 202)] * len(blobs) + [("PUT", 201)] * len(blobs))

    load(stub, ImageSpec([bad], [tar_of({"bin/c": os.urandom(BIG)})]))
    layer = stub.Inspect(pb.InspectRequest(image=bad)).layers[0].digest
    _damage(server, layer, -1)
    with pytest.raises(grpc.RpcError) as caught:
        push(stub, bad)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert _head(f"http://{host}/v2/bad/app/blobs/{layer}") == 404


def _head(url: str, pki: Path | None = None) -> int:
    """The status a registry answers a HEAD of ``url`` with (``pki``: its CA)."""
    context = ssl.create_default_context(cafile=pki / "ca.crt") if pki else None
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        refused.close()  # its socket
        return refused.code


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[Distribution, Path]]:
    pki = make_pki(tmp_path / "pki")
    running = start_distribution(
        tmp_path / "tls-registry", tls=(pki / "server.crt", pki / "server.key")
    )
    yield running, pki
    running.stop()


def test_a_push_through_tls_sends_the_same_blobs_and_refuses_a_damaged_one(
    tmp_path: Path, tls_registry: tuple[Distribution, Path]
) -> None:
    registry, pki = tls_registry
    server = start_server(
        tmp_path / "root", "--listen", "127.0.0.1:0", "--registry-ca", str(pki / "ca.crt")
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            good, bad = f"{registry.host}/good/app:1", f"{registry.host}/bad/app:1"
            load(stub, _spec(good, big=True))
            pushed = push(stub, good)
            inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{good}"))
            assert inspected["Digest"] == pushed.last.digest
            layers = [layer.digest for layer in stub.Inspect(pb.InspectRequest(image=good)).layers]
            assert inspected["Layers"] == layers

            load(stub, ImageSpec([bad], [tar_of({"bin/c": os.urandom(BIG)})]))
            layer = stub.Inspect(pb.InspectRequest(image=bad)).layers[0].digest
            _damage(server, layer, BIG // 2)
            with pytest.raises(grpc.RpcError) as caught:
                push(stub, bad)
            assert caught.value.code() == grpc.StatusCode.DATA_LOSS
            assert error_info(caught.value).metadata["digest"] == layer
            assert _head(f"https://{registry.host}/v2/bad/app/blobs/{layer}", pki) == 404
    finally:
        stop_cleanly(server)
