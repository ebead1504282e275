"""ImageStoreClient against a real server: every method, errors as domain
exceptions with their ErrorInfo reason, TLS and token options."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from imagestore import errors
from imagestore.client import (
    CheckProblem,
    CheckProgress,
    ImageName,
    ImageStoreClient,
    LoadResult,
    Phase,
    Platform,
    Progress,
    PullResult,
    PushResult,
    RegistryAuth,
    ResultStream,
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


R = TypeVar("R")


def _result(call: ResultStream[Progress, R]) -> tuple[list[Progress], R]:
    """Every progress item, then the result."""
    with call:
        progress = list(call)
        assert all(isinstance(p, Progress) for p in progress)
        return progress, call.result()


def test_load_from_a_path_and_from_a_file_object(client: ImageStoreClient, archive: Path) -> None:
    progress, result = _result(client.load(archive))
    assert isinstance(result, LoadResult)
    assert [(i.id, i.names) for i in result.images] == [
        (APP.image_id, (ImageName("app:1", "docker.io/library/app:1"),))
    ]
    assert progress
    assert {p.phase for p in progress} <= {Phase.COMPLETE, Phase.ALREADY_EXISTS, Phase.SKIPPED}
    assert "manifest.json" in {p.subject for p in progress}
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
    assert [(i.id, [str(t) for t in i.repo_tags], dict(i.labels)) for i in images] == [
        (APP.image_id, ["app:1"], {"k": "v"})
    ]
    assert images[0].repo_tags[0].canonical == "docker.io/library/app:1"
    assert images[0].indexes == ()
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

    assert client.inspect("app:1", platform="linux/amd64").image.id == APP.image_id
    assert client.history("app:1", platform=Platform("linux", "amd64")) == history

    tagged = client.tag("app:1", "app:2")
    assert tagged.target == ImageName("app:2", "docker.io/library/app:2")
    assert tagged.image_ids == (APP.image_id,)
    [untag] = client.remove(["app:2"])
    assert (untag.item, untag.untagged, untag.deleted_image_ids) == (
        "app:2",
        (ImageName("app:2", "docker.io/library/app:2"),),
        (),
    )
    [removed] = client.remove(["app:1"])
    assert removed.ok
    assert [str(n) for n in removed.untagged] == ["app:1"]
    assert removed.deleted_image_ids == (APP.image_id,)
    assert removed.freed_blobs  # its layers at least; not its config, the image ID
    assert APP.image_id not in removed.freed_blobs


def test_prune_disk_usage_check_save_and_read_blob(
    client: ImageStoreClient, archive: Path, tmp_path: Path
) -> None:
    list(client.load(archive))
    usage = client.disk_usage()
    assert usage.image_count == 1
    assert usage.images[0].id == APP.image_id
    assert usage.next_page_token == ""
    report = client.check_report()
    assert report.ok
    assert report.problems == ()
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
    assert pulled.updated
    assert pulled.name == ImageName(image, image)
    layer_lines = [p for p in progress if p.phase is Phase.COMPLETE]
    assert [p.text for p in layer_lines] == ["Pull complete"]
    [layer] = layer_lines
    assert layer.blob is not None
    assert layer.subject == layer.blob.digest.removeprefix("sha256:")[:12]
    assert any(p.phase is Phase.DOWNLOADING and p.total == layer.blob.size for p in progress)
    _, again = _result(client.pull(image))
    assert isinstance(again, PullResult)
    assert not again.updated
    assert again.image_ids == pulled.image_ids
    target = f"{fresh_registry.host}/client/app:1"
    client.tag(image, target)
    progress, pushed = _result(client.push(target))
    assert isinstance(pushed, PushResult)
    assert (pushed.name.canonical, pushed.digest) == (
        target,
        published.images["umoci/hello:oci"][0],
    )
    assert pushed.size > 0
    assert any(p.phase is Phase.PUSHED and p.text == "Pushed" for p in progress)
    assert client.login(auth_registry.host, RegistryAuth(USER, PASSWORD)) == "Login Succeeded"
    with pytest.raises(errors.PermissionDenied):
        client.login(auth_registry.host, RegistryAuth(USER, "wrong"))
    assert "wrong" not in repr(RegistryAuth(USER, "wrong"))


def test_errors_arrive_as_domain_exceptions_with_their_reason(
    client: ImageStoreClient, archive: Path
) -> None:
    with pytest.raises(errors.ImageNotFound) as missing:
        client.inspect("nope")
    assert missing.value.message == "No such image: nope:latest"
    assert missing.value.status == "NOT_FOUND"
    assert missing.value.reason == "IMAGE_NOT_FOUND"
    with pytest.raises(errors.MalformedContent):
        list(client.load(io.BytesIO(b"this is not a tar archive" * 100)))
    list(client.load(archive))
    with pytest.raises(errors.InvalidArgument) as bad:
        client.tag("app:1", "Upper:1")
    assert "must be lowercase" in bad.value.message
    client.tag("app:1", "other:1")
    [conflict] = client.remove([APP.image_id])
    assert isinstance(conflict.error, errors.RemoveConflict)
    assert "must be forced" in conflict.error.message
    assert client.list_images()[0].id == APP.image_id  # nothing of it was removed
    with pytest.raises(errors.FilterInvalid):
        client.list_images(filters=["colour=red"])
    with pytest.raises(errors.PlatformInvalid) as local:  # refused before anything is sent
        client.inspect("app:1", platform="linux//v7")
    assert local.value.request_id is None


def test_a_failed_call_names_the_request_id_of_its_server_log_line(
    server: Server, client: ImageStoreClient
) -> None:
    """A unary failure and a stream's failure each carry the ID the server logged."""
    with pytest.raises(errors.ImageNotFound) as missing:
        client.inspect("nope")
    with pytest.raises(errors.MalformedContent) as malformed:
        list(client.load(io.BytesIO(b"this is not a tar archive" * 100)))
    ids = [missing.value.request_id, malformed.value.request_id]
    assert all(ids), ids
    assert ids[0] != ids[1]
    assert server.stop() == 0  # its log is complete
    logged = dict(_access_lines(server))
    assert f"request_id={ids[0]}" in logged["Inspect"]
    assert f"request_id={ids[1]}" in logged["Load"]


def _access_lines(server: Server) -> Iterator[tuple[str, str]]:
    for line in server.stderr_lines:
        if " rpc method=/imagestore.v1.ImageStoreService/" in line:
            method = line.split("ImageStoreService/", 1)[1].split()[0]
            yield method, line


def test_remove_applies_each_item_on_its_own(client: ImageStoreClient, archive: Path) -> None:
    list(client.load(archive))
    client.tag("app:1", "app:2")
    client.tag("app:1", "app:3")
    results = client.remove(["app:2", "nope", APP.image_id, "app:3"])
    assert [r.item for r in results] == ["app:2", "nope", APP.image_id, "app:3"]
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, errors.ImageNotFound)
    assert results[1].error.message == "No such image: nope:latest"
    assert results[1].error.resource is not None
    assert isinstance(results[2].error, errors.RemoveConflict)
    assert [str(n) for r in results for n in r.untagged] == ["app:2", "app:3"]
    assert [str(t) for t in client.list_images()[0].repo_tags] == ["app:1"]
    # force is about conflicts: an unknown name is still its item's error, as
    # docker's daemon answers (the CLI's rmi -f then only reports it)
    forced = client.remove(["nope", APP.image_id], force=True)
    assert isinstance(forced[0].error, errors.ImageNotFound)
    assert forced[1].ok
    assert forced[1].deleted_image_ids == (APP.image_id,)
    assert client.list_images() == []


def test_check_streams_progress_then_the_summary(client: ImageStoreClient, archive: Path) -> None:
    list(client.load(archive))
    with client.check() as call:
        events = list(call)
        report = call.result()
    assert (report.ok, report.problems, report.images_checked) == (True, (), 1)
    stored = client.server_info().blob_count
    assert report.blobs_checked == stored
    progress = [e for e in events if isinstance(e, CheckProgress)]
    assert progress
    assert len(progress) == len(events)  # the summary ends the stream: it is the result
    assert progress[-1].blobs_checked == progress[-1].blobs_total == stored
    assert not [e for e in events if isinstance(e, CheckProblem)]


def test_disk_usage_walks_its_pages(client: ImageStoreClient, archive: Path) -> None:
    list(client.load(archive))
    for tag in ("b:1", "c:1"):  # two more images, one row each
        spec = ImageSpec([tag], [tar_of({tag: tag.encode() * 100})])
        list(client.load(io.BytesIO(docker_archive(spec))))
    pages = list(client.disk_usage_pages(page_size=2))
    assert [len(p.images) for p in pages] == [2, 1]
    assert pages[0].next_page_token
    assert not pages[-1].next_page_token
    assert {p.image_count for p in pages} == {3}
    walked = client.disk_usage(page_size=2)
    assert sorted(u.id for u in walked.images) == sorted(u.id for p in pages for u in p.images)
    assert len({u.id for u in walked.images}) == 3


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
