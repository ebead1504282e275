"""The pull category against the real server, with a client of our own
(http.client): manifests, blobs and ranges, pages, referrers, every error code."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import wait_until
from tests.distribution.conftest import (
    ACCEPT_ALL,
    WEB_TAGS,
    Client,
    HeldDownload,
    Seeded,
    big_layer,
    start_registry_server,
)
from tests.store.builders import build_image

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DEMO = "/v2/127.0.0.1_5000/demo/app"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_json(seeded: Seeded, path: str, reference: str) -> dict[str, object]:
    answer = seeded.client.get(f"{path}/manifests/{reference}", Accept=ACCEPT_ALL)
    assert answer.status == 200, answer.body
    document = json.loads(answer.body)
    assert isinstance(document, dict)
    return document


def layer_digest(seeded: Seeded, path: str, reference: str) -> str:
    layers = manifest_json(seeded, path, reference)["layers"]
    assert isinstance(layers, list)
    return str(layers[-1]["digest"])


def test_base_answers_with_the_api_version_and_a_request_id(seeded: Seeded) -> None:
    answer = seeded.client.get("/v2/", X_Request_Id="my-request-7")
    assert (answer.status, answer.json()) == (200, {})
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert answer.headers["X-Request-Id"] == "my-request-7"
    assert re.fullmatch(r"[0-9a-f]{16}", seeded.client.get("/v2/").headers["X-Request-Id"])


def test_a_tag_and_its_digest_serve_the_stored_bytes(seeded: Seeded) -> None:
    by_tag = seeded.client.get("/v2/library/web/manifests/1", Accept=ACCEPT_ALL)
    assert by_tag.status == 200
    assert by_tag.headers["Content-Type"] == DOCKER_MANIFEST
    # the bytes hash to the digest the header gives, and that gRPC reports
    assert sha(by_tag.body) == by_tag.headers["Docker-Content-Digest"] == seeded.web_digest
    assert int(by_tag.headers["Content-Length"]) == len(by_tag.body)
    assert by_tag.headers["ETag"] == f'"{seeded.web_digest}"'
    by_digest = seeded.client.get(
        f"/v2/library/web/manifests/{seeded.web_digest}", Accept=ACCEPT_ALL
    )
    assert (by_digest.status, by_digest.body) == (200, by_tag.body)
    head = seeded.client.request("HEAD", "/v2/library/web/manifests/2", {"Accept": ACCEPT_ALL})
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Docker-Content-Digest"] == seeded.web_digest
    assert int(head.headers["Content-Length"]) == len(by_tag.body)
    stored = b"".join(
        message.chunk
        for message in seeded.stub.ReadBlob(pb.ReadBlobRequest(digest=seeded.web_digest))
    )
    assert stored == by_tag.body  # exactly what the store holds, never rewritten


def test_a_multi_platform_index_and_its_children(seeded: Seeded) -> None:
    index = seeded.client.get("/v2/library/multi/manifests/1", Accept=ACCEPT_ALL)
    assert index.status == 200
    assert index.headers["Content-Type"] == OCI_INDEX
    assert sha(index.body) == index.headers["Docker-Content-Digest"] == seeded.multi_digest
    listed = [entry["digest"] for entry in json.loads(index.body)["manifests"]]
    assert listed == [seeded.amd.manifest.digest, seeded.arm.manifest.digest, seeded.absent]
    for child in (seeded.amd, seeded.arm):
        answer = seeded.client.get(
            f"/v2/library/multi/manifests/{child.manifest.digest}", Accept=ACCEPT_ALL
        )
        assert answer.status == 200
        assert (answer.headers["Content-Type"], sha(answer.body)) == (
            OCI_MANIFEST,
            child.manifest.digest,
        )
    absent = seeded.client.get(f"/v2/library/multi/manifests/{seeded.absent}", Accept=ACCEPT_ALL)
    assert (absent.status, absent.error_codes()) == (404, ["MANIFEST_UNKNOWN"])
    # a manifest of another repository is not served under this one
    other = seeded.client.get(f"/v2/library/multi/manifests/{seeded.web_digest}", Accept=ACCEPT_ALL)
    assert (other.status, other.error_codes()) == (404, ["MANIFEST_UNKNOWN"])


def test_another_registry_s_names_and_the_ns_parameter(seeded: Seeded) -> None:
    answer = seeded.client.get(f"{DEMO}/manifests/1", Accept=OCI_MANIFEST)
    assert (answer.status, sha(answer.body)) == (200, seeded.demo.manifest.digest)
    mirrored = seeded.client.get("/v2/demo/app/manifests/1?ns=127.0.0.1:5000", Accept=OCI_MANIFEST)
    assert (mirrored.status, mirrored.body) == (200, answer.body)
    hub = seeded.client.get("/v2/library/web/manifests/1?ns=docker.io", Accept=DOCKER_MANIFEST)
    assert (hub.status, sha(hub.body)) == (200, seeded.web_digest)
    short = seeded.client.get("/v2/web/manifests/1", Accept=DOCKER_MANIFEST)  # Docker's "web"
    assert (short.status, sha(short.body)) == (200, seeded.web_digest)


@pytest.mark.parametrize(
    ("path", "reference", "accept", "status"),
    [
        # an OCI type must be named, by tag or digest; wildcards are not enough
        ("/v2/library/multi", "1", OCI_INDEX, 200),
        ("/v2/library/multi", "1", f"{OCI_INDEX}; q=0.5", 200),
        ("/v2/library/multi", "1", f"{DOCKER_LIST}, {DOCKER_MANIFEST}", 404),
        ("/v2/library/multi", "1", "*/*", 404),
        ("/v2/library/multi", "1", None, 404),
        ("/v2/library/multi", "digest", None, 404),
        (DEMO, "1", OCI_MANIFEST, 200),
        (DEMO, "1", DOCKER_MANIFEST, 404),
        # a Docker type by tag must be named; by digest it is served regardless
        ("/v2/library/web", "1", DOCKER_MANIFEST, 200),
        ("/v2/library/web", "1", OCI_MANIFEST, 404),
        ("/v2/library/web", "1", None, 404),
        ("/v2/library/web", "digest", None, 200),
        ("/v2/library/web", "digest", OCI_MANIFEST, 200),
    ],
)
def test_accept_negotiation_as_distribution_does_it(
    seeded: Seeded, path: str, reference: str, accept: str | None, status: int
) -> None:
    if reference == "digest":
        reference = seeded.multi_digest if "multi" in path else seeded.web_digest
    answer = seeded.client.get(
        f"{path}/manifests/{reference}", **({"Accept": accept} if accept else {})
    )
    assert answer.status == status, answer.body
    if status == 404:
        assert answer.error_codes() == ["MANIFEST_UNKNOWN"]


def test_blobs_whole_head_and_ranges(seeded: Seeded) -> None:
    digest = layer_digest(seeded, DEMO, "1")  # over 2 MiB: several reads
    whole = seeded.client.get(f"{DEMO}/blobs/{digest}")
    assert whole.status == 200
    assert sha(whole.body) == digest == whole.headers["Docker-Content-Digest"]
    size = len(whole.body)
    assert size > 2 << 20
    assert int(whole.headers["Content-Length"]) == size
    assert whole.headers["Accept-Ranges"] == "bytes"
    head = seeded.client.request("HEAD", f"{DEMO}/blobs/{digest}")
    assert (head.status, head.body, int(head.headers["Content-Length"])) == (200, b"", size)
    assert head.headers["Docker-Content-Digest"] == digest
    middle = (size // 2, size // 2 + (1 << 20) + 9)  # across a read boundary
    for header, first, last in [
        ("bytes=0-9", 0, 9),
        (f"bytes={middle[0]}-{middle[1]}", *middle),
        ("bytes=100-", 100, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=5-{size * 2}", 5, size - 1),  # an end past the blob's is cut to it
        (f"bytes=-{size + 10}", 0, size - 1),
    ]:
        part = seeded.client.get(f"{DEMO}/blobs/{digest}", Range=header)
        assert part.status == 206, header
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert part.body == whole.body[first : last + 1], header
        assert int(part.headers["Content-Length"]) == last - first + 1
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        refused = seeded.client.get(f"{DEMO}/blobs/{digest}", Range=unsatisfiable)
        assert refused.status == 416, unsatisfiable
        assert refused.headers["Content-Range"] == f"bytes */{size}"
        assert refused.error_codes() == ["RANGE_INVALID"]
    for ignored in ("bytes=9-3", "items=0-5", "bytes=0-1,5-6"):  # RFC 9110: served whole
        answer = seeded.client.get(f"{DEMO}/blobs/{digest}", Range=ignored)
        assert (answer.status, answer.body) == (200, whole.body), ignored


def test_configs_and_layers_of_every_image_hash_to_their_digests(seeded: Seeded) -> None:
    for path, reference in [
        ("/v2/library/web", "1"),
        ("/v2/library/multi", seeded.arm.manifest.digest),
        (DEMO, "1"),
    ]:
        document = manifest_json(seeded, path, reference)
        layers = document["layers"]
        assert isinstance(layers, list)
        for descriptor in [document["config"], *layers]:
            assert isinstance(descriptor, dict)
            answer = seeded.client.get(f"{path}/blobs/{descriptor['digest']}")
            assert answer.status == 200
            assert (sha(answer.body), len(answer.body)) == (
                descriptor["digest"],
                descriptor["size"],
            )


def next_link(answer: object) -> str | None:
    assert hasattr(answer, "headers")
    link = answer.headers.get("Link")
    if link is None:
        return None
    match = re.fullmatch(r'<(/v2/[^>]+)>; rel="next"', link)
    assert match, link
    return match[1]


def test_tags_list_pages_follow_the_link_header(seeded: Seeded) -> None:
    everything = seeded.client.get("/v2/library/web/tags/list")
    assert everything.status == 200
    assert everything.json() == {"name": "library/web", "tags": WEB_TAGS}
    assert "Link" not in everything.headers
    first = seeded.client.get("/v2/library/web/tags/list?n=2")
    assert first.json() == {"name": "library/web", "tags": ["1", "2"]}
    assert next_link(first) == "/v2/library/web/tags/list?n=2&last=2"
    pages: list[list[str]] = []
    path: str | None = "/v2/library/web/tags/list?n=2"
    while path is not None:
        answer = seeded.client.get(path)
        document = answer.json()
        assert isinstance(document, dict)
        pages.append(document["tags"])
        path = next_link(answer)
    assert pages == [["1", "2"], ["3", "4"], ["latest"]]
    assert seeded.client.get("/v2/library/web/tags/list?n=2&last=3").json() == {
        "name": "library/web", "tags": ["4", "latest"],
    }  # fmt: skip
    assert seeded.client.get("/v2/library/web/tags/list?n=0").json() == {
        "name": "library/web", "tags": [],
    }  # fmt: skip
    assert seeded.client.get("/v2/library/web/tags/list?n=999999").json() == everything.json()
    refused = seeded.client.get("/v2/library/web/tags/list?n=many")
    assert (refused.status, refused.error_codes()) == (400, ["PAGINATION_NUMBER_INVALID"])
    digest_only = seeded.client.get(f"{DEMO}/tags/list")
    assert digest_only.json() == {"name": "127.0.0.1_5000/demo/app", "tags": ["1"]}


def test_catalog_pages_list_each_repository_once(seeded: Seeded) -> None:
    expected = {"library/web", "library/multi", "127.0.0.1_5000/demo/app"}
    everything = seeded.client.get("/v2/_catalog")
    assert everything.status == 200
    document = everything.json()
    assert isinstance(document, dict)
    assert sorted(document["repositories"]) == sorted(expected)
    listed: list[str] = []
    path: str | None = "/v2/_catalog?n=1"
    while path is not None:
        answer = seeded.client.get(path)
        page = answer.json()
        assert isinstance(page, dict)
        assert len(page["repositories"]) <= 1
        listed += page["repositories"]
        path = next_link(answer)
    assert listed == document["repositories"]


def test_referrers_is_an_empty_index_for_a_manifest_under_the_name(seeded: Seeded) -> None:
    for digest in (seeded.multi_digest, seeded.arm.manifest.digest):
        answer = seeded.client.get(f"/v2/library/multi/referrers/{digest}")
        assert answer.status == 200
        assert answer.headers["Content-Type"] == OCI_INDEX
        assert answer.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    filtered = seeded.client.get(
        f"/v2/library/multi/referrers/{seeded.multi_digest}?artifactType=application/x-sig"
    )
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    elsewhere = seeded.client.get(f"/v2/library/multi/referrers/{seeded.web_digest}")
    assert (elsewhere.status, elsewhere.error_codes()) == (404, ["MANIFEST_UNKNOWN"])
    nowhere = seeded.client.get(f"/v2/library/nothing/referrers/{seeded.web_digest}")
    assert (nowhere.status, nowhere.error_codes()) == (404, ["NAME_UNKNOWN"])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/library/nothing/manifests/1", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/library/nothing/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", f"/v2/library/nothing/blobs/sha256:{'a' * 64}", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/library/web/manifests/9", 404, "MANIFEST_UNKNOWN"),
        ("HEAD", "/v2/library/web/manifests/9", 404, None),
        ("GET", f"/v2/library/web/manifests/sha256:{'a' * 64}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/library/web/blobs/sha256:{'a' * 64}", 404, "BLOB_UNKNOWN"),
        ("HEAD", f"/v2/library/web/blobs/sha256:{'a' * 64}", 404, None),
        ("GET", "/v2/library/web/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", f"/v2/library/web/blobs/md5:{'a' * 32}", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/web/manifests/sha256:xyz", 400, "DIGEST_INVALID"),
        ("GET", "/v2/Library/Web/manifests/1", 400, "NAME_INVALID"),
        ("GET", "/v2/library/web--/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/_catalog?last=Not/Valid", 400, "NAME_INVALID"),
        ("GET", "/v2/library/web/manifests/1?ns=not%20a%20host", 400, "NAME_INVALID"),
        # push and delete are off: every method of the push category
        ("PUT", "/v2/library/web/manifests/1", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/library/web/manifests/1", 405, "UNSUPPORTED"),
        ("DELETE", f"/v2/library/web/blobs/sha256:{'a' * 64}", 405, "UNSUPPORTED"),
        ("POST", "/v2/library/web/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PATCH", "/v2/library/web/blobs/uploads/some-session", 405, "UNSUPPORTED"),
        ("PUT", "/v2/library/web/blobs/uploads/some-session", 405, "UNSUPPORTED"),
        ("POST", "/v2/", 405, "UNSUPPORTED"),
        ("GET", "/v2/library/web/nothing-here", 404, "NAME_UNKNOWN"),
    ],
)
def test_each_error_code_with_its_status_and_body(
    seeded: Seeded, method: str, path: str, status: int, code: str | None
) -> None:
    answer = seeded.client.request(method, path, {"Accept": ACCEPT_ALL})
    assert answer.status == status, answer.body
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if code is None:  # a HEAD: the headers of the error, no body
        assert answer.body == b""
        assert answer.headers["Content-Type"].startswith("application/json")
    else:
        assert answer.error_codes() == [code]
        entry = json.loads(answer.body)["errors"][0]
        assert entry["message"]


def test_every_request_has_an_access_line(seeded: Seeded) -> None:
    seeded.client.get("/v2/library/web/tags/list?n=1", X_Request_Id="traced-request-1")

    def logged() -> list[str]:
        return [
            line for line in seeded.server.stderr_lines if "request_id=traced-request-1" in line
        ]

    wait_until(lambda: bool(logged()))
    (line,) = logged()
    assert 'imagestore.http http method=GET path="/v2/library/web/tags/list?n=1" status=200' in line
    assert re.search(r"bytes_out=\d+ duration_ms=[\d.]+ peer=127\.0\.0\.1:\d+ ", line), line


def test_a_corrupt_blob_is_cut_short_and_marked(tmp_path: Path) -> None:
    """A whole GET re-hashes the blob as it goes: a corrupt one never reaches
    the client whole (the connection is cut before the last read), and the
    store marks it damaged, so the next request finds it gone."""
    from imagestore.store.store import Store

    root = tmp_path / "root"
    with Store.open(root) as store:
        built = build_image(store, [big_layer(5 << 19, seed=11)], names=["victim:1"])
    digest = built.layers[0].digest
    path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF  # the same size: only the hash can tell
    path.chmod(0o600)
    path.write_bytes(bytes(damaged))
    server = start_registry_server(root)
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        connection = client.connection()
        connection.request("GET", f"/v2/library/victim/blobs/{digest}")
        response = connection.getresponse()
        assert response.status == 200
        declared = int(response.headers["Content-Length"])
        assert declared == len(damaged)
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert len(cut.value.partial) < declared  # the last read was held back
        connection.close()
        again = client.get(f"/v2/library/victim/blobs/{digest}")
        assert (again.status, again.error_codes()) == (404, ["BLOB_UNKNOWN"])
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            stat = stub.StatBlob(pb.StatBlobRequest(digest=digest))
            assert stat.damage == "corrupt-blob"
        wait_until(
            lambda: any("aborted=" in line and digest in line for line in server.stderr_lines)
        )
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_sigterm_lets_a_response_in_flight_finish(tmp_path: Path) -> None:
    """The endpoint stops with the gRPC server: no new connection is taken,
    and a blob being sent has the grace period to end (whole)."""
    from imagestore.store.store import Store

    root = tmp_path / "root"
    with Store.open(root) as store:
        built = build_image(store, [big_layer(16 << 20, seed=13)], names=["big:1"])
    digest = built.layers[0].digest
    server = start_registry_server(root, "--grace-period", "60s")  # the body's time
    assert server.registry_address is not None
    client = Client(server.registry_address)
    held = HeldDownload(server.registry_address, f"/v2/library/big/blobs/{digest}")
    held.read_head()
    assert held.status == 200
    server.process.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            client.get("/v2/")
        except ConnectionError:  # refused; or reset, when the listener closed on it
            return True
        return False

    wait_until(refused)  # the listener closes while the response goes on
    body = held.read_rest()
    assert sha(body) == digest
    assert server.process.wait(60) == 0  # it stops by itself once the response ended
    assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
