"""AsyncImageStoreClient used the way an asyncio service uses it: 100 concurrent
calls of mixed kinds on one client against the real server, some streams
cancelled mid-way (by ``cancel()`` and by cancelling the awaiting task), some
ended by their deadline; then the server still answers and kept nothing of
the cancelled calls."""

from __future__ import annotations

import asyncio
import io
import random
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.client import AsyncImageStoreClient, ImageName, Phase
from tests.api.conftest import Server, start_server, wait_until
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.client.serverlog import wait_for_failed_ends

NOISE = random.Random(7).randbytes(3 << 19)  # incompressible: 1.5 MiB stored, 2 chunks
APP = ImageSpec(["app:1"], [tar_of({"a": b"a" * 3000}), tar_of({"noise": NOISE})])
CALLS = 100
#: a Load that cannot end by itself: what is sent of its archive, then nothing
PARTIAL_SHARE = 2
#: the deadline of the loads that cannot end otherwise (long enough for the
#: server to answer their first member on a busy machine)
DEADLINE = 3.0


@pytest.fixture
def roomy_server(tmp_path: Path) -> Iterator[Server]:
    """The real server with room for every stream of the batch at once: the test
    is about the client's concurrency, not the server's admission limits."""
    running = start_server(
        tmp_path / "root",
        "--listen", "127.0.0.1:0",
        "--grace-period", "5",
        "--max-concurrent-streams", str(CALLS),
    )  # fmt: skip
    yield running
    assert running.stop() == 0, "".join(running.stderr_lines)[-3000:]


def _spec(kind: str, index: int) -> ImageSpec:
    """An image of its own per call (its own layer), so that a cancelled call's
    blobs are not another call's."""
    own = tar_of({"own": f"{kind}{index}".encode() * 500})
    return ImageSpec([f"{kind}/{index}:1"], [own, tar_of({"noise": NOISE})])


async def _partial(archive: bytes, never: asyncio.Event) -> AsyncIterator[bytes]:
    """Half of an archive, then a wait nobody ends: the server keeps reading."""
    yield archive[: len(archive) // PARTIAL_SHARE]
    await never.wait()


def _blob_files(root: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").iterdir()}


async def _referenced(client: AsyncImageStoreClient) -> set[str]:
    """Every blob the listed images need: manifests, configs and layers."""
    needed: set[str] = set()
    for image in await client.list_images(all=True):
        details = await client.inspect(image.id)
        needed |= {details.manifest.digest, details.config_descriptor.digest}
        needed |= {layer.digest for layer in details.layers}
    return needed


def test_one_client_serves_100_concurrent_calls_with_cancellations_and_deadlines(
    roomy_server: Server,
) -> None:
    root = roomy_server.root
    config_digest = APP.image_id
    never = asyncio.Event()  # set by nobody: blocked loads end only by cancel or deadline
    answered: set[int] = set()  # the loads past their deadline that the server answered

    async def scenario() -> dict[str, int]:
        async with AsyncImageStoreClient(roomy_server.address, timeout=60) as client:
            loaded = await client.load(io.BytesIO(docker_archive(APP))).result()
            assert [i.id for i in loaded.images] == [APP.image_id]

            async def list_images(i: int) -> None:
                images = await client.list_images()
                assert APP.image_id in {image.id for image in images}

            async def inspect_present(i: int) -> None:
                details = await client.inspect("app:1")
                assert details.image.id == APP.image_id
                assert details.diff_ids == tuple(sha(layer) for layer in APP.layers)

            async def inspect_absent(i: int) -> None:
                with pytest.raises(errors.ImageNotFound) as missing:
                    await client.inspect(f"absent/{i}:1")
                assert missing.value.metadata == {"image": f"absent/{i}:1"}
                assert missing.value.request_id  # the server's ID of the call

            async def tag(i: int) -> None:
                tagged = await client.tag("app:1", f"tagged/{i}:x")
                assert tagged.target == ImageName(f"tagged/{i}:x", f"docker.io/tagged/{i}:x")
                assert tagged.image_ids == (APP.image_id,)

            async def history(i: int) -> None:
                entries = await client.history("app:1")
                assert [e.created_by for e in entries] == ["COPY layer1 /", "COPY layer0 /"]

            async def stat_blob(i: int) -> None:
                stat = await client.stat_blob(config_digest)
                assert stat.image_ids == (APP.image_id,)

            async def load(i: int) -> None:
                spec = _spec("loaded", i)
                call = client.load(io.BytesIO(docker_archive(spec)))
                progress = [p async for p in call]
                result = await call.result()
                assert progress
                assert {p.phase for p in progress} <= {
                    Phase.COMPLETE,
                    Phase.ALREADY_EXISTS,
                    Phase.SKIPPED,
                }
                assert [
                    (image.id, [n.familiar for n in image.names]) for image in result.images
                ] == [(spec.image_id, [f"loaded/{i}:1"])]

            async def save(i: int) -> None:
                archive = b"".join([chunk async for chunk in client.save(["app:1"])])
                with tarfile.open(fileobj=io.BytesIO(archive)) as saved:
                    assert "manifest.json" in saved.getnames()

            async def read_blob(i: int) -> None:
                data = b"".join([c async for c in client.read_blob(config_digest)])
                assert data == APP.config()

            async def check(i: int) -> None:
                busy: errors.CheckRunning | None = None
                try:  # one Check runs at a time: the others are told when to retry
                    assert (await client.check_report()).ok
                except errors.CheckRunning as refused:
                    busy = refused
                assert busy is None or busy.retry_after == 5

            async def load_cancelled(i: int) -> None:
                """cancel() once the server has answered: reading on is Cancelled."""
                call = client.load(_partial(docker_archive(_spec("cancelled", i)), never))
                async for _ in call:
                    call.cancel()
                    break
                with pytest.raises(errors.Cancelled):
                    await call.result()

            async def load_task_cancelled(i: int) -> None:
                """The task awaiting the stream is cancelled: so is the call."""
                answered = asyncio.Event()

                async def consume() -> None:
                    call = client.load(_partial(docker_archive(_spec("abandoned", i)), never))
                    async for _ in call:
                        answered.set()

                task = asyncio.create_task(consume())
                await answered.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

            async def load_past_its_deadline(i: int) -> None:
                call = client.load(
                    _partial(docker_archive(_spec("late", i)), never), timeout=DEADLINE
                )

                async def follow() -> None:
                    async for _ in call:
                        answered.add(i)  # the server has the call: it will log its end

                with pytest.raises(errors.DeadlineExceeded) as late:
                    await follow()
                assert late.value.status == "DEADLINE_EXCEEDED"

            kinds: list[Callable[[int], Awaitable[None]]] = [
                list_images,
                inspect_present,
                inspect_absent,
                tag,
                history,
                stat_blob,
                load,
                save,
                read_blob,
                check,
                load_cancelled,
                load_task_cancelled,
                load_past_its_deadline,
            ]
            chosen = [kinds[i % len(kinds)] for i in range(CALLS)]
            await asyncio.gather(*(call(i) for i, call in enumerate(chosen)))
            counts = {kind.__name__: chosen.count(kind) for kind in kinds}

            # the server is fine: it answers, and kept nothing of the cancelled loads
            names = {n.familiar for image in await client.list_images() for n in image.repo_tags}
            expected = {"app:1"}
            expected |= {f"tagged/{i}:x" for i, kind in enumerate(chosen) if kind is tag}
            expected |= {f"loaded/{i}:1" for i, kind in enumerate(chosen) if kind is load}
            assert names == expected
            stopped = chosen.count(load_cancelled) + chosen.count(load_task_cancelled)
            stopped += len(answered)  # a late call the server never saw logs nothing
            wait_for_failed_ends(roomy_server, "Load", stopped)  # the server's side is over
            needed = await _referenced(client)
            # a cancelled call's cleanup ends on the server after the client has
            # moved on: its lease sweeps what it stored, its ingest goes
            wait_until(
                lambda: (
                    _blob_files(root) == needed and not any((root / "blobs" / "ingest").iterdir())
                )
            )
            report = await client.check_report()
            assert report.ok
            assert report.unrecorded_blobs == ()
            return counts

    counts = asyncio.run(scenario())
    assert sum(counts.values()) == CALLS
    assert min(counts.values()) >= CALLS // 13
    assert "Traceback" not in "".join(roomy_server.stderr_lines)
