"""GetServerInfo and StatBlob against the real server process, through the
generated stubs and through grpcurl (reflection)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from imagestore import errors, hashing
from imagestore.api.admission import Limits
from imagestore.archive.load import LoadLimits
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import MAX_DOCUMENT_SIZE
from imagestore.registry.options import RegistryOptions
from imagestore.store.store import DEFAULT_MAX_LAYER_SIZE, Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from imagestore.version import __version__
from tests.api.conftest import Server, start_server
from tests.api.test_grpcurl import SERVICE, grpcurl
from tests.api.test_service import Stub, app, error_info, load
from tests.pki import make_pki
from tests.store.builders import Built, build_image, build_index, layer_tar

BASE = layer_tar({"etc/os-release": b"ID=test\n"})


def _blob_files(root: Path) -> dict[str, int]:
    """Every blob file of a store root: digest -> size."""
    return {f"sha256:{p.name}": p.stat().st_size for p in (root / "blobs" / "sha256").iterdir()}


# ---- GetServerInfo -----------------------------------------------------------


def test_server_info_reports_versions_store_counts_and_default_limits(
    server: Server, stub: Stub
) -> None:
    load(stub, app(1, "web:1"), app(2, "web:2"))
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.server_version == __version__
    assert info.api_version == "imagestore.v1"
    assert info.gzip_backend == hashing.backend()  # the server loads the same extension
    assert info.catalog == "sqlite"
    assert info.root == str(server.root)
    assert (info.tls, info.mutual_tls, info.auth_mode) == (False, False, pb.AUTH_MODE_NONE)
    # Two images: a shared base layer, a layer, a config and a manifest each.
    files = _blob_files(server.root)
    assert (info.image_count, info.blob_count) == (2, 7)
    assert info.blob_count == len(files)
    assert info.stored_bytes == sum(files.values())
    defaults, load_defaults, registry = Limits(), LoadLimits(), RegistryOptions()
    assert info.limits == pb.ServiceLimits(
        max_concurrent_rpcs=defaults.max_concurrent_rpcs,
        max_concurrent_streams=defaults.max_concurrent_streams,
        max_response_bytes=defaults.max_response_bytes,
        max_layer_size=DEFAULT_MAX_LAYER_SIZE,
        max_document_bytes=MAX_DOCUMENT_SIZE,
        max_concurrent_watches=defaults.max_concurrent_watches,
    )
    assert info.load_limits.max_members == load_defaults.tar.max_members
    assert info.load_limits.max_expanded_bytes == load_defaults.max_expanded_bytes
    assert info.registry_limits.attempts == registry.attempts
    assert info.registry_limits.blob_timeout.ToTimedelta().total_seconds() == 7200
    # Removing an image shows in the counts at once.
    stub.Remove(pb.RemoveRequest(images=["web:2"]))
    after = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert (after.image_count, after.blob_count) == (1, 4)
    assert after.stored_bytes == sum(_blob_files(server.root).values())


def test_server_info_reports_the_limits_the_server_was_started_with(tmp_path: Path) -> None:
    flags = {
        "--max-response-bytes": "1048576",
        "--max-layer-size": "123456789",
        "--load-max-header-bytes": "70000",
        "--load-max-name-bytes": "2048",
        "--load-max-members": "1234",
        "--load-max-kept-bytes": "9999999",
        "--load-max-expanded-bytes": "88888888",
        "--max-concurrent-downloads": "2",
        "--max-concurrent-small-downloads": "9",
        "--max-concurrent-uploads": "4",
        "--registry-attempts": "7",
        "--registry-backoff": "0.25",
        "--registry-connect-timeout": "3",
        "--registry-idle-timeout": "4.5",
        "--registry-min-speed": "0",
        "--registry-speed-window": "12",
        "--registry-blob-timeout": "0",
        "--max-index-children": "42",
        "--max-manifest-bytes-per-pull": "5000000",
        "--max-layers-per-pull": "321",
    }
    server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        *[item for pair in flags.items() for item in pair],
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
    finally:
        assert server.stop() == 0
    assert (info.limits.max_response_bytes, info.limits.max_layer_size) == (1048576, 123456789)
    assert info.load_limits == pb.LoadLimits(
        max_header_bytes=70000,
        max_name_bytes=2048,
        max_members=1234,
        max_kept_bytes=9999999,
        max_expanded_bytes=88888888,
    )
    registry = MessageToDict(info.registry_limits, preserving_proto_field_name=True)
    assert registry == {
        "max_concurrent_downloads": 2,
        "max_concurrent_small_downloads": 9,
        "max_concurrent_uploads": 4,
        "attempts": 7,
        "backoff": "0.250s",
        "connect_timeout": "3s",
        "idle_timeout": "4.500s",
        "speed_window": "12s",
        "blob_timeout": "0s",
        "max_index_children": 42,
        "max_manifest_bytes_per_pull": "5000000",
        "max_layers_per_pull": 321,
    }  # min_speed 0 is the proto default: left out


def test_server_info_reports_tls_client_certificates_tokens_and_admission_limits(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\n")
    server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        str(pki / "server.crt"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-client-ca",
        str(pki / "ca.crt"),
        "--auth-token-file",
        str(tokens),
        "--max-concurrent-rpcs",
        "77",
        "--max-concurrent-streams",
        "9",
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.crt").read_bytes(),
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.crt").read_bytes(),
    )
    try:
        with grpc.secure_channel(server.address, credentials) as channel:
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            info = stub.GetServerInfo(
                pb.GetServerInfoRequest(),
                metadata=(("authorization", "Bearer s3cret-token"),),
                timeout=30,
            )
    finally:
        assert server.stop() == 0
    assert (info.tls, info.mutual_tls, info.auth_mode) == (True, True, pb.AUTH_MODE_TOKENS)
    assert "s3cret-token" not in str(info)
    assert (info.limits.max_concurrent_rpcs, info.limits.max_concurrent_streams) == (77, 9)


# ---- StatBlob ----------------------------------------------------------------


@dataclass
class Seeded:
    """A server over a store seeded beforehand: two images sharing a base layer,
    an index over both, and a blob nothing uses."""

    server: Server
    stub: Stub
    amd: Built
    arm: Built
    index: str
    loose: str


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    root = tmp_path / "root"
    with Store.open(root) as store:
        amd = build_image(store, [BASE, layer_tar({"a": b"amd"})], names=["app:amd"])
        arm = build_image(
            store, [BASE, layer_tar({"a": b"arm"})], names=["app:arm"], architecture="arm64"
        )
        index = build_index(store, [(amd, "linux/amd64"), (arm, "linux/arm64")], names=["app:1"])
        # A committed blob whose lease never ended: what a pull killed before it
        # recorded its manifest leaves (start-up keeps it; prune removes it).
        lease = store.open_lease()
        loose = store.put_blob(lease, b'{"loose": true}', mt.OCI_CONFIG).digest
    server = start_server(root, "--listen", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            yield Seeded(server, stub, amd, arm, index.target_digest, loose)
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def _stat(stub: Stub, digest: str) -> pb.StatBlobResponse:
    answer: pb.StatBlobResponse = stub.StatBlob(pb.StatBlobRequest(digest=digest), timeout=30)
    return answer


def test_stat_blob_of_a_layer_two_images_share(seeded: Seeded) -> None:
    base = seeded.amd.layers[0]
    assert seeded.arm.layers[0] == base
    stat = _stat(seeded.stub, base.digest)
    assert stat.blob == pb.Descriptor(
        media_type=mt.OCI_LAYER_GZIP, digest=base.digest, size=base.size
    )
    assert stat.diff_id == hashing.sha256_digest(BASE)
    assert stat.uncompressed_size == len(BASE)
    assert stat.stored_at.seconds > 0
    assert stat.referenced
    assert list(stat.image_ids) == sorted([seeded.amd.image_id, seeded.arm.image_id])
    assert stat.image_count == 2
    assert (stat.damaged, stat.damage) == (False, "")


def test_stat_blob_of_a_config_a_manifest_and_a_named_index(seeded: Seeded) -> None:
    config = _stat(seeded.stub, seeded.amd.image_id)
    assert (config.blob.media_type, config.diff_id, config.uncompressed_size) == (
        mt.OCI_CONFIG,
        "",
        0,
    )
    assert list(config.image_ids) == [seeded.amd.image_id]
    manifest = _stat(seeded.stub, seeded.arm.manifest.digest)
    assert manifest.blob.media_type == mt.OCI_MANIFEST
    assert (manifest.referenced, list(manifest.image_ids)) == (True, [seeded.arm.image_id])
    index = _stat(seeded.stub, seeded.index)
    assert index.blob.media_type == mt.OCI_INDEX
    assert index.referenced
    assert list(index.image_ids) == sorted([seeded.amd.image_id, seeded.arm.image_id])
    # Without its name the index is garbage, and Remove collects it at once.
    seeded.stub.Remove(pb.RemoveRequest(images=["app:1"]))
    with pytest.raises(grpc.RpcError) as gone:
        _stat(seeded.stub, seeded.index)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert _stat(seeded.stub, seeded.arm.manifest.digest).referenced  # its children stay


def test_stat_blob_of_a_blob_no_image_uses(seeded: Seeded) -> None:
    stat = _stat(seeded.stub, seeded.loose)
    assert stat.blob.size == len(b'{"loose": true}')
    assert (stat.referenced, list(stat.image_ids), stat.image_count) == (False, [], 0)
    dry = seeded.stub.Prune(pb.PruneRequest(dry_run=True))
    assert seeded.loose in dry.deleted_blobs  # what "not referenced" means: prune takes it


def test_stat_blob_of_damaged_blobs(seeded: Seeded) -> None:
    corrupt = seeded.amd.layers[1].digest
    path = seeded.server.root / "blobs" / "sha256" / corrupt[7:]
    path.chmod(0o644)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, wrong bytes
    assert not _stat(seeded.stub, corrupt).damaged  # nobody has read it yet
    with pytest.raises(grpc.RpcError) as failure:
        list(seeded.stub.ReadBlob(pb.ReadBlobRequest(digest=corrupt)))
    assert failure.value.code() == grpc.StatusCode.DATA_LOSS  # and the reader marks it
    stat = _stat(seeded.stub, corrupt)
    assert (stat.damaged, stat.damage) == (True, "corrupt-blob")
    assert list(stat.image_ids) == [seeded.amd.image_id]

    short = seeded.arm.layers[1].digest
    path = seeded.server.root / "blobs" / "sha256" / short[7:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-3])
    stat = _stat(seeded.stub, short)
    assert (stat.damaged, stat.damage) == (True, "size-mismatch")
    assert stat.blob.size == seeded.arm.layers[1].size  # the record's size, not the file's


def test_stat_blob_of_an_absent_or_malformed_digest(seeded: Seeded) -> None:
    absent = "sha256:" + "ab" * 32
    with pytest.raises(grpc.RpcError) as failure:
        _stat(seeded.stub, absent)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(failure.value)
    assert (info.reason, dict(info.metadata)) == (errors.BlobNotFound.reason, {"digest": absent})
    assert absent in str(failure.value.details())
    # A file without its catalog record is not stored either.
    orphan = seeded.server.root / "blobs" / "sha256" / ("cd" * 32)
    orphan.write_bytes(b"orphan")
    with pytest.raises(grpc.RpcError) as failure:
        _stat(seeded.stub, "sha256:" + "cd" * 32)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as failure:
        _stat(seeded.stub, "sha256:XYZ")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stat_blob_lists_at_most_100_images_and_counts_them_all(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        ids = [
            build_image(
                store, [BASE, layer_tar({"n": str(n).encode()})], names=[f"many:{n}"]
            ).image_id
            for n in range(101)
        ]
        base = store.inspect("many:0").layers[0].digest
    server = start_server(root, "--listen", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            stat = _stat(stub, base)
    finally:
        assert server.stop() == 0
    assert stat.image_count == 101
    assert list(stat.image_ids) == sorted(ids)[:100]


# ---- grpcurl -----------------------------------------------------------------


def test_grpcurl_lists_and_calls_get_server_info_and_stat_blob(server: Server, stub: Stub) -> None:
    methods = grpcurl(server, "list", SERVICE).split()
    assert {f"{SERVICE}.GetServerInfo", f"{SERVICE}.StatBlob"} <= set(methods)
    described = grpcurl(server, "describe", "imagestore.v1.StatBlobResponse")
    assert "repeated string image_ids = 6;" in described
    load(stub, app(1, "web:1"))
    info = json.loads(grpcurl(server, f"{SERVICE}/GetServerInfo", data={}))
    expected = MessageToDict(
        stub.GetServerInfo(pb.GetServerInfoRequest()), preserving_proto_field_name=True
    )
    assert info == expected
    assert info["auth_mode"] == "AUTH_MODE_NONE"
    layer = stub.Inspect(pb.InspectRequest(image="web:1")).layers[0].digest
    through_grpcurl = json.loads(grpcurl(server, f"{SERVICE}/StatBlob", data={"digest": layer}))
    through_stub = stub.StatBlob(pb.StatBlobRequest(digest=layer))
    assert through_grpcurl == MessageToDict(through_stub, preserving_proto_field_name=True)
    assert through_grpcurl["image_count"] == "1"
