"""The benches' images: OCI layouts of big, half-compressible layers, built once
per data directory (skopeo makes the layout from a docker-archive, so its gzip
is what a real registry would serve) and published to a `docker-registry`.

bench_registry, bench_endpoint and bench_pull_through all measure the same big
image (3 layers of 200 MiB uncompressed, ~100 MiB gzip each); building it here
keeps their figures comparable.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import tarfile
from pathlib import Path

from tests.archives import tar_of

MIB = 1 << 20
SKOPEO = ["skopeo", "--override-os", "linux"]


def half_compressible(size: int, seed: int) -> bytes:
    """4 KiB random then 4 KiB text, repeated: gzip keeps about half."""
    rng = random.Random(seed)
    text = (b"the quick brown fox jumps over the lazy dog %d\n" % seed) * 100
    block = bytearray()
    while len(block) < size:
        block += rng.randbytes(4096)
        block += text[:4096]
    return bytes(block[:size])


def oci_source(data: Path, name: str, layers: list[bytes]) -> Path:
    """An OCI layout (gzip layers, made by skopeo) of an image with these layer tars."""
    layout = data / f"{name}-oci"
    if (layout / "index.json").exists():
        return layout
    archive = data / f"{name}.tar"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers],
            },
        }
    ).encode()
    manifest = [
        {
            "Config": "config.json",
            "RepoTags": [f"bench/{name}:1"],
            "Layers": [f"{i}/layer.tar" for i in range(len(layers))],
        }
    ]
    with tarfile.open(archive, "w") as tar:
        for member, body in [
            *((f"{i}/layer.tar", t) for i, t in enumerate(layers)),
            ("config.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(member)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    subprocess.run(
        [*SKOPEO, "copy", "-q", f"docker-archive:{archive}", f"oci:{layout}:1"], check=True
    )
    archive.unlink()
    return layout


def big_image(data: Path) -> Path:
    """The layout of the big image under ``data``; its 600 MiB of layer tars are
    made only when no earlier run left the layout there."""
    layout = data / "big-oci"
    if (layout / "index.json").exists():
        return layout
    return oci_source(
        data, "big", [tar_of({f"layer{i}": half_compressible(200 * MIB, i)}) for i in range(3)]
    )


def blob_bytes(layout: Path) -> int:
    """The size of every blob of a layout (what a registry serves for a full pull)."""
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


def publish(layout: Path, reference: str) -> None:
    """``skopeo copy`` of the layout's image to ``reference`` on a plain-HTTP registry."""
    subprocess.run(
        [
            *SKOPEO,
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{layout}:1",
            f"docker://{reference}",
        ],
        check=True,
    )
