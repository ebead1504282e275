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
