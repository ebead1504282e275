"""Server reflection in both versions: v1alpha (grpcurl 1.8) and v1 (newer clients).

grpcio-reflection serves only v1alpha. The v1 service has the same messages
under another package, so it is served by the same servicer: its file
descriptor is derived from v1alpha's with the package renamed, and messages
cross between the two as bytes (they are wire-identical).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"


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


def enable(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection v1alpha and v1 for ``service_names`` (plus themselves)."""
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
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
