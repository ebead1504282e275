"""Hostile archives sent through Load to the real server, and real content that
must still pass.

Bounds enforced while each attack runs (beside a baseline taken just before):
health and Inspect answer within 2 s; RSS grows by at most 48 MiB (96 MiB for
the attack that fills the in-memory JSON budget of 64 MiB); at most 8 more
threads and 16 more descriptors. Afterwards nothing new is stored.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.archives import (
    ImageSpec,
    docker_archive,
    long_name_archive,
    pax_digits_archive,
    pax_record,
    sha,
    tar_end,
    tar_header,
    tar_member,
    tar_of,
)
from tests.hostile.conftest import MiB, Target, rpc_error
from tests.registry.hostile import NESTED_JSON

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
def server_options() -> tuple[str, ...]:
    return ("--load-max-expanded-bytes", str(256 * MiB))


def gzipped(parts: Iterable[bytes]) -> Iterator[bytes]:
    """Compress a stream of parts as it is sent (the attacks are far bigger raw)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for part in parts:
        if out := compressor.compress(part):
            yield out
    yield compressor.flush()


def send(target: Target, chunks: Iterable[bytes]) -> grpc.RpcError:
    """A Load that must fail; returns its error."""
    requests = (pb.LoadRequest(chunk=chunk) for chunk in chunks)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in target.stub.Load(requests, timeout=120):
            pass
    return caught.value


def json_members(count: int, size: int) -> Iterator[bytes]:
    body = b"{" + b" " * (size - 2) + b"}"
    for i in range(count):
        yield tar_member(b"doc%d.json" % i, body)
    yield tar_end()


def empty_members(count: int) -> Iterator[bytes]:
    batch = 1000
    for start in range(0, count, batch):
        yield b"".join(tar_header(b"e%d" % i, 0) for i in range(start, start + batch))
    yield tar_end()


def gzip_bomb(size: int) -> Iterator[bytes]:
    """A tar of one ``size``-byte file of zeros, as gzip members of 64 MiB each
    (one compressed block, repeated: cheap to send, costly to expand)."""
    yield zlib.compress(tar_header(b"big.bin", size), wbits=31)
    member = zlib.compress(b"\x00" * (64 * MiB), wbits=31)
    for _ in range(size // (64 * MiB)):
        yield member


def _forged(name: str) -> bytes:
    """A docker archive whose RepoTags holds a name Tag would refuse."""
    return docker_archive(ImageSpec(tags=[name], layers=[tar_of({"evil": b"1"})]))


ATTACKS: dict[str, tuple[object, grpc.StatusCode, str, int]] = {
    # name: (chunks, code, reason, RSS bound)
    "pax-digits-gzip": (lambda: [zlib.compress(pax_digits_archive(), wbits=31)], INVALID,
                        "MALFORMED_CONTENT", 48 * MiB),
    "pax-digits-plain": (lambda: [pax_digits_archive(1_000_000)], INVALID, "MALFORMED_CONTENT",
                         48 * MiB),
    "pax-global-digits": (lambda: [tar_member(b"g", b"7" * 500_000, b"g")], INVALID,
                          "MALFORMED_CONTENT", 48 * MiB),
    "gnu-long-name-200MiB": (lambda: [long_name_archive(200 * MiB)], EXHAUSTED,
                             "SIZE_LIMIT_EXCEEDED", 48 * MiB),
    "gnu-long-link-200MiB": (lambda: [tar_header(b"././@LongLink", 200 * MiB, b"K")], EXHAUSTED,
                             "SIZE_LIMIT_EXCEEDED", 48 * MiB),
    "pax-header-200MiB": (lambda: [tar_header(b"././@PaxHeader", 200 * MiB, b"x")], EXHAUSTED,
                          "SIZE_LIMIT_EXCEEDED", 48 * MiB),
    "json-members-100x4MiB": (lambda: gzipped(json_members(100, 4 * MiB)), EXHAUSTED,
                              "SIZE_LIMIT_EXCEEDED", 96 * MiB),
    "empty-members-300k": (lambda: gzipped(empty_members(300_000)), EXHAUSTED,
                           "SIZE_LIMIT_EXCEEDED", 48 * MiB),
    "forged-digest-name": (lambda: [_forged("example/seed@sha256:" + "a" * 64)], INVALID,
                           "REFERENCE_INVALID", 48 * MiB),
    "tag-spelled-as-an-id": (lambda: [_forged("sha256:" + "b" * 64)], INVALID,
                             "REFERENCE_INVALID", 48 * MiB),
    "gzip-bomb-4GiB": (lambda: gzip_bomb(4 << 30), EXHAUSTED, "SIZE_LIMIT_EXCEEDED",
                       48 * MiB),
    "nested-manifest-json": (lambda: [tar_member(b"manifest.json", NESTED_JSON), tar_end()],
                             INVALID, "MALFORMED_CONTENT", 48 * MiB),
    "nested-index-json": (lambda: [tar_member(b"oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                                   tar_member(b"index.json", NESTED_JSON), tar_end()],
                          INVALID, "MALFORMED_CONTENT", 48 * MiB),
}  # fmt: skip


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_archive_is_refused_without_freezing_or_swelling_the_server(
    target: Target, attack: str
) -> None:
    make, code, reason, rss = ATTACKS[attack]
    with target.watch() as seen:
        error = send(target, make())  # type: ignore[operator]
    assert rpc_error(error)[:2] == (code, reason), error.details()
    seen.assert_within(rss=rss)
    target.assert_clean()


def test_a_docker_archive_of_500_layers_loads(target: Target) -> None:
    layers = [tar_of({f"layer/{i}": b"%d" % i}) for i in range(500)]
    spec = ImageSpec(tags=["real/many-layers:1"], layers=layers)
    answer = _load(target, docker_archive(spec))
    assert [image.id for image in answer.images] == [spec.image_id]
    inspected = target.stub.Inspect(pb.InspectRequest(image="real/many-layers:1"), timeout=60)
    assert len(inspected.diff_ids) == 500


def test_256_kib_of_labels_and_64_kib_of_pax_xattrs_load(target: Target) -> None:
    xattrs = b"".join(pax_record(f"SCHILY.xattr.user.k{i}", b"v" * 1000) for i in range(64))
    layer = tar_member(b"pax", xattrs, b"x") + tar_member(b"etc/hosts", b"127.0.0.1\n")
    labels = {f"org.example.l{i}": "x" * 1000 for i in range(256)}
    spec = ImageSpec(tags=["real/labels:1"], layers=[layer + tar_end()], labels=labels)
    archive = docker_archive(spec)
    # the archive itself carries a PAX header of 64 KiB of xattrs on its layer too
    outer = tar_member(b"pax", xattrs, b"x") + archive
    _load(target, outer)
    inspected = target.stub.Inspect(pb.InspectRequest(image="real/labels:1"), timeout=60)
    assert dict(inspected.config.labels) == labels


def test_an_oci_layout_index_of_20_platforms_loads(target: Target) -> None:
    members: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    children = []
    for n in range(20):
        layer = gzip.compress(tar_of({f"platform/{n}": b"%d" % n}), mtime=0)
        members[f"blobs/sha256/{sha(layer)[7:]}"] = layer
        config = json.dumps(
            {
                "architecture": f"arch{n}",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha(gzip.decompress(layer))]},
            }
        ).encode()
        members[f"blobs/sha256/{sha(config)[7:]}"] = config
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
                "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
            }
        ).encode()
        members[f"blobs/sha256/{sha(manifest)[7:]}"] = manifest
        child = _descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
        children.append({**child, "platform": {"architecture": f"arch{n}", "os": "linux"}})
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }
    ).encode()
    members[f"blobs/sha256/{sha(index)[7:]}"] = index
    top = {
        **_descriptor("application/vnd.oci.image.index.v1+json", index),
        "annotations": {"io.containerd.image.name": "docker.io/real/multi:1"},
    }
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    answer = _load(target, tar_of(members))
    assert len(answer.images) == 20
    listed = target.stub.ListImages(pb.ListImagesRequest(), timeout=60).images
    assert sum(1 for i in listed if "real/multi:1" in [n.familiar for n in i.repo_tags]) == 20


def _descriptor(media_type: str, body: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha(body), "size": len(body)}


def _load(target: Target, archive: bytes) -> pb.LoadResult:
    with target.watch():
        chunks = [archive[i : i + MiB] for i in range(0, len(archive), MiB)]
        requests = (pb.LoadRequest(chunk=c) for c in chunks)
        responses: list[pb.LoadResponse] = list(target.stub.Load(requests, timeout=120))
    assert responses[-1].HasField("result"), responses[-1]
    return responses[-1].result
