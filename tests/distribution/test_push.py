"""The push category against the real server, with a client of our own
(http.client): upload sessions (monolithic, chunked, resumed, cancelled,
expired, mounted), manifest PUT and its refusals, DELETE, and what the store
shows over gRPC afterwards (Inspect, Check, WatchEvents)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import wait_until
from tests.api.test_events import Watcher
from tests.archives import sha
from tests.distribution.conftest import (
    ACCEPT_ALL,
    Answer,
    Client,
    Pushing,
    start_push_server,
    start_registry_server,
)
from tests.store.builders import layer_tar

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
UPLOADS = "/v2/{path}/blobs/uploads/"


@dataclass
class Image:
    """An image as a client pushes it: gzip layers, config, manifest."""

    layers: list[bytes]
    config: bytes
    manifest: bytes

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data)}


def index_entry(image: Image, architecture: str) -> dict[str, object]:
    entry = descriptor(OCI_MANIFEST, image.manifest)
    entry["platform"] = {"os": "linux", "architecture": architecture}
    return entry


def make_image(seed: str, architecture: str = "amd64", layers: int = 2) -> Image:
    tars = [layer_tar({f"{seed}/{n}": f"{seed} {n}\n".encode() * 500}) for n in range(layers)]
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
        }
    ).encode()
    compressed = [gzip.compress(t, mtime=0) for t in tars]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER_GZIP, layer) for layer in compressed],
        }
    ).encode()
    return Image(compressed, config, manifest)


def monolithic(client: Client, path: str, blob: bytes, digest: str | None = None) -> Answer:
    return client.request(
        "POST",
        UPLOADS.format(path=path) + f"?digest={digest or sha(blob)}",
        {"Content-Type": "application/octet-stream"},
        blob,
    )


def start(client: Client, path: str) -> Answer:
    answer = client.request("POST", UPLOADS.format(path=path))
    assert answer.status == 202, answer.body
    return answer


def chunk(client: Client, location: str, data: bytes, first: int | None) -> Answer:
    headers = {"Content-Type": "application/octet-stream"}
    if first is not None:
        headers["Content-Range"] = f"{first}-{first + len(data) - 1}"
    return client.request("PATCH", location, headers, data)


def finish(client: Client, location: str, digest: str, data: bytes = b"") -> Answer:
    return client.request("PUT", f"{location}?digest={digest}", {}, data)


def put_manifest(client: Client, path: str, reference: str, body: bytes, media_type: str) -> Answer:
    return client.request(
        "PUT", f"/v2/{path}/manifests/{reference}", {"Content-Type": media_type}, body
    )


def push_image(client: Client, path: str, tag: str, image: Image) -> Answer:
    for blob in image.blobs:
        assert monolithic(client, path, blob).status == 201
    return put_manifest(client, path, tag, image.manifest, OCI_MANIFEST)


def ingests(pushing: Pushing) -> list[Path]:
    return list((pushing.server.root / "blobs" / "ingest").iterdir())


def inspect(stub: pb_grpc.ImageStoreServiceStub, name: str) -> pb.InspectResponse:
    answer: pb.InspectResponse = stub.Inspect(pb.InspectRequest(image=name, include_raw=True))
    return answer


def stored(stub: pb_grpc.ImageStoreServiceStub, digest: str) -> bytes | None:
    try:
        return b"".join(m.chunk for m in stub.ReadBlob(pb.ReadBlobRequest(digest=digest)))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None


def check_clean(stub: pb_grpc.ImageStoreServiceStub) -> None:
    events = list(stub.Check(pb.CheckRequest(), timeout=60))
    problems = [e.problem for e in events if e.HasField("problem")]
    summary = events[-1].summary
    assert (problems, summary.ok) == ([], True)


# ---- blob uploads ----------------------------------------------------------------------


def test_a_monolithic_push_is_visible_over_grpc_with_the_same_digests_and_watched(
    pushing: Pushing,
) -> None:
    image = make_image("mono")
    watcher = Watcher(pushing.stub, pb.WatchEventsRequest())
    try:
        watcher.wait_caught_up()
        first = monolithic(pushing.client, "demo/mono", image.config)
        assert (first.status, first.body) == (201, b"")
        assert first.headers["Location"] == f"/v2/demo/mono/blobs/{sha(image.config)}"
        assert first.headers["Docker-Content-Digest"] == sha(image.config)
        answer = push_image(pushing.client, "demo/mono", "1", image)
        assert answer.status == 201, answer.body
        assert answer.headers["Docker-Content-Digest"] == image.digest
        assert answer.headers["Location"] == f"/v2/demo/mono/manifests/{image.digest}"
        watcher.wait_count(1)
        event = watcher.events[0]
        assert pb.EventKind.Name(event.kind) == "EVENT_KIND_LOAD"
        assert (event.image_id, event.target_digest) == (sha(image.config), image.digest)
        assert event.name.familiar == "demo/mono:1"
    finally:
        watcher.stop()
    shown = inspect(pushing.stub, "demo/mono:1")
    assert shown.manifest.digest == image.digest
    assert shown.image.id == sha(image.config)
    assert [layer.digest for layer in shown.layers] == [sha(layer) for layer in image.layers]
    assert shown.raw_manifest == image.manifest
    assert {n.familiar for n in shown.image.repo_digests} == {f"demo/mono@{image.digest}"}
    # and it is served back, by tag and by digest
    served = pushing.client.get("/v2/demo/mono/manifests/1", Accept=ACCEPT_ALL)
    assert (served.status, served.body) == (200, image.manifest)
    blob = pushing.client.get(f"/v2/demo/mono/blobs/{sha(image.layers[1])}")
    assert (blob.status, blob.body) == (200, image.layers[1])


def test_a_chunked_upload_with_content_ranges_and_a_last_chunk_on_put(pushing: Pushing) -> None:
    blob = make_image("chunked", layers=1).layers[0] * 3
    assert len(blob) > 300
    opened = start(pushing.client, "demo/chunked")
    location = opened.headers["Location"]
    assert location.startswith("/v2/demo/chunked/blobs/uploads/")
    assert opened.headers["Range"] == "0-0"
    assert location.endswith(opened.headers["Docker-Upload-UUID"])
    one = chunk(pushing.client, location, blob[:100], 0)
    assert (one.status, one.headers["Range"]) == (202, "0-99")
    two = chunk(pushing.client, one.headers["Location"], blob[100:250], 100)
    assert (two.status, two.headers["Range"]) == (202, "0-249")
    done = finish(pushing.client, two.headers["Location"], sha(blob), blob[250:])
    assert done.status == 201, done.body
    assert done.headers["Docker-Content-Digest"] == sha(blob)
    assert stored(pushing.stub, sha(blob)) == blob
    # the session is over
    assert pushing.client.get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]


def test_chunks_without_content_range_are_appended(pushing: Pushing) -> None:
    blob = b"plain bytes, not compressed: " * 40
    location = start(pushing.client, "demo/append").headers["Location"]
    assert chunk(pushing.client, location, blob[:7], None).headers["Range"] == "0-6"
    assert chunk(pushing.client, location, blob[7:], None).headers["Range"] == f"0-{len(blob) - 1}"
    assert finish(pushing.client, location, sha(blob)).status == 201
    assert stored(pushing.stub, sha(blob)) == blob


def test_an_out_of_order_chunk_is_416_and_the_session_goes_on(pushing: Pushing) -> None:
    blob = b"0123456789" * 20
    location = start(pushing.client, "demo/order").headers["Location"]
    assert chunk(pushing.client, location, blob[:50], 0).status == 202
    skipped = chunk(pushing.client, location, blob[60:], 60)
    assert (skipped.status, skipped.error_codes()) == (416, ["RANGE_INVALID"])
    assert skipped.headers["Range"] == "0-49"
    again = chunk(pushing.client, location, blob[:10], 0)  # a chunk sent twice
    assert (again.status, again.headers["Range"]) == (416, "0-49")
    assert chunk(pushing.client, location, blob[50:], 50).status == 202
    assert finish(pushing.client, location, sha(blob)).status == 201


def test_get_of_a_session_reports_its_range_to_resume_from(pushing: Pushing) -> None:
    blob = b"resumable " * 100
    location = start(pushing.client, "demo/resume").headers["Location"]
    empty = pushing.client.get(location)
    assert (empty.status, empty.headers["Range"], empty.body) == (204, "0-0", b"")
    assert chunk(pushing.client, location, blob[:333], 0).status == 202
    status = pushing.client.get(location)
    assert (status.status, status.headers["Range"]) == (204, "0-332")
    assert status.headers["Location"] == location
    # a client resumes where the server says it is
    resume_at = int(status.headers["Range"].split("-")[1]) + 1
    assert chunk(pushing.client, location, blob[resume_at:], resume_at).status == 202
    assert finish(pushing.client, location, sha(blob)).status == 201
    assert stored(pushing.stub, sha(blob)) == blob


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_an_upload_goes_on_after_the_server_restarts(tmp_path: Path, sig: int) -> None:
    """A session outlives a stop or a crash of the server: its client asks where
    it is and sends the rest, as after any broken connection; the layer's bytes
    from before the restart are inflated again, so its diff_id is checked."""
    root = tmp_path / "root"
    image = make_image("restart", layers=1)
    layer = image.layers[0]
    half = len(layer) // 2
    server = start_push_server(root)
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        location = start(client, "demo/restart").headers["Location"]
        assert chunk(client, location, layer[:half], 0).status == 202
    finally:
        code = server.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.stderr_lines[-20:]
    server = start_push_server(root)
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        status = client.get(location)
        assert (status.status, status.headers["Range"]) == (204, f"0-{half - 1}")
        assert chunk(client, location, layer[half:], half).status == 202
        assert finish(client, location, sha(layer)).status == 201
        assert monolithic(client, "demo/restart", image.config).status == 201
        pushed = put_manifest(client, "demo/restart", "1", image.manifest, OCI_MANIFEST)
        assert pushed.status == 201, pushed.body
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            shown = inspect(stub, "demo/restart:1")
            assert [layer.digest for layer in shown.layers] == [sha(layer)]
            assert stored(stub, sha(layer)) == layer
            check_clean(stub)
        assert list((root / "blobs" / "ingest").iterdir()) == []
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_each_request_of_a_session_starts_its_idle_time(pushing: Pushing) -> None:
    """Even one that writes nothing: a PUT without a digest leaves the session as
    it was, and its file touched. A session idle past the timeout is removed by
    a prune, though this replica holds it: its next request is 404, not a 500."""
    others = set(ingests(pushing))
    location = start(pushing.client, "demo/idle-time").headers["Location"]
    assert chunk(pushing.client, location, b"abc", 0).status == 202
    (session,) = set(ingests(pushing)) - others
    hours_ago = time.time() - 7200
    os.utime(session, (hours_ago, hours_ago))
    before = time.time()
    refused = pushing.client.request("PUT", location, {}, b"")
    assert (refused.status, refused.error_codes()) == (400, ["DIGEST_INVALID"])
    assert session.stat().st_mtime >= before - 1  # the file system's clock may be coarser
    assert pushing.stub.Prune(pb.PruneRequest()).stale_ingests == 0
    os.utime(session, (hours_ago, hours_ago))
    assert pushing.stub.Prune(pb.PruneRequest()).stale_ingests == 1
    assert not session.exists()
    for method in ("GET", "PATCH", "PUT"):
        gone = pushing.client.request(method, f"{location}?digest={sha(b'abc')}", {}, b"")
        assert (gone.status, gone.error_codes()) == (404, ["BLOB_UPLOAD_UNKNOWN"]), method


def test_delete_cancels_a_session_and_its_ingest(pushing: Pushing) -> None:
    before = set(ingests(pushing))
    location = start(pushing.client, "demo/cancel").headers["Location"]
    assert chunk(pushing.client, location, b"x" * 1000, 0).status == 202
    assert len(set(ingests(pushing)) - before) == 1
    answer = pushing.client.request("DELETE", location)
    assert answer.status == 204
    assert set(ingests(pushing)) <= before
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        gone = pushing.client.request(method, f"{location}?digest={sha(b'x' * 1000)}")
        assert (gone.status, gone.error_codes()) == (404, ["BLOB_UPLOAD_UNKNOWN"]), method
    assert stored(pushing.stub, sha(b"x" * 1000)) is None


def test_a_wrong_digest_on_put_stores_nothing(pushing: Pushing) -> None:
    blob = b"the bytes sent " * 64
    claimed = sha(b"other bytes")
    location = start(pushing.client, "demo/wrong").headers["Location"]
    assert chunk(pushing.client, location, blob, 0).status == 202
    answer = finish(pushing.client, location, claimed)
    assert (answer.status, answer.error_codes()) == (400, ["DIGEST_INVALID"])
    mono = monolithic(pushing.client, "demo/wrong", blob, claimed)
    assert (mono.status, mono.error_codes()) == (400, ["DIGEST_INVALID"])
    assert stored(pushing.stub, claimed) is None
    assert stored(pushing.stub, sha(blob)) is None
    assert pushing.client.get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]
    check_clean(pushing.stub)


def test_bytes_that_claim_to_be_gzip_but_are_not_end_the_upload(pushing: Pushing) -> None:
    """Blobs other than zstd go through the layer decoder (a layer's diff_id is
    recorded as it arrives): a gzip header over garbage is refused at once."""
    location = start(pushing.client, "demo/notgzip").headers["Location"]
    answer = chunk(pushing.client, location, b"\x1f\x8b" + b"\xff" * 4000, 0)
    assert (answer.status, answer.error_codes()) == (400, ["BLOB_UPLOAD_INVALID"])
    assert pushing.client.get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]


def test_unknown_sessions_and_a_session_of_another_repository(pushing: Pushing) -> None:
    unknown = "/v2/demo/x/blobs/uploads/0123456789abcdef0123456789abcdef"
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        answer = pushing.client.request(method, unknown)
        assert (answer.status, answer.error_codes()) == (404, ["BLOB_UPLOAD_UNKNOWN"]), method
    location = start(pushing.client, "demo/mine").headers["Location"]
    elsewhere = location.replace("/demo/mine/", "/demo/theirs/")
    assert pushing.client.get(elsewhere).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]
    assert pushing.client.request("DELETE", location).status == 204


def test_a_put_without_a_digest_keeps_the_session(pushing: Pushing) -> None:
    location = start(pushing.client, "demo/nodigest").headers["Location"]
    answer = pushing.client.request("PUT", location, {}, b"abc")
    assert (answer.status, answer.error_codes()) == (400, ["DIGEST_INVALID"])
    assert pushing.client.get(location).headers["Range"] == "0-0"
    assert pushing.client.request("DELETE", location).status == 204


def test_mount_of_a_stored_blob_and_of_an_absent_one(pushing: Pushing) -> None:
    image = make_image("mount", layers=1)
    assert push_image(pushing.client, "demo/source", "1", image).status == 201
    layer = sha(image.layers[0])
    mounted = pushing.client.request(
        "POST", UPLOADS.format(path="demo/target") + f"?mount={layer}&from=demo/source"
    )
    assert mounted.status == 201, mounted.body
    assert mounted.headers["Location"] == f"/v2/demo/target/blobs/{layer}"
    assert mounted.headers["Docker-Content-Digest"] == layer
    # mounted blobs and the config make the same image under another name
    assert monolithic(pushing.client, "demo/target", image.config).status == 201
    put = put_manifest(pushing.client, "demo/target", "1", image.manifest, OCI_MANIFEST)
    assert put.status == 201, put.body
    absent = sha(b"never uploaded")
    fallback = pushing.client.request(
        "POST", UPLOADS.format(path="demo/target") + f"?mount={absent}&from=demo/source"
    )
    assert fallback.status == 202
    assert fallback.headers["Location"].startswith("/v2/demo/target/blobs/uploads/")
    assert fallback.headers["Range"] == "0-0"
    data = b"never uploaded"
    assert finish(pushing.client, fallback.headers["Location"], absent, data).status == 201


def test_uploaded_blobs_are_kept_through_a_prune_until_their_manifest(pushing: Pushing) -> None:
    image = make_image("kept")
    layer = image.layers[0]
    location = start(pushing.client, "demo/kept").headers["Location"]
    assert chunk(pushing.client, location, layer[:100], 0).status == 202
    for blob in (image.config, image.layers[1]):
        assert monolithic(pushing.client, "demo/kept", blob).status == 201
    pruned = pushing.stub.Prune(pb.PruneRequest())  # unreferenced blobs and stale ingests go
    assert not set(pruned.deleted_blobs) & {sha(blob) for blob in image.blobs}
    assert pruned.stale_ingests == 0  # the open session's ingest is not stale
    assert finish(pushing.client, location, sha(layer), layer[100:]).status == 201
    pushing.stub.Prune(pb.PruneRequest())
    for blob in image.blobs:
        assert stored(pushing.stub, sha(blob)) == blob
    answer = put_manifest(pushing.client, "demo/kept", "1", image.manifest, OCI_MANIFEST)
    assert answer.status == 201, answer.body


# ---- manifests ------------------------------------------------------------------------


def test_a_manifest_with_a_missing_blob_is_refused(pushing: Pushing) -> None:
    image = make_image("missing")
    assert monolithic(pushing.client, "demo/missing", image.config).status == 201
    assert monolithic(pushing.client, "demo/missing", image.layers[0]).status == 201
    answer = put_manifest(pushing.client, "demo/missing", "1", image.manifest, OCI_MANIFEST)
    assert (answer.status, answer.error_codes()) == (400, ["MANIFEST_BLOB_UNKNOWN"])
    assert answer.json()["errors"][0]["detail"] == {"digest": sha(image.layers[1])}  # type: ignore[index]
    assert pushing.client.get("/v2/demo/missing/manifests/1").status == 404


def test_a_manifest_put_by_a_digest_it_does_not_hash_to_is_refused(pushing: Pushing) -> None:
    image = make_image("bydigest")
    for blob in image.blobs:
        assert monolithic(pushing.client, "demo/bydigest", blob).status == 201
    other = sha(b"another manifest")
    wrong = put_manifest(pushing.client, "demo/bydigest", other, image.manifest, OCI_MANIFEST)
    assert (wrong.status, wrong.error_codes()) == (400, ["DIGEST_INVALID"])
    right = put_manifest(
        pushing.client, "demo/bydigest", image.digest, image.manifest, OCI_MANIFEST
    )
    assert right.status == 201, right.body
    shown = inspect(pushing.stub, f"demo/bydigest@{image.digest}")
    assert shown.manifest.digest == image.digest


def test_manifest_media_type_must_agree_and_diff_ids_are_checked(pushing: Pushing) -> None:
    image = make_image("agree")
    for blob in image.blobs:
        assert monolithic(pushing.client, "demo/agree", blob).status == 201
    index_type = put_manifest(pushing.client, "demo/agree", "1", image.manifest, OCI_INDEX)
    assert (index_type.status, index_type.error_codes()) == (400, ["MANIFEST_INVALID"])
    # a config whose diff_ids the layers do not unpack to
    lying = json.loads(image.config)
    lying["rootfs"]["diff_ids"].reverse()
    config = json.dumps(lying).encode()
    assert monolithic(pushing.client, "demo/agree", config).status == 201
    manifest = json.loads(image.manifest)
    manifest["config"] = descriptor(OCI_CONFIG, config)
    body = json.dumps(manifest).encode()
    refused = put_manifest(pushing.client, "demo/agree", "2", body, OCI_MANIFEST)
    assert (refused.status, refused.error_codes()) == (400, ["MANIFEST_INVALID"])
    assert pushing.client.get("/v2/demo/agree/tags/list").status == 404  # nothing named


def test_an_index_whose_children_are_pushed_first(pushing: Pushing) -> None:
    amd, arm = make_image("multi-amd", "amd64"), make_image("multi-arm", "arm64")
    entries = []
    for image, architecture in ((amd, "amd64"), (arm, "arm64")):
        for blob in image.blobs:
            assert monolithic(pushing.client, "demo/multi", blob).status == 201
        put = put_manifest(pushing.client, "demo/multi", image.digest, image.manifest, OCI_MANIFEST)
        assert put.status == 201, put.body
        entries.append(index_entry(image, architecture))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    answer = put_manifest(pushing.client, "demo/multi", "1", index.encode(), OCI_INDEX)
    assert answer.status == 201, answer.body
    served = pushing.client.get("/v2/demo/multi/manifests/1", Accept=ACCEPT_ALL)
    assert (served.headers["Content-Type"], served.body) == (OCI_INDEX, index.encode())
    images = pushing.stub.ListImages(pb.ListImagesRequest()).images
    listed = {i.id: [x for x in i.indexes if x.name.familiar == "demo/multi:1"] for i in images}
    assert {sha(amd.config), sha(arm.config)} <= {i for i, found in listed.items() if found}
    # an index naming a manifest that is not stored
    ghost = dict(entries[0], digest=sha(b"ghost"))
    missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [ghost]})
    refused = put_manifest(pushing.client, "demo/multi", "2", missing.encode(), OCI_INDEX)
    assert (refused.status, refused.error_codes()) == (400, ["MANIFEST_BLOB_UNKNOWN"])


# ---- deleting -------------------------------------------------------------------------


def test_delete_by_tag_and_by_digest(pushing: Pushing) -> None:
    image = make_image("delete")
    assert push_image(pushing.client, "demo/delete", "1", image).status == 201
    assert (
        put_manifest(pushing.client, "demo/delete", "2", image.manifest, OCI_MANIFEST).status == 201
    )
    untag = pushing.client.request("DELETE", "/v2/demo/delete/manifests/1")
    assert untag.status == 202, untag.body
    tags = pushing.client.get("/v2/demo/delete/tags/list").json()
    assert tags == {"name": "demo/delete", "tags": ["2"]}
    by_digest = f"/v2/demo/delete/manifests/{image.digest}"
    assert pushing.client.get(by_digest, Accept=OCI_MANIFEST).status == 200
    again = pushing.client.request("DELETE", "/v2/demo/delete/manifests/1")
    assert (again.status, again.error_codes()) == (404, ["MANIFEST_UNKNOWN"])
    gone = pushing.client.request("DELETE", f"/v2/demo/delete/manifests/{image.digest}")
    assert gone.status == 202, gone.body
    assert pushing.client.get(by_digest, Accept=OCI_MANIFEST).status == 404
    with pytest.raises(grpc.RpcError) as missing:
        inspect(pushing.stub, sha(image.config))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # blobs are never deleted through the endpoint
    blob = pushing.client.request("DELETE", f"/v2/web/blobs/{sha(image.config)}")
    assert (blob.status, blob.error_codes()) == (405, ["UNSUPPORTED"])


# ---- switched off, expired, bounded ----------------------------------------------------


def test_push_and_delete_are_405_unless_allowed(tmp_path: Path) -> None:
    server = start_registry_server(tmp_path / "root")
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        image = make_image("off", layers=1)
        refused = [
            monolithic(client, "demo/off", image.config),
            client.request("POST", UPLOADS.format(path="demo/off")),
            client.request("PATCH", "/v2/demo/off/blobs/uploads/abc", {}, b"x"),
            put_manifest(client, "demo/off", "1", image.manifest, OCI_MANIFEST),
            client.request("DELETE", "/v2/demo/off/manifests/1"),
        ]
        for answer in refused:
            assert (answer.status, answer.error_codes()) == (405, ["UNSUPPORTED"])
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_an_idle_session_expires_and_its_ingest_is_removed(tmp_path: Path) -> None:
    server = start_push_server(tmp_path / "root", "--registry-upload-timeout", "1s")
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        location = start(client, "demo/idle").headers["Location"]
        assert chunk(client, location, b"y" * 4096, 0).status == 202
        ingest_dir = server.root / "blobs" / "ingest"
        assert len(list(ingest_dir.iterdir())) == 1
        wait_until(lambda: client.get(location).status == 404)
        assert client.get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]
        wait_until(lambda: not list(ingest_dir.iterdir()))
        late = chunk(client, location, b"y", 4096)
        assert (late.status, late.error_codes()) == (404, ["BLOB_UPLOAD_UNKNOWN"])
        # a session's file no replica holds (left by a restart, or by a replica
        # that is gone) goes once idle too
        left = ingest_dir / f"{'f' * 32}-upload-{'0' * 32}"
        left.write_bytes(b"left behind")
        wait_until(lambda: not left.exists())
        # an uploaded blob no manifest took is kept no longer than that either
        blob = b"an orphan upload " * 10
        assert monolithic(client, "demo/idle", blob).status == 201
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            assert stored(stub, sha(blob)) == blob

            def swept() -> bool:
                stub.Prune(pb.PruneRequest())
                return stored(stub, sha(blob)) is None

            wait_until(swept)
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_sessions_and_blob_sizes_are_bounded(tmp_path: Path) -> None:
    server = start_push_server(
        tmp_path / "root", "--registry-max-upload-sessions", "2", "--max-layer-size", "1000"
    )
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        first, _ = start(client, "demo/cap"), start(client, "demo/cap")
        third = client.request("POST", UPLOADS.format(path="demo/cap"))
        assert (third.status, third.error_codes()) == (429, ["TOOMANYREQUESTS"])
        assert third.headers["Retry-After"] == "1"
        location = first.headers["Location"]
        ingest_dir = server.root / "blobs" / "ingest"
        assert len(list(ingest_dir.iterdir())) == 2  # a session's file is made at its start
        assert chunk(client, location, b"z" * 600, 0).status == 202
        too_big = chunk(client, location, b"z" * 401, 600)
        assert (too_big.status, too_big.error_codes()) == (413, ["SIZE_INVALID"])
        assert client.get(location).error_codes() == ["BLOB_UPLOAD_UNKNOWN"]  # cancelled
        assert len(list(ingest_dir.iterdir())) == 1  # the other session's
        assert start(client, "demo/cap").status == 202  # its place is free again
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
