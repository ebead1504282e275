"""Hostile registries against the real server: bodies, indexes, endpoints, slow peers.

Each attack runs inside ``target.watch()`` (health and Inspect keep answering
within 2 s) and, when it fails, must leave nothing stored. Bounds enforced:

- a 400 MiB ping or error body (streamed by the registry, with or without a
  Content-Length): the pull works or fails UNAVAILABLE, RSS grows < 32 MiB,
  and the registry sends only what fits in the socket buffers, not the body;
- an index listing one 4 MiB manifest 150 times (``platforms: all``): fetched
  once, RSS grows < 32 MiB; 40 distinct 2 MiB manifests: refused
  (RESOURCE_EXHAUSTED / SIZE_LIMIT_EXCEEDED, --max-manifest-bytes-per-pull)
  before any is fetched;
- an index of 1,001 entries: refused the same way (--max-index-children)
  before any child is fetched; 1,000 pass;
- a 20-platform index pulled with ``platforms: all`` succeeds (real content);
- 300 distinct registry endpoints (127.x.y.z:1, refused at once): each pull
  ends UNAVAILABLE, and RSS grows < 32 MiB (a TLS context each cost ~840 KiB);
- a registry that holds its downloads and one answering 503 with
  ``Retry-After: 60`` fill only their own download slots: a pull from a healthy
  registry finishes while they are blocked, and a slot is not kept while a
  download waits to retry;
- a download under --registry-min-speed, or past --registry-blob-timeout,
  ends UNAVAILABLE after its tries.

In-process checks cover the bounded state behind these: TLS contexts (shared,
LRU of TLS_CACHE_SIZE), tokens (LRU, large ones never kept), per-host slots
(forgotten when idle) and the bounded job runner of a pull.

Threads may grow by 12 at most (the transfer pool's 8, made on first use, and
gRPC's), descriptors by 16.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from imagestore import errors
from imagestore.dockerconfig import ANONYMOUS
from imagestore.registry.auth import MAX_CACHED_TOKEN, Challenge, TokenCache
from imagestore.registry.blocking import TRANSFER_WORKERS, run_all
from imagestore.registry.options import RegistryOptions
from imagestore.registry.slots import HostSlots
from imagestore.registry.trust import TLS_CACHE_SIZE, Trust
from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import wait_until
from tests.archives import tar_of
from tests.hostile.conftest import MiB, Target, rpc_error
from tests.registry.conftest import Transfer, pull
from tests.registry.hostile import OCI_INDEX, HostileRegistry, Image, make_image, make_index

#: quick retries; the idle timeout stays long so that only the limit under test ends a try
OPTIONS = (
    "--registry-backoff",
    "0.01",
    "--registry-attempts",
    "2",
    "--registry-connect-timeout",
    "5",
    "--registry-idle-timeout",
    "30",
)
#: growth allowed: the transfer pool (8 threads, made on first use) and gRPC's own
THREADS = 12
SMALL_SLOTS = RegistryOptions().max_concurrent_small_downloads
TRANSFER_THREADS = TRANSFER_WORKERS
HUGE = 400 * MiB


@pytest.fixture
def server_options() -> tuple[str, ...]:
    return OPTIONS


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def _image(name: str, size: int = 4000, annotations: dict[str, str] | None = None) -> Image:
    """A one-layer image of about ``size`` bytes of content."""
    content = name.encode() * (size // len(name))
    return make_image([tar_of({f"etc/{name}": content})], annotations=annotations)


def _refused(target: Target, image: str, *platforms: str) -> tuple[grpc.StatusCode, str, str]:
    """The code, ErrorInfo reason and message of a pull that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        pull(target.stub, image, *platforms, timeout=60)
    code, reason, _ = rpc_error(caught.value)
    return code, reason, str(caught.value.details())


def _remove(target: Target, *images: str) -> None:
    """Untag what a test pulled and prune, so assert_clean sees the seed alone."""
    target.stub.Remove(pb.RemoveRequest(images=list(images), force=True), timeout=30)
    target.stub.Prune(pb.PruneRequest(all=False), timeout=30)


# ---- bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_ping_body_is_not_read(
    target: Target, hostile: HostileRegistry, chunked: bool
) -> None:
    image = _image("ping")
    hostile.add_image("huge/ping", "1", image)
    hostile.ping_body, hostile.ping_chunked = HUGE, chunked
    with target.watch() as seen:
        pulled = pull(target.stub, f"{hostile.host}/huge/ping:1", timeout=60)
    assert list(pulled.last.image_ids) == [image.config_digest]
    assert hostile.requests[("GET", "/v2/")] >= 1
    assert hostile.ping_sent < 32 * MiB, f"the registry sent {hostile.ping_sent >> 20} MiB"
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    _remove(target, f"{hostile.host}/huge/ping:1")
    target.assert_clean()


def test_a_huge_error_body_is_not_read(target: Target, hostile: HostileRegistry) -> None:
    image = _image("error")
    hostile.add_image("huge/error", "1", image)
    hostile.faults[image.layer_digests[0]] = f"huge-error:{HUGE}"
    with target.watch() as seen:
        code, reason, message = _refused(target, f"{hostile.host}/huge/error:1")
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "REGISTRY_UNAVAILABLE")
    assert "HTTP 500" in message
    assert hostile.downloads(image.layer_digests[0]) == 2  # both tries, then given up
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    target.assert_clean()


def test_an_error_body_nested_too_deeply_is_shown_as_text(
    target: Target, hostile: HostileRegistry
) -> None:
    image = _image("nested-error")
    hostile.add_image("nested/error", "1", image)
    hostile.faults[image.layer_digests[0]] = "nested-error"
    code, reason, message = _refused(target, f"{hostile.host}/nested/error:1")
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REGISTRY_REFUSED")
    assert '{"errors": [[[' in message  # its first line, as for any body that is not JSON
    target.assert_clean()


# ---- indexes -----------------------------------------------------------------------


def _large_image(name: str, size: int) -> Image:
    """An image whose manifest is ``size`` bytes, padded with an annotation."""
    bare = _image(name, annotations={"pad": "x"})
    image = _image(name, annotations={"pad": "x" * (1 + size - len(bare.manifest))})
    assert len(image.manifest) == size
    return image


def test_one_large_manifest_listed_150_times_is_fetched_once(
    target: Target, hostile: HostileRegistry
) -> None:
    image = _large_image("large", 4 * MiB - 64)
    hostile.add_image("large/index", "child", image)
    hostile.add_manifest("large/index", "1", make_index([(image, "amd64")] * 150), OCI_INDEX)
    with target.watch() as seen:
        pulled = pull(target.stub, f"{hostile.host}/large/index:1", "all", timeout=120)
    assert list(pulled.last.image_ids) == [image.config_digest]
    assert hostile.requests[("GET", image.digest)] == 1
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    _remove(target, f"{hostile.host}/large/index:1")
    target.assert_clean()


def test_manifests_past_the_bytes_per_pull_are_refused_before_any_is_fetched(
    target: Target, hostile: HostileRegistry
) -> None:
    images = [_large_image(f"many{i}", 2 * MiB) for i in range(40)]  # 80 MiB > 64 MiB
    for number, image in enumerate(images):
        hostile.add_image("many/index", f"child{number}", image)
    hostile.add_manifest(
        "many/index",
        "1",
        make_index([(image, f"arch{i}") for i, image in enumerate(images)]),
        OCI_INDEX,
    )
    with target.watch() as seen:
        code, reason, message = _refused(target, f"{hostile.host}/many/index:1", "all")
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SIZE_LIMIT_EXCEEDED")
    assert "--max-manifest-bytes-per-pull" in message
    assert all(hostile.requests[("GET", image.digest)] == 0 for image in images)
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    target.assert_clean()


@pytest.mark.parametrize(("entries", "refused"), [(1001, True), (1000, False)])
def test_an_index_over_the_children_cap_is_refused_before_any_child_is_fetched(
    target: Target, hostile: HostileRegistry, entries: int, refused: bool
) -> None:
    image = _image("children")
    hostile.add_image("wide/index", "child", image)
    hostile.add_manifest("wide/index", "1", make_index([(image, "amd64")] * entries), OCI_INDEX)
    reference = f"{hostile.host}/wide/index:1"
    with target.watch() as seen:
        if refused:
            code, reason, message = _refused(target, reference, "all")
        else:
            pulled = pull(target.stub, reference, "all", timeout=60)
    if refused:
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SIZE_LIMIT_EXCEEDED")
        assert "1001" in message
        assert "--max-index-children" in message
        assert hostile.requests[("GET", image.digest)] == 0
    else:
        assert list(pulled.last.image_ids) == [image.config_digest]
        assert hostile.requests[("GET", image.digest)] == 1
        _remove(target, reference)
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    target.assert_clean()


def test_a_20_platform_index_pulls_whole(target: Target, hostile: HostileRegistry) -> None:
    images = [
        make_image(
            [tar_of({"etc/base": b"base" * 1000}), tar_of({f"bin/{i}": bytes([i]) * 3000})],
            architecture=f"arch{i}",
        )
        for i in range(20)
    ]
    for number, image in enumerate(images):
        hostile.add_image("multi/app", f"p{number}", image)
    hostile.add_manifest(
        "multi/app",
        "1",
        make_index([(image, f"arch{i}") for i, image in enumerate(images)]),
        OCI_INDEX,
    )
    with target.watch() as seen:
        pulled = pull(target.stub, f"{hostile.host}/multi/app:1", "all", timeout=120)
    assert sorted(pulled.last.image_ids) == sorted(image.config_digest for image in images)
    assert hostile.downloads(images[0].layer_digests[0]) == 1  # the shared base, once
    # its 21 small layers fill the registry's small slots, a connection each (kept
    # alive after), and each transfer thread that stores one keeps a catalog reader
    # (the database and its WAL)
    seen.assert_within(rss=32 * MiB, threads=THREADS, fds=SMALL_SLOTS + 2 * TRANSFER_THREADS)
    checked: list[pb.CheckResponse] = list(target.stub.Check(pb.CheckRequest(), timeout=60))
    assert checked[-1].summary.ok
    _remove(target, f"{hostile.host}/multi/app:1")
    target.assert_clean()


# ---- endpoints ---------------------------------------------------------------------


def test_many_registry_endpoints_cost_no_memory_each(target: Target) -> None:
    # 127.0.0.0/8 is loopback: every one of these refuses the connection at once,
    # after the server has chosen a TLS context for it (https is tried first).
    endpoints = [f"127.1.{n // 200}.{n % 200 + 1}:1" for n in range(300)]

    def attempt(endpoint: str) -> tuple[grpc.StatusCode, str, str]:
        return _refused(target, f"{endpoint}/some/app:1")

    assert attempt("127.0.255.1:1")[0] == grpc.StatusCode.UNAVAILABLE  # warm the pull path
    with target.watch() as seen, ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, endpoints))
    assert {(code, reason) for code, reason, _ in outcomes} == {
        (grpc.StatusCode.UNAVAILABLE, "REGISTRY_UNAVAILABLE")
    }
    assert all("cannot reach registry" in message for _, _, message in outcomes)
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    target.assert_clean()


# ---- slow registries ---------------------------------------------------------------


def _in_background(
    target: Target, image: str
) -> tuple[threading.Thread, list[Transfer[pb.PullResult] | grpc.RpcError], Callable[[], None]]:
    """A pull on its own thread: (thread, its outcome once done, cancel)."""
    outcome: list[Transfer[pb.PullResult] | grpc.RpcError] = []
    call = target.stub.Pull(pb.PullRequest(image=image), timeout=120)

    def run() -> None:
        try:
            messages = list(call)
            events = [m.progress for m in messages if m.HasField("progress")]
            outcome.append(Transfer(events, messages[-1].result))
        except grpc.RpcError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome, call.cancel


def _wait_for_ingests_to_end(target: Target) -> None:
    """A cancelled pull cleans up after the call ends: wait (bounded) for it."""
    wait_until(lambda: not list((target.server.root / "blobs" / "ingest").iterdir()), timeout=30)


@pytest.fixture
def holding() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


@pytest.fixture
def refusing() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def _layers(name: str, count: int) -> Image:
    return make_image([tar_of({f"{name}/{i}": bytes([i]) * 20_000}) for i in range(count)])


@pytest.mark.parametrize(
    "server_options",
    # held downloads stay held however long the healthy pull takes on a busy machine;
    # the layers are small: their slots are the small ones
    [
        (
            *OPTIONS,
            "--registry-min-speed",
            "0",
            "--registry-idle-timeout",
            "600",
            "--max-concurrent-small-downloads",
            "3",
        )
    ],
    ids=["no-floor"],
)
def test_slow_registries_fill_only_their_own_download_slots(
    target: Target,
    hostile: HostileRegistry,
    holding: HostileRegistry,
    refusing: HostileRegistry,
) -> None:
    held = _layers("held", 4)
    holding.add_image("slow/held", "1", held)
    for digest in held.layer_digests:
        holding.faults[digest] = "hold"
    later = _layers("later", 4)
    refusing.add_image("slow/later", "1", later)
    for digest in later.layer_digests:
        refusing.faults[digest] = "retry-after:60"
    healthy = _layers("healthy", 4)
    hostile.add_image("fast/app", "1", healthy)

    with target.watch() as seen:
        first, first_outcome, _ = _in_background(target, f"{holding.host}/slow/held:1")
        holding.wait_until(lambda: holding.holding == 3)  # all three slots of that registry
        second, _, cancel_second = _in_background(target, f"{refusing.host}/slow/later:1")
        refusing.wait_until(
            lambda: sum(refusing.downloads(d) > 0 for d in later.layer_digests) == 3
        )
        # both stay blocked (held bytes, a minute's Retry-After) while this pull runs
        pulled = pull(target.stub, f"{hostile.host}/fast/app:1", timeout=60)
        assert holding.holding == 3
        assert sorted(refusing.downloads(d) for d in later.layer_digests) == [0, 1, 1, 1]
        holding.release()
        first.join(60)
        cancel_second()
        second.join(60)
        _wait_for_ingests_to_end(target)
    assert list(pulled.last.image_ids) == [healthy.config_digest]
    assert isinstance(first_outcome[0], Transfer)
    assert list(first_outcome[0].last.image_ids) == [held.config_digest]
    # at the peak, three registries each fill their three slots with a socket and an
    # ingest file; the watchdog's channel and the catalog's files come on top
    seen.assert_within(rss=32 * MiB, threads=THREADS, fds=3 * 3 * 2 + 6)
    _remove(target, f"{hostile.host}/fast/app:1", f"{holding.host}/slow/held:1")
    target.assert_clean()


@pytest.mark.parametrize(
    "server_options",
    [(*OPTIONS, "--max-concurrent-downloads", "2", "--max-concurrent-small-downloads", "5")],
    ids=["2+5"],
)
def test_small_layers_download_in_slots_of_their_own(
    target: Target, hostile: HostileRegistry
) -> None:
    """A registry serves at most 2 large layers and 5 small ones (of at most 1 MiB)
    at once to one pull: neither kind waits behind the other's queue."""
    small = [tar_of({f"small/{i}": bytes([i]) * 20_000}) for i in range(9)]
    large = [tar_of({f"large/{i}": random.Random(i).randbytes(3 << 20)}) for i in range(4)]
    image = make_image(large[:2] + small + large[2:])
    hostile.add_image("lanes/app", "1", image)
    for digest in image.layer_digests:
        hostile.faults[digest] = "hold"
    with target.watch() as seen:
        thread, outcome, _ = _in_background(target, f"{hostile.host}/lanes/app:1")
        hostile.wait_until(lambda: hostile.holding == 2 + 5)
        hostile.release()
        thread.join(60)
    assert isinstance(outcome[0], Transfer)
    assert list(outcome[0].last.image_ids) == [image.config_digest]
    assert hostile.most_holding == 2 + 5
    # at the peak: a socket per slot, an ingest file per large layer, and each
    # transfer thread that stores a small layer keeps a catalog reader (the database
    # and its WAL)
    seen.assert_within(rss=32 * MiB, threads=THREADS, fds=(2 + 5) + 2 + 2 * TRANSFER_THREADS)
    _remove(target, f"{hostile.host}/lanes/app:1")
    target.assert_clean()


@pytest.mark.parametrize(
    "server_options",
    [(*OPTIONS, "--max-concurrent-downloads", "1", "--max-concurrent-small-downloads", "1")],
    ids=["one-slot"],
)
def test_a_download_waiting_to_retry_holds_no_slot(
    target: Target, hostile: HostileRegistry
) -> None:
    waiting = _image("waiting")
    hostile.add_image("retry/later", "1", waiting)
    hostile.faults[waiting.layer_digests[0]] = "retry-after:60"
    ready = _image("ready")
    hostile.add_image("retry/now", "1", ready)
    with target.watch() as seen:
        thread, outcome, cancel = _in_background(target, f"{hostile.host}/retry/later:1")
        hostile.wait_until(lambda: hostile.downloads(waiting.layer_digests[0]) == 1)
        # the registry's only slot is free while the first pull waits out its minute
        pulled = pull(target.stub, f"{hostile.host}/retry/now:1", timeout=30)
        assert hostile.downloads(waiting.layer_digests[0]) == 1
        cancel()
        thread.join(60)
        _wait_for_ingests_to_end(target)
    assert list(pulled.last.image_ids) == [ready.config_digest]
    assert isinstance(outcome[0], grpc.RpcError)
    assert outcome[0].code() == grpc.StatusCode.CANCELLED
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    _remove(target, f"{hostile.host}/retry/now:1")
    target.assert_clean()


@pytest.mark.parametrize(
    "server_options",
    [
        (*OPTIONS, "--registry-min-speed", "65536", "--registry-speed-window", "2"),
        (*OPTIONS, "--registry-min-speed", "0", "--registry-blob-timeout", "2"),
    ],
    ids=["min-speed", "blob-timeout"],
)
def test_a_dripping_registry_ends_unavailable(
    target: Target, hostile: HostileRegistry, server_options: tuple[str, ...]
) -> None:
    image = _image("drip", size=20_000)
    hostile.add_image("drip/app", "1", image)
    hostile.faults[image.layer_digests[0]] = "drip:20"  # 50 bytes/s, never silent
    with target.watch() as seen:
        code, reason, message = _refused(target, f"{hostile.host}/drip/app:1")
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "REGISTRY_UNAVAILABLE")
    if "65536" in server_options:
        assert "too slow" in message
        assert hostile.downloads(image.layer_digests[0]) == 2  # each try failed
    else:
        assert "not done after 2 s" in message
    seen.assert_within(rss=32 * MiB, threads=THREADS)
    _wait_for_ingests_to_end(target)
    target.assert_clean()


# ---- in-process: the bounded state behind the attacks above -------------------------


def test_hosts_without_their_own_certs_share_one_tls_context(tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    certs.mkdir()
    trust = Trust(RegistryOptions(certs_dir=certs, insecure_registries=("lab.example",)))
    shared = trust.ssl_context("registry.example")
    assert all(trust.ssl_context(f"h{n}.example:443") is shared for n in range(300))
    unverified = trust.ssl_context("lab.example")
    assert unverified is not shared
    assert unverified.verify_mode == ssl.CERT_NONE
    assert shared.verify_mode == ssl.CERT_REQUIRED
    # a certs.d folder gets a context of its own; those are kept in a bounded LRU
    for n in range(TLS_CACHE_SIZE + 8):
        (certs / f"own{n}.example:5000").mkdir()
        assert trust.ssl_context(f"own{n}.example:5000") is not shared
    assert len(trust._contexts) == TLS_CACHE_SIZE
    assert trust.ssl_context(f"own{TLS_CACHE_SIZE + 7}.example:5000") is trust.ssl_context(
        f"own{TLS_CACHE_SIZE + 7}.example:5000"
    )


def test_the_token_cache_keeps_a_bounded_number_of_small_tokens() -> None:
    fetched: list[str] = []
    huge = "x" * (MAX_CACHED_TOKEN + 1)

    async def fetch(
        realm: str,
        params: Mapping[str, str],
        authorization: str | None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, object]:
        fetched.append(params["scope"])
        return 200, {"token": huge if params["scope"] == "huge" else "small"}

    async def scenario() -> None:
        cache = TokenCache(size=4)
        challenge = Challenge("bearer", {"realm": "https://auth.example/token"})
        for scope in [f"repository:r{n}:pull" for n in range(10)]:
            await cache.token(challenge, scope, ANONYMOUS, fetch)
        assert len(cache) == 4
        await cache.token(challenge, "repository:r9:pull", ANONYMOUS, fetch)  # cached
        assert len(fetched) == 10
        for _ in range(2):  # too large to keep: fetched each time, never cached
            assert await cache.token(challenge, "huge", ANONYMOUS, fetch) == huge
        assert fetched[-2:] == ["huge", "huge"]
        assert len(cache) == 4

    asyncio.run(scenario())


def test_slots_are_per_host_and_forgotten_when_idle() -> None:
    async def scenario() -> None:
        slots = HostSlots(2)
        async with slots.hold("https://a.example"), slots.hold("https://a.example"):
            assert slots.busy("https://a.example")
            assert not slots.busy("https://b.example")
            async with slots.hold("https://b.example"):
                assert len(slots) == 2
        assert len(slots) == 0

    asyncio.run(scenario())


def test_run_all_keeps_at_most_limit_jobs_running() -> None:
    running = 0
    peak = 0

    async def job(number: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        if number == 7:
            raise errors.DataLoss("job 7 failed")
        return number

    assert asyncio.run(run_all((job(n) for n in range(7)), 3)) == list(range(7))
    assert peak == 3
    with pytest.raises(errors.DataLoss, match="job 7"):
        asyncio.run(run_all((job(n) for n in range(100)), 3))
