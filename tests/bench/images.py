"""The benches' images: OCI layouts of big, half-compressible layers, built once
per data directory (skopeo makes the layout from a docker-archive, so its gzip
is what a real registry would serve) and published to a `docker-registry`.

bench_registry, bench_endpoint, bench_pull_through and bench_transfer all
measure the same big image (3 layers of 200 MiB uncompressed, ~100 MiB gzip
each); building it here keeps their figures comparable. bench_transfer adds a
real-world image made of this machine's own files (a Debian-like base and
Python's stdlib: no network, so no debootstrap) and one of 200 tiny layers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from collections.abc import Sequence
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


def _diff_id(layer: bytes | Path) -> str:
    if isinstance(layer, bytes):
        return "sha256:" + hashlib.sha256(layer).hexdigest()
    with layer.open("rb") as tar:
        return "sha256:" + hashlib.file_digest(tar, "sha256").hexdigest()


def _layer_body(layer: bytes | Path) -> tuple[int, io.BufferedIOBase]:
    if isinstance(layer, bytes):
        return len(layer), io.BytesIO(layer)
    return layer.stat().st_size, layer.open("rb")


def oci_source(data: Path, name: str, layers: Sequence[bytes | Path]) -> Path:
    """An OCI layout (gzip layers, made by skopeo) of an image with these layer
    tars, each given as bytes or as the path of a tar file (big layers)."""
    layout = data / f"{name}-oci"
    if (layout / "index.json").exists():
        return layout
    archive = data / f"{name}.tar"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(t) for t in layers]},
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
            info.size, stream = _layer_body(body)
            with stream:
                tar.addfile(info, stream)
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


#: where the real-world image's two layers come from, with the regular-file
#: bytes taken from each root (None: all of it): a Debian-like base (the
#: configuration, some tools, the shared libraries) and Python's stdlib; the
#: two gzip layers come to about the 111 MB of issue 19's real-world image
BASE_ROOTS: tuple[tuple[str, int | None], ...] = (
    ("/etc", None),
    ("/usr/bin", 50 * 10**6),
    ("/usr/lib/x86_64-linux-gnu", 125 * 10**6),
)
STDLIB_ROOTS: tuple[tuple[str, int | None], ...] = (("/usr/lib/python3.11", None),)


def files_tar(path: Path, roots: Sequence[tuple[str, int | None]]) -> Path:
    """A tar of the directories, symlinks and regular files under each root, in a
    fixed (sorted) order, leaving a root once its regular files reach its budget
    of bytes; unreadable files are left out. Written once: an existing tar stays."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for root, budget in roots:
            _add_tree(tar, root, budget)
    partial.rename(path)
    return path


def _add_tree(tar: tarfile.TarFile, root: str, budget: int | None) -> None:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        tar.add(dirpath, recursive=False)
        for name in sorted(filenames):
            file = Path(dirpath, name)
            if not (file.is_symlink() or file.is_file()):
                continue  # sockets, fifos, devices
            try:
                tar.add(file, recursive=False)
            except OSError:
                continue
            if not file.is_symlink():
                total += file.stat().st_size
            if budget is not None and total >= budget:
                return


def real_image(data: Path) -> Path:
    """The layout of the real-world image under ``data``: a Debian-like base
    layer and a Python stdlib layer, made of this machine's files (once)."""
    layout = data / "real-oci"
    if (layout / "index.json").exists():
        return layout
    base = files_tar(data / "real-base.tar", BASE_ROOTS)
    stdlib = files_tar(data / "real-stdlib.tar", STDLIB_ROOTS)
    layout = oci_source(data, "real", [base, stdlib])
    base.unlink()
    stdlib.unlink()
    return layout


def tiny_image(data: Path, layers: int = 200) -> Path:
    """The layout of an image of ``layers`` layers, each a tar of one 1 KiB file."""
    return oci_source(
        data,
        "tiny",
        [tar_of({f"f{i}": (b"%d " % i * 1024)[:1024]}) for i in range(layers)],
    )


def layer_blobs(layout: Path) -> list[Path]:
    """The layer blobs of a single-image layout, base first, as its manifest lists them."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = json.loads((blobs / manifest_digest).read_text())
    return [blobs / layer["digest"].removeprefix("sha256:") for layer in manifest["layers"]]


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
