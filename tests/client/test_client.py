"""ImageStoreClient against a real server: every method, errors as domain
exceptions with their ErrorInfo reason, TLS and token options."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagestore import errors
from imagestore.client import (
    ImageStoreClient,
    LoadResult,
    Progress,
    PullResult,
    PushResult,
    RegistryAuth,
)

from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.pki import make_pki
from tests.registry.conftest import Published, stop_cleanly
from tests.registry.distribution import PASSWORD, USER, Distribution

APP = ImageSpec(["app:1"], [tar_of({"a": b"a" * 3000}), tar_of({"b": b"b"})], labels={"k": "v"})


@pytest.fixture
def client(server: Server) -> Iterator[ImageStoreClient]:
    with ImageStoreClient(server.address, timeout=30) as opened:
        yield opened


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "app.tar"
    path.write_bytes(docker_archive(APP))
    return path


def _result(events: Iterator[object]) -> tuple[list[Progress], object]:
    items = list(events)
    assert all(isinstance(i, Progress) for i in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def test_load_from_a_path_and_from_a_file_object(client: ImageStoreClient, archive: Path) -> None:
    progress, result = _result(client.load(archive))
    assert isinstance(result, LoadResult)
    assert [(i.id, i.names) for i in result.images] == [(APP.image_id, ("app:1",))]
    assert progress
    client.remove(["app:1"])
    with archive.open("rb") as handle:
        _, again = _result(client.load(handle))
    assert isinstance(again, LoadResult)
    assert again.images[0].id == APP.image_id
    _, from_memory = _result(client.load(io.BytesIO(archive.read_bytes())))
    assert isinstance(from_memory, LoadResult)


def test_list_inspect_history_tag_remove(client: ImageStoreClient, archive: Path) -> None:
    list(client.load(archive))
    images = client.list_images()
    assert [(i.id, i.repo_tags, dict(i.labels)) for i in images] == [
        (APP.image_id, ("app:1",), {"k": "v"})
    ]
    assert str(images[0].platform) == "linux/amd64"
    assert client.list_images(filters=["label=k=other"]) == []

    details = client.inspect("app:1", include_raw=True)
    assert details.image.id == APP.image_id
    assert details.config.cmd == ("/bin/app",)
    assert details.diff_ids == tuple(sha(t) for t in APP.layers)
    assert details.raw_config == APP.config()
    assert len(details.layers) == 2

    history = client.history("app:1")
    assert [h.created_by for h in history] == ["COPY layer1 /", "COPY layer0 /"]

    tagged = client.tag("app:1", "app:2")
    assert tagged.target == "app:2"
    assert tagged.image_ids == (APP.image_id,)
    events = client.remove(["app:2"])
    assert [(e.kind, e.value) for e in events] == [("untagged", "app:2")]
    events = client.remove(["app:1"])
    assert events[0].kind == "untagged"
    assert ("deleted", APP.image_id) in [(e.kind, e.value) for e in events]


def test_prune_disk_usage_check_save_and_read_blob(
    client: ImageStoreClient, archive: Path, tmp_path: Path
) -> None:
    list(client.load(archive))
    usage = client.disk_usage()
    assert usage.image_count == 1
    assert usage.images[0].id == APP.image_id
    assert client.check().ok
    target = tmp_path / "saved.tar"
    size = client.save_to(["app:1"], target)
    assert size == target.stat().st_size
    with tarfile.open(target) as saved:
        assert "manifest.json" in saved.getnames()
    assert b"".join(client.save(["app:1"])) == target.read_bytes()
    details = client.inspect("app:1")
    config = b"".join(client.read_blob(details.config_descriptor.digest))
    assert config == APP.config()
    assert (
        b"".join(client.read_blob(details.config_descriptor.digest, offset=2, limit=5))
        == config[2:7]
    )
    dry = client.prune(all=True, dry_run=True)
    assert dry.deleted_image_ids == (APP.image_id,)
    assert dry.dry_run
    assert client.list_images()
    pruned = client.prune(all=True)
    assert pruned.deleted_image_ids == (APP.image_id,)
    assert pruned.reclaimed_bytes > 0
    assert client.list_images() == []


def test_pull_push_and_login(
    client: ImageStoreClient,
    published: Published,
    fresh_registry: Distribution,
    auth_registry: Distribution,
) -> None:
    image = published.ref("umoci/hello:oci")
    progress, pulled = _result(client.pull(image))
    assert isinstance(pulled, PullResult)
    assert pulled.image_ids == (published.images["umoci/hello:oci"][1],)
    assert any(p.status == "Pull complete" for p in progress)
    target = f"{fresh_registry.host}/client/app:1"
    client.tag(image, target)
    progress, pushed = _result(client.push(target))
    assert isinstance(pushed, PushResult)
    assert (pushed.tag, pushed.digest) == ("1", published.images["umoci/hello:oci"][0])
    assert any(p.status == "Pushed" for p in progress)
    assert client.login(auth_registry.host, RegistryAuth(USER, PASSWORD)) == "Login Succeeded"
    with pytest.raises(errors.PermissionDenied):
        client.login(auth_registry.host, RegistryAuth(USER, "wrong"))
    assert "wrong" not in repr(RegistryAuth(USER, "wrong"))


def test_errors_arrive_as_domain_exceptions_with_their_reason(
    client: ImageStoreClient, archive: Path
) -> None:
    with pytest.raises(errors.NotFound) as missing:
        client.inspect("nope")
    assert missing.value.message == "No such image: nope:latest"
    assert missing.value.status == "NOT_FOUND"
    with pytest.raises(errors.MalformedContent):
        list(client.load(io.BytesIO(b"this is not a tar archive" * 100)))
    list(client.load(archive))
    with pytest.raises(errors.InvalidArgument) as bad:
        client.tag("app:1", "Upper:1")
    assert "must be lowercase" in bad.value.message
    client.tag("app:1", "other:1")
    with pytest.raises(errors.FailedPrecondition) as conflict:
        client.remove([APP.image_id])
    assert "must be forced" in conflict.value.message
    with pytest.raises(errors.InvalidArgument):
        client.list_images(filters=["colour=red"])


def test_an_unreachable_server_is_unavailable() -> None:
    with ImageStoreClient("127.0.0.1:1", timeout=5) as client, pytest.raises(errors.Unavailable):
        client.list_images()


def test_a_deadline_is_deadline_exceeded(server: Server) -> None:
    with (
        ImageStoreClient(server.address, timeout=0.000001) as client,
        pytest.raises(errors.DeadlineExceeded),
    ):
        client.list_images()


def test_tls_and_token_options(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\n")
    server = start_server(
        tmp_path / "root",
        "--listen", "127.0.0.1:0",
        "--tls-cert", str(pki / "server.crt"),
        "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.crt"),
        "--auth-token-file", str(tokens),
    )  # fmt: skip
    try:
        ca, cert, key = pki / "ca.crt", pki / "client.crt", pki / "client.key"

        def connect(token: str | None, ca: Path, cert: Path | None) -> ImageStoreClient:
            key_file = key if cert is not None else None
            return ImageStoreClient(
                server.address,
                token=token,
                ca_file=ca,
                cert_file=cert,
                key_file=key_file,
                timeout=10,
            )

        with connect("s3cret-token", ca, cert) as ok:
            assert ok.list_images() == []
        refused: list[tuple[type[errors.ImageStoreError], str | None, Path, Path | None]] = [
            (errors.Unauthenticated, None, ca, cert),  # no token
            (errors.Unavailable, "s3cret-token", ca, None),  # no client certificate
            (errors.Unavailable, "s3cret-token", pki / "other.crt", cert),  # untrusted server
        ]
        for error, token, trusted, certificate in refused:
            with connect(token, trusted, certificate) as client, pytest.raises(error):
                client.list_images()
    finally:
        stop_cleanly(server)
