"""Server reflection in both versions: v1alpha (grpcurl 1.8) and v1 (newer clients),
serving the API's documentation.

grpcio-reflection serves only v1alpha. The v1 service has the same messages
under another package, so it is served by the same servicer: its file
descriptor is derived from v1alpha's with the package renamed, and messages
cross between the two as bytes (they are wire-identical).

grpcio-reflection answers with the descriptors compiled into the generated
modules, which carry no comments. `make protos` also writes the descriptor set
of protos/ with source info (``imagestore/v1/imagestore.binpb``, shipped in the
package); each file of it replaces the compiled one in the answers, so
``grpcurl describe`` prints the proto's comments. A set that does not describe
the compiled code (generated modules regenerated without it) is not served.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

log = logging.getLogger("imagestore.reflection")

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
#: the descriptor set `make protos` writes beside this module (the server's own:
#: the client distribution ships the generated modules, not this)
DESCRIPTOR_SET_PACKAGE = "imagestore.api"
DESCRIPTOR_SET_NAME = "imagestore.binpb"


def _renamed(type_name: str) -> str:
    return type_name.replace(".grpc.reflection.v1alpha.", f".{V1_PACKAGE}.")


def _v1_messages() -> tuple[type[Message], type[Message]]:
    """(request, response) classes of grpc.reflection.v1, added to the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        v1alpha.DESCRIPTOR.CopyToProto(proto)
        proto.name = "grpc/reflection/v1/reflection.proto"
        proto.package = V1_PACKAGE
        for message in proto.message_type:
            for field in message.field:
                if field.type_name:
                    field.type_name = _renamed(field.type_name)
        for service in proto.service:
            for method in service.method:
                method.input_type = _renamed(method.input_type)
                method.output_type = _renamed(method.output_type)
        pool.Add(proto)
    request = pool.FindMessageTypeByName(f"{V1_PACKAGE}.ServerReflectionRequest")
    response = pool.FindMessageTypeByName(f"{V1_PACKAGE}.ServerReflectionResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in [*message.field, *message.extension]:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def _shape(proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    """What a file declares, without comments or the json_name protoc may fill in."""
    shape = descriptor_pb2.FileDescriptorProto()
    shape.CopyFrom(proto)
    shape.ClearField("source_code_info")
    _clear_json_names(shape.message_type)
    for extension in shape.extension:
        extension.ClearField("json_name")
    return shape.SerializeToString(deterministic=True)


def documented_files(
    descriptor_set: bytes, pool: descriptor_pool.DescriptorPool | None = None
) -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with source info, for each file of
    ``descriptor_set`` that declares exactly what ``pool`` (the default pool) compiled:
    that compiled descriptor, with the set's source info added."""
    pool = pool or descriptor_pool.Default()
    documented: dict[str, bytes] = {}
    for proto in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file:
        try:
            compiled = pool.FindFileByName(proto.name)
        except KeyError:
            continue  # not part of this server: nothing to document
        compiled_proto = descriptor_pb2.FileDescriptorProto()
        compiled.CopyToProto(compiled_proto)
        if _shape(proto) != _shape(compiled_proto):
            log.warning(
                "%s in %s differs from the generated code (run make protos);"
                " reflection serves it without comments",
                proto.name,
                DESCRIPTOR_SET_NAME,
            )
            continue
        # The compiled descriptor plus the comments: without protoc's json_name,
        # which would turn grpcurl's JSON from the proto's field names to camelCase.
        compiled_proto.source_code_info.CopyFrom(proto.source_code_info)
        documented[proto.name] = compiled_proto.SerializeToString()
    return documented


def _shipped_descriptor_set() -> bytes | None:
    try:
        return (resources.files(DESCRIPTOR_SET_PACKAGE) / DESCRIPTOR_SET_NAME).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        log.warning("%s is missing: reflection serves no comments", DESCRIPTOR_SET_NAME)
        return None


def with_documentation(response: Any, documented: Mapping[str, bytes]) -> Any:
    """``response`` with each file descriptor it carries replaced by its documented one."""
    if not documented or not response.HasField("file_descriptor_response"):
        return response
    files = response.file_descriptor_response.file_descriptor_proto
    for index, serialized in enumerate(files):
        name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
        if name in documented:
            files[index] = documented[name]
    return response


class DocumentedReflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, answering with the documented descriptors."""

    def __init__(self, service_names: Sequence[str], documented: Mapping[str, bytes]) -> None:
        self._servicer = reflection.aio.ReflectionServicer(service_names)
        self._documented = documented

    async def ServerReflectionInfo(  # noqa: N802 - the RPC's name
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answers each reflection request in turn, as grpcio-reflection does."""
        async for response in self._servicer.ServerReflectionInfo(requests, context):
            yield with_documentation(response, self._documented)


def enable(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection v1alpha and v1 for ``service_names`` (plus themselves)."""
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    descriptor_set = _shipped_descriptor_set()
    documented = documented_files(descriptor_set) if descriptor_set is not None else {}
    servicer = DocumentedReflection(names, documented)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    request_class, response_class = _v1_messages()

    async def info(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Message]:
        async def as_v1alpha() -> AsyncIterator[Message]:
            async for request in requests:
                yield v1alpha.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in servicer.ServerReflectionInfo(as_v1alpha(), context):
            yield response_class.FromString(response.SerializeToString())

    handler = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                info,
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
