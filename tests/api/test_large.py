"""A 1 GiB Load and Save over loopback: digests survive, server memory stays flat."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server
from tests.api.test_service import Stub

LAYERS = 4
LAYER_BYTES = 256 << 20
CHUNK = 1 << 20
# What a 1 GiB round trip may add to the server's peak RSS: on this 2-core machine the
# Load's peak growth is bimodal (8-28 MiB in most runs, 72-77 MiB in a few: a second
# malloc arena or the transport's receive window filling while the loader compresses),
# never in proportion to the gigabyte moved.
RSS_BUDGET = 96 << 20


class _Noise(io.RawIOBase):
    """``size`` bytes, half random and half repeated text: a layer-like mix."""

    def __init__(self, size: int, seed: int) -> None:
        self._left = size
        self._block = os.urandom(CHUNK // 2) + (b"log line %d\n" % seed) * (CHUNK // 24)

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        size = min(len(target), self._left, len(self._block))
        target[:size] = self._block[:size]
        self._left -= size
        return size


def _make_archive(
    directory: Path, tag: str, layers: int = LAYERS, layer_bytes: int = LAYER_BYTES
) -> tuple[Path, str, list[str]]:
    """A docker-archive of layers x layer_bytes on disk; (path, image ID, diff_ids)."""
    diff_ids, layer_paths = [], []
    for index in range(layers):
        path = directory / f"layer{index}.tar"
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(f"data/part{index}.bin")
            info.size = layer_bytes
            tar.addfile(info, io.BufferedReader(_Noise(layer_bytes, index), CHUNK))
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
        diff_ids.append("sha256:" + digest.hexdigest())
        layer_paths.append(path)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = [
        {
            "Config": "config.json",
            "RepoTags": [tag],
            "Layers": [f"{i}/layer.tar" for i in range(layers)],
        }
    ]
    archive = directory / f"{tag.replace('/', '_').replace(':', '_')}.tar"
    with tarfile.open(archive, "w") as tar:
        for index, path in enumerate(layer_paths):
            tar.add(path, arcname=f"{index}/layer.tar")
            path.unlink()
        for name, body in (
            ("config.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return archive, "sha256:" + hashlib.sha256(config).hexdigest(), diff_ids


class _PeakRss:
    """Samples a process's RSS on a thread; ``peak`` once stopped."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _load_file(stub: Stub, path: Path) -> pb.LoadResponse:
    def requests() -> Iterator[pb.LoadRequest]:
        with path.open("rb") as source:
            yield pb.LoadRequest(header=pb.LoadHeader(declared_size=path.stat().st_size))
            while chunk := source.read(CHUNK):
                yield pb.LoadRequest(chunk=chunk)

    responses: list[pb.LoadResponse] = list(stub.Load(requests()))
    return responses[-1]


@pytest.mark.slow
def test_a_1_gib_load_and_save_round_trip_in_flat_memory(
    stub: Stub, server: Server, tmp_path: Path
) -> None:
    # Warm-up round: a 64 MiB load and save, so allocator pools and buffers exist.
    warm, _, _ = _make_archive(tmp_path, "warm/up:1", layers=2, layer_bytes=32 << 20)
    _load_file(stub, warm)
    for _ in stub.Save(pb.SaveRequest(images=["warm/up:1"])):
        pass
    baseline = psutil.Process(server.process.pid).memory_info().rss

    archive, image_id, diff_ids = _make_archive(tmp_path, "large/image:1")

    with _PeakRss(server.process.pid) as loading:
        loaded = _load_file(stub, archive)
    loaded_names = [(i.id, [n.familiar for n in i.names]) for i in loaded.result.images]
    assert loaded_names == [(image_id, ["large/image:1"])]
    details = stub.Inspect(pb.InspectRequest(image="large/image:1"))
    assert list(details.diff_ids) == diff_ids
    assert details.image.size > LAYERS * LAYER_BYTES

    saved = tmp_path / "saved.tar"
    with _PeakRss(server.process.pid) as saving, saved.open("wb") as out:
        for response in stub.Save(pb.SaveRequest(images=["large/image:1"])):
            out.write(response.chunk)
    with tarfile.open(saved) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
    assert "sha256:" + hashlib.sha256(config).hexdigest() == image_id
    assert json.loads(config)["rootfs"]["diff_ids"] == diff_ids

    grown = max(loading.peak, saving.peak) - baseline
    print(
        f"server RSS: baseline {baseline >> 20} MiB, peak growth load"
        f" {(loading.peak - baseline) >> 20} MiB, save {(saving.peak - baseline) >> 20} MiB"
    )
    assert grown <= RSS_BUDGET, f"server RSS grew by {grown >> 20} MiB over {baseline >> 20} MiB"
