"""ImageStoreClient's server_info, stat_blob and read_blob_chunks against a real
server: dataclasses out, the server's errors as domain exceptions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imagestore import errors, hashing
from imagestore.client import BlobChunk, BlobStat, Descriptor, ImageStoreClient, ServerInfo
from imagestore.oci import mediatypes as mt
from imagestore.version import __version__
from tests.api.conftest import Server
from tests.archives import ImageSpec, docker_archive, tar_of

NOISE = random.Random(7).randbytes(3 << 19)  # incompressible: 1.5 MiB stored, 2 chunks
IMAGE = ImageSpec(["info:1"], [tar_of({"a": b"a" * 3000}), tar_of({"noise": NOISE})])


@pytest.fixture
def client(server: Server, tmp_path: Path) -> Iterator[ImageStoreClient]:
    archive = tmp_path / "info.tar"
    archive.write_bytes(docker_archive(IMAGE))
    with ImageStoreClient(server.address, timeout=30) as opened:
        list(opened.load(archive))
        yield opened


def _blob_files(root: Path) -> dict[str, int]:
    return {f"sha256:{p.name}": p.stat().st_size for p in (root / "blobs" / "sha256").iterdir()}


def test_server_info(client: ImageStoreClient, server: Server) -> None:
    info = client.server_info()
    assert isinstance(info, ServerInfo)
    assert (info.server_version, info.api_version) == (__version__, "imagestore.v1")
    assert (info.gzip_backend, info.catalog) == (hashing.backend(), "sqlite")
    assert info.root == str(server.root)
    assert (info.tls, info.mutual_tls, info.auth_mode) == (False, False, "none")
    files = _blob_files(server.root)
    assert (info.image_count, info.blob_count) == (1, 4)  # 2 layers, config, manifest
    assert (info.blob_count, info.stored_bytes) == (len(files), sum(files.values()))
    assert info.limits.max_response_bytes == 3584 << 10
    assert info.load_limits.max_members == 50_000
    # The registry options the fixture's server runs with (tests/registry/conftest.py).
    assert info.registry_limits.attempts == 3
    assert info.registry_limits.backoff == timedelta(milliseconds=10)
    assert info.registry_limits.connect_timeout == timedelta(seconds=2)
    assert info.registry_limits.blob_timeout == timedelta(hours=2)


def test_stat_blob(client: ImageStoreClient) -> None:
    details = client.inspect("info:1")
    layer = details.layers[1]
    stat = client.stat_blob(layer.digest)
    assert isinstance(stat, BlobStat)
    # The catalog record's media type: Load stores layers as OCI ones, while
    # this docker-archive's manifest spells them the Docker way.
    assert layer.media_type == mt.DOCKER_LAYER_GZIP
    assert stat.blob == Descriptor(mt.OCI_LAYER_GZIP, layer.digest, layer.size)
    assert (stat.diff_id, stat.uncompressed_size) == (details.diff_ids[1], len(IMAGE.layers[1]))
    assert stat.stored_at is not None
    assert (stat.referenced, stat.image_ids, stat.image_count) == (True, (IMAGE.image_id,), 1)
    assert (stat.damaged, stat.damage) == (False, "")
    absent = "sha256:" + "0" * 64
    with pytest.raises(errors.NotFound) as missing:
        client.stat_blob(absent)
    assert missing.value.metadata == {"digest": absent}
    with pytest.raises(errors.InvalidArgument):
        client.stat_blob("sha256:nope")


def test_read_blob_chunks_carry_offsets_and_a_read_past_the_end_is_out_of_range(
    client: ImageStoreClient,
) -> None:
    layer = client.inspect("info:1").layers[1]
    whole = list(client.read_blob_chunks(layer.digest))
    assert [c.offset for c in whole] == [0, 1 << 20]
    assert all(isinstance(c, BlobChunk) for c in whole)
    data = b"".join(c.data for c in whole)
    assert hashing.sha256_digest(data) == layer.digest
    assert b"".join(client.read_blob(layer.digest)) == data  # read_blob: the same bytes
    part = list(client.read_blob_chunks(layer.digest, offset=10, limit=5))
    assert part == [BlobChunk(10, data[10:15])]
    assert list(client.read_blob(layer.digest, offset=layer.size)) == []
    with pytest.raises(errors.OutOfRange) as past:
        list(client.read_blob(layer.digest, offset=layer.size + 1))
    assert past.value.metadata["size"] == str(layer.size)
