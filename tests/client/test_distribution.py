"""imagestore-client installs alone: its wheel, built from client/, goes into a
fresh venv with no compiler (CC=false), takes only its declared dependencies
from the package index, and talks to a real server with both clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.api.conftest import PROJECT, Server
from tests.archives import ImageSpec, docker_archive, tar_of

APP = ImageSpec(["alone:1"], [tar_of({"a": b"a" * 3000})])

#: run in the fresh venv: nothing of the server is there, both clients work
SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.util, sys

    for name in ("cffi", "aiohttp", "rich", "imagestore.hashing", "imagestore.store",
                 "imagestore.api", "imagestore.cli"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed"

    from imagestore import errors
    from imagestore.client import AsyncImageStoreClient, ImageStoreClient

    address, archive, image_id = sys.argv[1:4]
    with ImageStoreClient(address, timeout=30) as client:
        assert client.list_images() == []
        loaded = client.load(archive).result()
        assert [i.id for i in loaded.images] == [image_id], loaded
        assert client.inspect("alone:1").image.id == image_id
        try:
            client.inspect("absent:1")
        except errors.ImageNotFound:
            pass
        else:
            raise AssertionError("no ImageNotFound")

    async def main():
        async with AsyncImageStoreClient(address, timeout=30) as client:
            assert [i.id for i in await client.list_images()] == [image_id]
            assert (await client.inspect("alone:1")).image.id == image_id
            await client.tag("alone:1", "alone:2")

    asyncio.run(main())
    print("ok")
    """
)


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_client_installs_alone_without_a_compiler(server: Server, tmp_path: Path) -> None:
    # built from a copy: a build writes its build/ and egg-info beside the sources
    source = tmp_path / "client"
    shutil.copytree(
        PROJECT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         source, "-w", wheels)  # fmt: skip
    [wheel] = wheels.glob("imagestore_client-*.whl")
    venv = tmp_path / "venv"
    base = Path(getattr(sys, "_base_executable", sys.executable))
    _run(base, "-m", "venv", venv)
    python = venv / "bin" / "python"
    no_compiler = {**os.environ, "CC": "false", "CXX": "false", "PIP_NO_INPUT": "1"}
    no_compiler.pop("PYTHONPATH", None)
    _run(python, "-m", "pip", "install", "--quiet", wheel, env=no_compiler)
    installed = _run(python, "-m", "pip", "list", "--format=freeze", env=no_compiler)
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert {"imagestore-client", "grpcio", "protobuf", "googleapis-common-protos"} <= names
    assert not names & {"imagestore", "cffi", "aiohttp", "rich", "prometheus-client"}

    archive = tmp_path / "alone.tar"
    archive.write_bytes(docker_archive(APP))
    script = tmp_path / "use_the_client.py"
    script.write_text(SCRIPT)
    # run from the venv's folder: the project's sources must not be importable
    out = subprocess.run(
        [python, script, server.address, archive, APP.image_id],
        capture_output=True,
        text=True,
        cwd=venv,
        env=no_compiler,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
