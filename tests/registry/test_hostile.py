"""A registry that lies: every fault gets its status code, and the store keeps nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.registry.pull import SMALL_LAYER
from imagestore.registry.socketbody import OFF_LOOP_BODY
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server, wait_until
from tests.api.test_service import check_summary, error_info
from tests.archives import sha, tar_of
from tests.registry.conftest import FAST_RETRIES, Stub, pull, stop_cleanly
from tests.registry.hostile import NESTED_JSON, HostileRegistry, Image, make_image

MAX_LAYER = 16 << 20
#: second layers of each size class a pull reads differently: whole (small), streamed
#: through aiohttp, and read off the event loop straight from the socket (large)
SIZES = {
    "whole": 10240,
    "streamed": 2 * SMALL_LAYER,
    "off-loop": 2 * OFF_LOOP_BODY,
}


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        *FAST_RETRIES,
        "--registry-idle-timeout",
        "0.5",
        "--max-layer-size",
        str(MAX_LAYER),
    )
    yield running
    stop_cleanly(running)


def _image(second: int | None = None) -> Image:
    """Two layers; the second of about ``second`` bytes compressed (incompressible
    noise), or a small one by default."""
    if second is None:
        return make_image(
            [tar_of({"etc/a": b"a" * 5000}), tar_of({"bin/b": bytes(range(256)) * 40})]
        )
    noise = hashlib.shake_256(b"noise %d" % second).digest(second)
    return make_image([tar_of({"etc/a": b"a" * 5000}), tar_of({"bin/b": noise})])


def _assert_nothing_kept(stub: Stub, server: Server) -> None:
    assert not list(stub.ListImages(pb.ListImagesRequest(all=True)).images)
    assert check_summary(stub).ok
    assert stub.Prune(pb.PruneRequest(all=True)).reclaimed_bytes == 0
    assert not list((server.root / "blobs" / "sha256").iterdir())
    assert not list((server.root / "blobs" / "ingest").iterdir())


def _fails(stub: Stub, image: str, code: grpc.StatusCode, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, image, timeout=timeout)
    assert caught.value.code() == code, caught.value.details()
    if code != grpc.StatusCode.DEADLINE_EXCEEDED:
        assert error_info(caught.value).domain == "imagestore"
    return caught.value


def _second_layer(image: Image) -> str:
    return image.layer_digests[1]


BLOB_FAULTS: list[tuple[str, grpc.StatusCode, str]] = [
    ("wrong-bytes", grpc.StatusCode.DATA_LOSS, "digest mismatch"),
    ("truncate", grpc.StatusCode.DATA_LOSS, "ended after"),
    ("fail:99", grpc.StatusCode.UNAVAILABLE, "try again later"),
    ("redirect-loop", grpc.StatusCode.UNAVAILABLE, "redirects"),
    ("stall", grpc.StatusCode.UNAVAILABLE, "stopped answering"),
]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(("fault", "code", "text"), BLOB_FAULTS)
def test_a_bad_blob_is_refused_and_nothing_is_kept(
    stub: Stub,
    server: Server,
    hostile: HostileRegistry,
    fault: str,
    code: grpc.StatusCode,
    text: str,
    size: str,
) -> None:
    image = _image(SIZES[size])
    hostile.add_image("bad/blob", "1", image)
    layer = _second_layer(image)
    hostile.faults[layer] = fault
    error = _fails(stub, f"{hostile.host}/bad/blob:1", code)
    assert text in str(error.details())
    _assert_names(error, layer)
    _assert_nothing_kept(stub, server)


def _assert_names(error: grpc.RpcError, digest: str) -> None:
    """The error names the blob it concerns: in its message and its ErrorInfo."""
    assert digest in str(error.details())
    assert error_info(error).metadata["digest"] == digest


def test_a_layer_with_data_after_its_gzip_stream_is_refused_naming_it(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = _image()
    layers = [image.layers[0], image.layers[1] + b"trailing garbage"]
    document = json.loads(image.manifest)
    document["layers"][1].update(digest=sha(layers[1]), size=len(layers[1]))
    body = json.dumps(document).encode()
    hostile.add_image("bad/trailing", "ok", image)
    hostile.blobs[sha(layers[1])] = layers[1]
    hostile.add_manifest("bad/trailing", "1", body, "application/vnd.oci.image.manifest.v1+json")
    error = _fails(stub, f"{hostile.host}/bad/trailing:1", grpc.StatusCode.DATA_LOSS)
    assert error_info(error).reason == "TRAILING_DATA"
    assert "after gzip member" in str(error.details())
    _assert_names(error, sha(layers[1]))
    _assert_nothing_kept(stub, server)


def test_a_layer_that_unpacks_to_another_diff_id_is_refused(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    tars = [tar_of({"a": b"a"}), tar_of({"b": b"b"})]
    image = make_image(tars, diff_ids=[sha(tars[0]), sha(b"other")])
    hostile.add_image("bad/diffid", "1", image)
    error = _fails(stub, f"{hostile.host}/bad/diffid:1", grpc.StatusCode.DATA_LOSS)
    assert "but the image config says" in str(error.details())
    _assert_names(error, image.layer_digests[1])
    _assert_nothing_kept(stub, server)


def test_a_gzip_bomb_beyond_the_layer_cap_is_refused(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    bomb = tar_of({"zeros": bytes(8 * MAX_LAYER)})
    image = make_image([bomb])
    assert len(image.layers[0]) < MAX_LAYER // 16  # small on the wire, large unpacked
    hostile.add_image("bad/bomb", "1", image)
    error = _fails(stub, f"{hostile.host}/bad/bomb:1", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error_info(error).reason == "SIZE_LIMIT_EXCEEDED"
    _assert_names(error, image.layer_digests[0])
    _assert_nothing_kept(stub, server)


def _manifest_with(**changes: object) -> bytes:
    document = json.loads(_image().manifest)
    document.update(changes)
    return json.dumps(document).encode()


MANIFEST_FAULTS: list[tuple[str, Callable[[], tuple[bytes, str]], grpc.StatusCode]] = [
    (
        "huge",
        lambda: (
            _manifest_with(annotations={"pad": "x" * (5 << 20)}),
            "application/vnd.oci.image.manifest.v1+json",
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    (
        "schema1",
        lambda: (
            json.dumps(
                {"schemaVersion": 1, "name": "bad/schema1", "tag": "1", "fsLayers": []}
            ).encode(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    (
        "path-digest",
        lambda: (
            _manifest_with(
                layers=[
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": "sha256:../../../../etc/passwd",
                        "size": 10,
                    }
                ]
            ),
            "application/vnd.oci.image.manifest.v1+json",
        ),
        grpc.StatusCode.DATA_LOSS,
    ),
    (
        "not-json",
        lambda: (b"<html>oops</html>", "application/vnd.oci.image.manifest.v1+json"),
        grpc.StatusCode.DATA_LOSS,
    ),
    (
        "nested-json",
        lambda: (NESTED_JSON, "application/vnd.oci.image.manifest.v1+json"),
        grpc.StatusCode.DATA_LOSS,
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code"), MANIFEST_FAULTS, ids=[c[0] for c in MANIFEST_FAULTS]
)
def test_a_bad_manifest_is_refused_and_nothing_is_kept(
    stub: Stub,
    server: Server,
    hostile: HostileRegistry,
    case: str,
    make: Callable[[], tuple[bytes, str]],
    code: grpc.StatusCode,
) -> None:
    body, media_type = make()
    image = _image()
    hostile.add_image(f"bad/{case}", "ok", image)  # its blobs are there to be fetched
    hostile.add_manifest(f"bad/{case}", "1", body, media_type)
    _fails(stub, f"{hostile.host}/bad/{case}:1", code)
    _assert_nothing_kept(stub, server)


def test_server_errors_are_retried_until_the_blob_comes(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = _image()
    hostile.add_image("flaky/app", "1", image)
    hostile.faults[_second_layer(image)] = "fail:2"
    pulled = pull(stub, f"{hostile.host}/flaky/app:1")
    assert list(pulled.last.image_ids) == [image.config_digest]
    retries = [e for e in pulled.events if e.phase == pb.PHASE_RETRYING]
    assert len(retries) == 2  # two 500s, then the blob
    for line in retries:
        assert line.text.startswith("Retrying in")
        assert line.blob.digest == _second_layer(image)
        assert line.subject == _second_layer(image).removeprefix("sha256:")[:12]
        assert line.HasField("retry_after")
        assert 0 < line.retry_after.ToNanoseconds() < 10**9  # --registry-backoff 0.01
    assert hostile.downloads(_second_layer(image)) == 3
    assert check_summary(stub).ok


@pytest.mark.parametrize("size", ["streamed", "off-loop"])
def test_a_download_cut_off_midway_resumes_with_range(
    stub: Stub, server: Server, hostile: HostileRegistry, size: str
) -> None:
    # larger than SMALL_LAYER once compressed: streamed, so resumable
    noise = hashlib.shake_256(b"cut").digest(SIZES[size])
    image = make_image([tar_of({"big": noise})])
    layer = image.layer_digests[0]
    assert len(hostile_blob(image, layer)) > SMALL_LAYER
    hostile.add_image("cut/app", "1", image)
    hostile.faults[layer] = "drop-once"
    pulled = pull(stub, f"{hostile.host}/cut/app:1")
    assert list(pulled.last.image_ids) == [image.config_digest]
    first, second = hostile.ranges[layer]
    assert first == ""
    # from where the file ended: at most the half the registry sent, and not nothing
    start = int(second.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(hostile_blob(image, layer)) // 2
    assert check_summary(stub).ok


def test_a_small_layer_cut_off_midway_is_fetched_again_whole(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = make_image([tar_of({"small": bytes(range(256)) * 2048})])
    layer = image.layer_digests[0]
    assert len(hostile_blob(image, layer)) <= SMALL_LAYER  # read whole, stored in one step
    hostile.add_image("cut/small", "1", image)
    hostile.faults[layer] = "drop-once"
    pulled = pull(stub, f"{hostile.host}/cut/small:1")
    assert list(pulled.last.image_ids) == [image.config_digest]
    assert hostile.ranges[layer] == ["", ""]
    assert check_summary(stub).ok


def hostile_blob(image: Image, digest: str) -> bytes:
    return image.layers[image.layer_digests.index(digest)]


@pytest.mark.parametrize("size", list(SIZES))
def test_a_stalled_registry_meets_the_callers_deadline(
    stub: Stub, server: Server, hostile: HostileRegistry, size: str
) -> None:
    image = _image(SIZES[size])
    hostile.add_image("stall/app", "1", image)
    hostile.faults[_second_layer(image)] = "stall"
    _fails(stub, f"{hostile.host}/stall/app:1", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.3)
    # the cancelled pull cleans up after itself
    _wait_for_empty(server)
    _assert_nothing_kept(stub, server)


def _wait_for_empty(server: Server) -> None:
    wait_until(lambda: not list((server.root / "blobs" / "ingest").iterdir()))


def test_a_layer_larger_than_its_descriptor_says_is_refused(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = _image()
    document = json.loads(image.manifest)
    document["layers"][1]["size"] -= 100
    body = json.dumps(document).encode()
    hostile.add_image("bad/size", "ok", image)
    hostile.add_manifest("bad/size", "1", body, "application/vnd.oci.image.manifest.v1+json")
    _fails(stub, f"{hostile.host}/bad/size:1", grpc.StatusCode.DATA_LOSS)
    _assert_nothing_kept(stub, server)


def test_a_registrys_retry_after_is_the_retrying_lines_delay(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = _image()
    hostile.add_image("later/app", "1", image)
    hostile.faults[_second_layer(image)] = "retry-after:1"
    lines: list[pb.Progress] = []
    request = pb.PullRequest(image=f"{hostile.host}/later/app:1")
    with pytest.raises(grpc.RpcError) as caught:
        lines.extend(m.progress for m in stub.Pull(request, timeout=60))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    retries = [e for e in lines if e.phase == pb.PHASE_RETRYING]
    assert len(retries) == 2  # --registry-attempts 3
    for line in retries:
        assert (line.text, line.retry_after.ToTimedelta().total_seconds()) == (
            "Retrying in 1 second",
            1.0,
        )
        assert line.blob.digest == _second_layer(image)
    _assert_nothing_kept(stub, server)


def test_pull_all_tags_follows_the_registrys_pages(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    image = _image()
    tags = [f"v{n}" for n in range(5)]
    for tag in tags:
        hostile.add_image("paged/app", tag, image)
    hostile.tag_page_size = 2
    pulled = pull(stub, f"{hostile.host}/paged/app", all_tags=True)
    assert [t.name.familiar for t in pulled.last.tags] == [
        f"{hostile.host}/paged/app:{tag}" for tag in tags
    ]
    assert hostile.requests[("GET", "paged/app/tags/list")] == 3
    assert [t.updated for t in pulled.last.tags] == [True] * 5  # each adds its name
    assert list(pulled.last.image_ids) == [image.config_digest]


def test_a_tag_list_that_pages_forever_is_refused(
    stub: Stub, server: Server, hostile: HostileRegistry
) -> None:
    hostile.add_image("looping/app", "1", _image())
    hostile.tag_link_loop = True
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, f"{hostile.host}/looping/app", all_tags=True)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "a page without new tags links on" in str(caught.value.details())
    assert error_info(caught.value).reason == "REGISTRY_RESPONSE_INVALID"
    assert hostile.requests[("GET", "looping/app/tags/list")] == 2
    _assert_nothing_kept(stub, server)


@pytest.mark.parametrize(
    ("link", "body", "why"),
    [
        ('<http://[::1/v2/x>; rel="next"', None, "the next page's address is invalid"),
        ('<http://host:port/v2/x>; rel="next"', None, "the next page's address is invalid"),
        (None, NESTED_JSON, "not JSON"),
    ],
    ids=["bracket", "port", "nested"],
)
def test_a_tag_list_with_a_bad_link_or_body_is_refused(
    stub: Stub, server: Server, hostile: HostileRegistry, link: str | None, body: bytes | None,
    why: str,
) -> None:  # fmt: skip
    hostile.add_image("badlist/app", "1", _image())
    hostile.tag_link, hostile.tag_body = link, body
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, f"{hostile.host}/badlist/app", all_tags=True)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert why in str(caught.value.details())
    assert error_info(caught.value).reason == "REGISTRY_RESPONSE_INVALID"
    _assert_nothing_kept(stub, server)


def test_tag_lists_past_the_bytes_per_pull_are_refused(
    tmp_path: Path, hostile: HostileRegistry
) -> None:
    image = _image()
    for number in range(400):  # ~5.3 KB a page of 100: the second goes past 8 KiB
        hostile.add_image("crowded/app", f"tag-{number:04d}-{'x' * 40}", image)
    hostile.tag_page_size = 100
    limited = start_server(
        tmp_path / "limited",
        "--listen",
        "127.0.0.1:0",
        *FAST_RETRIES,
        "--max-manifest-bytes-per-pull",
        "8192",
    )
    try:
        with grpc.insecure_channel(limited.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                pull(stub, f"{hostile.host}/crowded/app", all_tags=True)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-manifest-bytes-per-pull" in str(caught.value.details())
            info = error_info(caught.value)
            assert (info.reason, info.metadata["limit"]) == ("SIZE_LIMIT_EXCEEDED", "8192")
            assert hostile.requests[("GET", "crowded/app/tags/list")] == 2
            first_tag = f"tag-0000-{'x' * 40}"
            assert hostile.requests[("GET", first_tag)] == 0  # refused before any pull
            _assert_nothing_kept(stub, limited)
    finally:
        stop_cleanly(limited)
