"""Docker-save archives made in memory, for feeding Load."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class ImageSpec:
    tags: Sequence[str]
    layers: Sequence[bytes]  # uncompressed layer tars
    labels: dict[str, str] = field(default_factory=dict)
    created: str = "2024-05-06T07:08:09Z"
    architecture: str = "amd64"

    def config(self) -> bytes:
        return json.dumps(
            {
                "architecture": self.architecture,
                "os": "linux",
                "created": self.created,
                "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/app"], "Labels": self.labels},
                "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in self.layers]},
                "history": [
                    {"created": self.created, "created_by": f"COPY layer{i} /"}
                    for i in range(len(self.layers))
                ],
            },
            sort_keys=True,
        ).encode()

    @property
    def image_id(self) -> str:
        return sha(self.config())


def docker_archive(*images: ImageSpec) -> bytes:
    """A legacy `docker save` archive: <hex>.json configs, <n>/layer.tar layers."""
    members: dict[str, bytes] = {}
    manifest = []
    for image in images:
        config = image.config()
        members[f"{sha(config)[7:]}.json"] = config
        paths = []
        for layer in image.layers:
            path = f"{sha(layer)[7:19]}/layer.tar"
            members[path] = layer
            paths.append(path)
        manifest.append(
            {"Config": f"{sha(config)[7:]}.json", "RepoTags": list(image.tags), "Layers": paths}
        )
    members["manifest.json"] = json.dumps(manifest).encode()
    return tar_of(members)
