"""What the client returns: plain dataclasses, no protobuf.

One module per family of calls holds its classes (``images``: ListImages';
``results``: the other image calls'; ``check``; ``transfer``: pull, push and
load; ``server``: GetServerInfo's; ``events``), imported on first use (PEP 562):
making a frozen dataclass takes a while, and a command pays only for the
classes its calls return. Import them from here, or from ``imagestore.client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagestore.client.models.check import (
        CheckEvent as CheckEvent,
    )
    from imagestore.client.models.check import (
        CheckProblem as CheckProblem,
    )
    from imagestore.client.models.check import (
        CheckProgress as CheckProgress,
    )
    from imagestore.client.models.check import (
        CheckReport as CheckReport,
    )
    from imagestore.client.models.check import (
        CheckSummary as CheckSummary,
    )
    from imagestore.client.models.check import (
        CheckUpdate as CheckUpdate,
    )
    from imagestore.client.models.check import (
        UnrecordedBlob as UnrecordedBlob,
    )
    from imagestore.client.models.events import (
        Event as Event,
    )
    from imagestore.client.models.events import (
        EventKind as EventKind,
    )
    from imagestore.client.models.images import (
        Descriptor as Descriptor,
    )
    from imagestore.client.models.images import (
        Image as Image,
    )
    from imagestore.client.models.images import (
        ImageName as ImageName,
    )
    from imagestore.client.models.images import (
        IndexChild as IndexChild,
    )
    from imagestore.client.models.images import (
        NamedIndex as NamedIndex,
    )
    from imagestore.client.models.images import (
        Platform as Platform,
    )
    from imagestore.client.models.results import (
        BlobChunk as BlobChunk,
    )
    from imagestore.client.models.results import (
        BlobStat as BlobStat,
    )
    from imagestore.client.models.results import (
        ContainerConfig as ContainerConfig,
    )
    from imagestore.client.models.results import (
        DiskUsage as DiskUsage,
    )
    from imagestore.client.models.results import (
        HistoryEntry as HistoryEntry,
    )
    from imagestore.client.models.results import (
        ImageDetails as ImageDetails,
    )
    from imagestore.client.models.results import (
        ImageUsage as ImageUsage,
    )
    from imagestore.client.models.results import (
        PruneResult as PruneResult,
    )
    from imagestore.client.models.results import (
        RemoveResult as RemoveResult,
    )
    from imagestore.client.models.results import (
        TagResult as TagResult,
    )
    from imagestore.client.models.server import (
        LoadLimits as LoadLimits,
    )
    from imagestore.client.models.server import (
        RegistryLimits as RegistryLimits,
    )
    from imagestore.client.models.server import (
        ServerInfo as ServerInfo,
    )
    from imagestore.client.models.server import (
        ServiceLimits as ServiceLimits,
    )
    from imagestore.client.models.transfer import (
        LoadedImage as LoadedImage,
    )
    from imagestore.client.models.transfer import (
        LoadResult as LoadResult,
    )
    from imagestore.client.models.transfer import (
        Phase as Phase,
    )
    from imagestore.client.models.transfer import (
        Progress as Progress,
    )
    from imagestore.client.models.transfer import (
        PulledTag as PulledTag,
    )
    from imagestore.client.models.transfer import (
        PullResult as PullResult,
    )
    from imagestore.client.models.transfer import (
        PushResult as PushResult,
    )
    from imagestore.client.models.transfer import (
        RegistryAuth as RegistryAuth,
    )

#: the module of each class, under imagestore.client.models
_HOMES = {
    "BlobChunk": "results",
    "BlobStat": "results",
    "CheckEvent": "check",
    "CheckProblem": "check",
    "CheckProgress": "check",
    "CheckReport": "check",
    "CheckSummary": "check",
    "CheckUpdate": "check",
    "ContainerConfig": "results",
    "Descriptor": "images",
    "DiskUsage": "results",
    "Event": "events",
    "EventKind": "events",
    "HistoryEntry": "results",
    "Image": "images",
    "ImageDetails": "results",
    "ImageName": "images",
    "ImageUsage": "results",
    "IndexChild": "images",
    "LoadLimits": "server",
    "LoadResult": "transfer",
    "LoadedImage": "transfer",
    "NamedIndex": "images",
    "Phase": "transfer",
    "Platform": "images",
    "Progress": "transfer",
    "PruneResult": "results",
    "PullResult": "transfer",
    "PulledTag": "transfer",
    "PushResult": "transfer",
    "RegistryAuth": "transfer",
    "RegistryLimits": "server",
    "RemoveResult": "results",
    "ServerInfo": "server",
    "ServiceLimits": "server",
    "TagResult": "results",
    "UnrecordedBlob": "check",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
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
    "HistoryEntry",
    "Image",
    "ImageDetails",
    "ImageName",
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
    "ServerInfo",
    "ServiceLimits",
    "TagResult",
    "UnrecordedBlob",
]
