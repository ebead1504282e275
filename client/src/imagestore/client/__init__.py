"""The Python clients of imagestore, blocking and asyncio, with the same methods,
models and errors::

    with ImageStoreClient() as client:               # IMAGESTORE_HOST, or 127.0.0.1:50051
        images = client.list_images()

    async with AsyncImageStoreClient() as client:
        images = await client.list_images()

Server streams are objects: iterate their items, ``result()`` the final value,
``cancel()`` to end them early (``calls.py``, ``aio_calls.py``). Failures are
``imagestore.errors`` exceptions.
"""

# Loaded on first use (PEP 562): a caller that needs only the blocking client
# (the CLI, a script) does not pay for asyncio and the asyncio client.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagestore.client.aio import AsyncImageStoreClient
    from imagestore.client.aio_calls import AsyncEventStream, AsyncResultStream, AsyncStream
    from imagestore.client.calls import EventStream, ResultStream, Stream
    from imagestore.client.connection import ImageStoreClient
    from imagestore.client.models import (
        BlobChunk,
        BlobStat,
        CheckEvent,
        CheckProblem,
        CheckProgress,
        CheckReport,
        CheckSummary,
        CheckUpdate,
        ContainerConfig,
        Descriptor,
        DiskUsage,
        Event,
        EventKind,
        HistoryEntry,
        Image,
        ImageDetails,
        ImageName,
        ImageUsage,
        IndexChild,
        LoadedImage,
        LoadLimits,
        LoadResult,
        NamedIndex,
        Phase,
        Platform,
        Progress,
        PruneResult,
        PulledTag,
        PullResult,
        PushResult,
        RegistryAuth,
        RegistryLimits,
        RemoveResult,
        ServerInfo,
        ServiceLimits,
        TagResult,
        UnrecordedBlob,
    )
    from imagestore.client.settings import DEFAULT_TARGET, Settings

#: where each public name lives
_HOMES = {
    "AsyncEventStream": "imagestore.client.aio_calls",
    "AsyncImageStoreClient": "imagestore.client.aio",
    "AsyncResultStream": "imagestore.client.aio_calls",
    "AsyncStream": "imagestore.client.aio_calls",
    "BlobChunk": "imagestore.client.models",
    "BlobStat": "imagestore.client.models",
    "CheckEvent": "imagestore.client.models",
    "CheckProblem": "imagestore.client.models",
    "CheckProgress": "imagestore.client.models",
    "CheckReport": "imagestore.client.models",
    "CheckSummary": "imagestore.client.models",
    "CheckUpdate": "imagestore.client.models",
    "ContainerConfig": "imagestore.client.models",
    "DEFAULT_TARGET": "imagestore.client.settings",
    "Descriptor": "imagestore.client.models",
    "DiskUsage": "imagestore.client.models",
    "Event": "imagestore.client.models",
    "EventKind": "imagestore.client.models",
    "EventStream": "imagestore.client.calls",
    "HistoryEntry": "imagestore.client.models",
    "Image": "imagestore.client.models",
    "ImageDetails": "imagestore.client.models",
    "ImageName": "imagestore.client.models",
    "ImageStoreClient": "imagestore.client.connection",
    "ImageUsage": "imagestore.client.models",
    "IndexChild": "imagestore.client.models",
    "LoadLimits": "imagestore.client.models",
    "LoadResult": "imagestore.client.models",
    "LoadedImage": "imagestore.client.models",
    "NamedIndex": "imagestore.client.models",
    "Phase": "imagestore.client.models",
    "Platform": "imagestore.client.models",
    "Progress": "imagestore.client.models",
    "PruneResult": "imagestore.client.models",
    "PullResult": "imagestore.client.models",
    "PulledTag": "imagestore.client.models",
    "PushResult": "imagestore.client.models",
    "RegistryAuth": "imagestore.client.models",
    "RegistryLimits": "imagestore.client.models",
    "RemoveResult": "imagestore.client.models",
    "ResultStream": "imagestore.client.calls",
    "ServerInfo": "imagestore.client.models",
    "ServiceLimits": "imagestore.client.models",
    "Settings": "imagestore.client.settings",
    "Stream": "imagestore.client.calls",
    "TagResult": "imagestore.client.models",
    "UnrecordedBlob": "imagestore.client.models",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "DEFAULT_TARGET",
    "AsyncEventStream",
    "AsyncImageStoreClient",
    "AsyncResultStream",
    "AsyncStream",
    "BlobChunk",
    "BlobStat",
    "CheckEvent",
    "CheckProblem",
    "CheckProgress",
    "CheckReport",
    "CheckSummary",
    "CheckUpdate",
    "ContainerConfig",
    "Descriptor",
    "DiskUsage",
    "Event",
    "EventKind",
    "EventStream",
    "HistoryEntry",
    "Image",
    "ImageDetails",
    "ImageName",
    "ImageStoreClient",
    "ImageUsage",
    "IndexChild",
    "LoadLimits",
    "LoadResult",
    "LoadedImage",
    "NamedIndex",
    "Phase",
    "Platform",
    "Progress",
    "PruneResult",
    "PullResult",
    "PulledTag",
    "PushResult",
    "RegistryAuth",
    "RegistryLimits",
    "RemoveResult",
    "ResultStream",
    "ServerInfo",
    "ServiceLimits",
    "Settings",
    "Stream",
    "TagResult",
    "UnrecordedBlob",
]
