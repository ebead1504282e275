"""Build small, real images straight into a store (as Load and Pull do)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import Reference, parse_reference
from imagestore.store.blobs import Encoding
from imagestore.store.leases import Lease
from imagestore.store.models import CommitResult, EventKind
from imagestore.store.store import Store


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A deterministic tar of regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass(frozen=True)
class Built:
    result: CommitResult
    image_id: str
    manifest: Descriptor
    layers: tuple[Descriptor, ...]


def build_image(
    store: Store,
    layers: Sequence[bytes],
    *,
    names: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    created: str = "2024-01-02T03:04:05.123456789Z",
    architecture: str = "amd64",
    variant: str = "",
    oci: bool = True,
    history: list[dict[str, object]] | None = None,
    commit: bool = True,
    lease: Lease | None = None,
    event: EventKind = EventKind.TAG,
) -> Built:
    """Compress the layer tars into the store, write config and manifest, commit.

    Without ``lease`` it takes its own, so uncommitted blobs go when it returns.
    ``event`` is who commits, for the events journal (pull, load, or tag).
    """
    with nullcontext(lease) if lease is not None else store.lease() as lease:
        descriptors = []
        diff_ids = []
        layer_type = mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP
        for tar in layers:
            with store.ingest(lease, encoding=Encoding.COMPRESS) as ingest:
                ingest.write(tar)
                info = store.commit(ingest, lease, layer_type)
            assert info.diff_id is not None
            descriptors.append(Descriptor(layer_type, info.digest, info.size))
            diff_ids.append(info.diff_id)
        config: dict[str, object] = {
            "architecture": architecture,
            "os": "linux",
            "created": created,
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"], "Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history
            if history is not None
            else [{"created": created, "created_by": f"ADD layer {i}"} for i in range(len(layers))],
        }
        if variant:
            config["variant"] = variant
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_type = mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG
        config_info = store.put_blob(lease, config_bytes, config_type)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
            "config": {
                "mediaType": config_type,
                "digest": config_info.digest,
                "size": config_info.size,
            },
            "layers": [d.to_json() for d in descriptors],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_type = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
        manifest_info = store.put_blob(lease, manifest_bytes, manifest_type)
        target = Descriptor(manifest_type, manifest_info.digest, manifest_info.size)
        references: list[Reference] = [parse_reference(n) for n in names]
        result = (
            store.commit_target(lease, target, references, event=event)
            if commit
            else CommitResult(target.digest, (), (), ())
        )
    return Built(result, config_info.digest, target, tuple(descriptors))


def build_index(
    store: Store,
    children: Sequence[tuple[Built, str]],
    *,
    names: Sequence[str] = (),
    absent: Sequence[tuple[str, str]] = (),
    event: EventKind = EventKind.TAG,
) -> CommitResult:
    """An OCI index over built (uncommitted is fine) manifests with their platforms;
    ``absent`` adds (digest, platform) entries whose manifests are not stored."""
    entries = []
    for built, platform in children:
        entries.append({**built.manifest.to_json(), "platform": _platform_json(platform)})
    for digest, platform in absent:
        entries.append(
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": digest,
                "size": 1234,
                "platform": _platform_json(platform),
            }
        )
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    ).encode()
    with store.lease() as lease:
        info = store.put_blob(lease, body, mt.OCI_INDEX)
        target = Descriptor(mt.OCI_INDEX, info.digest, info.size)
        return store.commit_target(lease, target, [parse_reference(n) for n in names], event=event)


def _platform_json(text: str) -> dict[str, str]:
    parts = text.split("/")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out
