"""Pull-through: a manifest the store lacks is pulled from its upstream, then served.

With ``--registry-pull-through``, a ``GET``/``HEAD`` of a manifest by tag or
digest that the store cannot answer is pulled from the repository's registry
when that registry is on the allowlist (``--registry-upstream``), stored, and
then served by the pull category as any stored manifest (docs/registry.md §9).

- **Which upstream.** A repository's registry is the first component of its
  canonical name (distribution/names.py: the path's host, or containerd's
  ``ns=``). Only allowlisted registries are contacted; Docker Hub names go to
  the ``docker.io=URL`` entry's URL (``https://registry-1.docker.io`` when the
  entry is plain ``docker.io``). Any other registry is never contacted: the
  request gets the usual 404 and the refusal is logged once per registry.
- **The same pull as gRPC Pull.** The pull is :class:`registry.pull.Puller`'s,
  on the server's registry client: the same SSRF guard, the server-side
  credentials of ``--registry-config`` (a request's own credentials are never
  forwarded), digests and diff_ids verified before commit, the lease, and a
  PULL event in the journal. Plain HTTP only where ``--insecure-registry``
  (or loopback) allows it.
- **Indexes.** A tag pointing at an index stores the index and the server's
  own platform's image (what Pull does without ``--platform``): the store
  holds an index whose other children are absent, and serves the index's
  exact bytes. A child asked for by digest that the store lacks is pulled
  then, alone. Pulling every platform would cost the sum of all of them for a
  client that wants one; containerd asks for the index and then one child by
  digest, and the host's child is the one a node's containerd asks for, so
  it is ready by the time it is asked.
- **Once per manifest.** Concurrent requests for the same repository and
  reference share one pull (a task in a map on the event loop, keyed by
  both); the pull goes on when the requests that wanted it go away, so its
  work is kept. Layers already in the store are not downloaded again, and two
  pull-throughs share a layer's download (Puller's own rule; a gRPC Pull has
  its own Puller, so one running at the same time may download the same
  layer once more, and the store keeps one copy).
- **Served while it downloads.** A manifest is answered as soon as the pull
  has stored and verified every manifest and config it chose, before its
  layers: from the stored blob, by digest (the name comes at the pull's
  end). A whole-blob ``GET`` of a layer being downloaded streams from the
  ingest file as the bytes land (registry/downloads.py), the last bytes only
  once the ingest's digest, size and diff_id are verified; a failed download
  cuts the response short. A ``HEAD`` or a ``Range`` request of such a
  layer, and a request for a layer whose download has not started, waits
  for the store to hold it (or the pulls of the repository to end). Every
  blob a client can know of comes from a manifest it asked for, so a blob is
  never fetched from upstream on its own. Until the pull names the image,
  the repository's blobs are served although it holds no name yet, and
  tags/list and referrers know the tag and manifest answered early.
- **Tags go stale.** A tag is revalidated with a ``HEAD`` upstream once the
  last check is older than ``--registry-pull-through-ttl`` (0: every
  request). A moved tag is pulled again; an upstream that cannot answer
  (down, slow, failing) leaves the stored manifest served with
  ``Warning: 110 - "Response is Stale"`` and a log line; an upstream that no
  longer has the tag leaves the stored one served. When a tag was last
  checked is kept in memory: after a restart, every tag of an allowlisted
  registry is checked at its first request.
- **Tag lists.** tags/list of an allowlisted registry's repository lists
  upstream's tags beside the store's, as a Distribution mirror does.
  Upstream's list is asked once per TTL, by one flight for concurrent
  requests, and kept (distribution/taglists.py: bounded by tags). A list
  upstream will not give (an unknown repository, a refusal, too large) is
  none; when upstream does not answer, its last list is served stale and it
  is asked again after at most REVALIDATE_TIMEOUT.
- **A bounded cache.** With ``--registry-pull-through-max-bytes``, once a
  pull-through leaves the store's blobs over that many bytes, the images the
  endpoint pulled through are removed, least recently served first, until it
  is under (never the one just pulled). Only names this process pulled through
  are candidates, and only while they still point where the pull put them:
  loaded, pushed and gRPC-pulled images are never evicted. Last use is the
  last time a manifest of the image was served through the endpoint, kept in
  memory (after a restart nothing is a candidate until pulled through again:
  the cap then errs towards keeping). A response in flight keeps its blob
  files through its reading lease.

Outcomes are counted (telemetry.py): ``hit`` (served from the store, a
revalidated tag included), ``miss-pulled`` (this request started the pull),
``miss-joined`` (it waited for a pull another request started), ``refused``
(not allowlisted), ``stale`` and ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from yarl import URL

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution.taglists import TagList, TagLists
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import DEFAULT_DOMAIN, normalize_domain, parse_reference
from imagestore.registry.client import RegistryClient
from imagestore.registry.content import MANIFEST_ACCEPT, get_manifest, list_tags
from imagestore.registry.downloads import Download
from imagestore.registry.progress import Emit, ProgressEvent
from imagestore.registry.pull import Puller, PullResult
from imagestore.registry.repository import Repository
from imagestore.registry.responses import fail_for
from imagestore.registry.retry import DOCKER_HUB_HOST, Retryable
from imagestore.registry.trust import Trust
from imagestore.store.store import Store
from imagestore.telemetry import Telemetry

log = logging.getLogger("imagestore.pullthrough")

T = TypeVar("T")

DEFAULT_TTL = 300.0
#: longest a revalidation may take before the stored manifest is served stale:
#: a client waiting on a dead upstream would otherwise wait out every retry
REVALIDATE_TIMEOUT = 10.0
STALE_WARNING = '110 - "Response is Stale"'
#: registries whose refusal was logged (then no more are remembered)
MAX_REFUSALS_LOGGED = 256
#: tags whose last check is remembered; the oldest are forgotten (checked again)
MAX_VALIDATED_TAGS = 100_000
DOCKER_HUB_URL = f"https://{DOCKER_HUB_HOST}"


def _pull_key(repository: str, reference: str) -> tuple[str, str, str]:
    """The flight of a pull of ``reference``: one at a time, whoever asks."""
    return ("pull", repository, reference)


@dataclass(frozen=True)
class PullThroughOptions:
    """``--registry-pull-through`` and its options; ``validate`` at start."""

    enabled: bool = False
    #: ``--registry-upstream`` entries, as given
    upstreams: tuple[str, ...] = ()
    ttl: float = DEFAULT_TTL
    #: the store's blob bytes above which pulled-through images are evicted (0: no cap)
    max_bytes: int = 0

    def validate(self, endpoint_on: bool, trust: Trust) -> dict[str, Upstream]:
        """The allowlist; OptionInvalid, one clear line, for settings that cannot work."""
        upstreams = allowlist(self.upstreams, trust)
        if not self.enabled:
            return upstreams
        if not endpoint_on:
            raise errors.OptionInvalid(
                "--registry-pull-through needs --registry-listen",
                metadata={"option": "registry-pull-through"},
            )
        if not upstreams:
            raise errors.OptionInvalid(
                "--registry-pull-through needs at least one --registry-upstream",
                metadata={"option": "registry-pull-through"},
            )
        for option, value in (
            ("registry-pull-through-ttl", self.ttl),
            ("registry-pull-through-max-bytes", self.max_bytes),
        ):
            if value < 0:
                raise errors.OptionInvalid(
                    f"--{option} must not be negative (got {value:g})",
                    metadata={"option": option},
                )
        return upstreams


@dataclass(frozen=True, slots=True)
class Upstream:
    """An allowlisted registry: ``domain`` as names spell it, and where to go
    for it (None: where the registry client goes, HTTPS then plain HTTP where
    allowed)."""

    domain: str
    endpoint: str | None = None


def parse_upstream(entry: str, trust: Trust | None = None) -> Upstream:
    """``docker.io=https://registry-1.docker.io``, ``docker.io=http://127.0.0.1:5000``,
    ``ghcr.io`` or ``127.0.0.1:5000``; OptionInvalid for anything else. Only
    Docker Hub may go elsewhere than its own host (to a mirror); a plain-HTTP
    URL needs a loopback host or ``--insecure-registry`` (``trust``)."""

    def invalid(why: str) -> errors.OptionInvalid:
        return errors.OptionInvalid(
            f"--registry-upstream {entry[:200]!r}: {why}", metadata={"option": "registry-upstream"}
        )

    name, equals, location = entry.strip().partition("=")
    try:
        domain = normalize_domain(name)
    except errors.InvalidArgument:
        raise invalid("not a registry host") from None
    if not domain or "/" in domain or "://" in name:
        raise invalid("want REGISTRY, or docker.io=URL")
    if not equals:
        return Upstream(domain, DOCKER_HUB_URL if domain == DEFAULT_DOMAIN else None)
    url = URL(location.strip())
    if url.scheme not in ("http", "https") or not url.raw_host or url.path not in ("", "/"):
        raise invalid("the URL must be http(s)://HOST[:PORT]")
    authority = url.raw_authority
    if domain != DEFAULT_DOMAIN and authority != domain:
        raise invalid("only docker.io may name another host")
    if url.scheme == "http" and trust is not None and not trust.plain_http_allowed(authority):
        raise invalid(f"plain HTTP to {authority} needs --insecure-registry {authority}")
    return Upstream(domain, f"{url.scheme}://{authority}")


def allowlist(entries: Iterable[str], trust: Trust | None = None) -> dict[str, Upstream]:
    """The upstreams by domain (a domain given twice: the last entry wins)."""
    return {u.domain: u for u in (parse_upstream(e, trust) for e in entries)}


class _UpstreamRegistry:
    """The server's registry client, with Docker Hub names sent to the configured
    upstream only (no ``--registry-mirror``, no fallback to Docker Hub): Puller
    asks it where a domain is; everything else is the shared client's."""

    def __init__(self, client: RegistryClient, upstreams: dict[str, Upstream]) -> None:
        self._client = client
        self._upstreams = upstreams

    def endpoints(self, domain: str, *, for_push: bool) -> list[str]:
        upstream = self._upstreams.get(domain)
        if upstream is not None and upstream.endpoint is not None:
            return [upstream.endpoint]
        return self._client.endpoints(domain, for_push=for_push)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass(frozen=True, slots=True)
class Answer:
    """How the pull category answers a manifest request after pull-through."""

    #: the ``Warning`` header to send (the stored answer is stale)
    warning: str | None = None
    #: a manifest a pull in flight stored but has not named yet: serve it by digest
    early: EarlyManifest | None = None


@dataclass(frozen=True, slots=True)
class EarlyManifest:
    digest: str
    media_type: str


@dataclass(slots=True)
class _Flight:
    """A pull or a revalidation in flight; ``ready`` is a pull's early answer."""

    task: asyncio.Task[Any]
    ready: asyncio.Future[EarlyManifest] | None = None


@dataclass(slots=True)
class _Pulled:
    """An image the endpoint pulled through: the names that pull gave it."""

    repository: str
    digest: str
    tags: tuple[str, ...]  # "tag"s of the repository
    digest_names: tuple[str, ...]  # canonical "repo@digest" names


def _domain(repository: str) -> str:
    return repository.partition("/")[0]


class PullThrough:
    """Pull-through for one endpoint: which registries, the pulls in flight, when
    tags were checked, and which images it pulled (for the size cap)."""

    def __init__(
        self,
        store: Store,
        client: RegistryClient,
        upstreams: dict[str, Upstream],
        *,
        unary: WorkerPool,
        ttl: float = DEFAULT_TTL,
        max_bytes: int = 0,
        telemetry: Telemetry | None = None,
        on_progress: Emit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._unary = unary
        self._upstreams = upstreams
        self._registry = _UpstreamRegistry(client, upstreams)
        self._puller = Puller(
            store, cast(RegistryClient, self._registry), on_download=self._download_started
        )
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._telemetry = telemetry
        self._on_progress = on_progress
        self._clock = clock
        self._flights: dict[tuple[str, str, str], _Flight] = {}
        #: (repository, digest) → media type: manifests pulls in flight stored
        self._early: dict[tuple[str, str], str] = {}
        #: layers being downloaded, by digest, and an event for each new one
        self._downloads: dict[str, Download] = {}
        self._new_download = asyncio.Event()
        #: (repository, tag) → when upstream last confirmed it (or it was pulled)
        self._validated: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: upstream's last tag list per repository
        self._tag_lists = TagLists()
        #: (repository, digest) → what the endpoint pulled, least recently served first
        self._pulled: OrderedDict[tuple[str, str], _Pulled] = OrderedDict()
        self._refusals_logged: set[str] = set()

    # ---- what the pull category calls ------------------------------------------

    async def manifest(self, repository: str, reference: str, by_digest: bool) -> Answer:
        """Make the store hold ``reference`` of ``repository`` when an upstream may
        supply it, or a pull of it has stored its manifests (``early``). Returns
        normally when the store should answer (it may still lack it: a refused
        registry, an upstream that does not have it)."""
        target = await self._unary.run(self._store.repository_target, repository, reference)
        upstream = self._upstreams.get(_domain(repository))
        if target is not None:
            if by_digest or upstream is None:
                self._count("hit")
                return Answer()
            return await self._revalidate(repository, reference, target.digest)
        if upstream is None:
            self._refuse(repository)
            return Answer()
        if by_digest and (media_type := self._early.get((repository, reference))) is not None:
            self._count("miss-joined")  # a child of an index being pulled
            return Answer(early=EarlyManifest(reference, media_type))
        outcome = self._miss(repository, reference)
        try:
            early = await self._pull_once(repository, reference, by_digest)
        except errors.NotFound:
            self._count("failed")
            return Answer()  # the usual 404 follows
        except errors.ImageStoreError:
            self._count("failed")
            raise
        self._count(outcome)
        return Answer(early=early)

    def served(self, repository: str, digest: str) -> None:
        """A manifest of ``repository`` was served: its image is the most recently used."""
        if (repository, digest) in self._pulled:
            self._pulled.move_to_end((repository, digest))

    async def upstream_tags(self, repository: str) -> TagList | None:
        """The tags upstream lists for ``repository`` (every page, sorted), as a
        mirror lists them; None when its registry is not allowlisted (the
        store's tags are all there is). Upstream is asked once per TTL, by one
        flight for every concurrent caller; a list it will not give (unknown,
        refused, too large) is none; when it does not answer (within
        REVALIDATE_TIMEOUT) its last list, if any, comes ``failed`` (to serve
        stale), and it is asked again after at most that timeout."""
        if self._upstreams.get(_domain(repository)) is None:
            return None
        kept = self._tag_lists.get(repository)
        if kept is not None:
            fresh_for = min(self._ttl, REVALIDATE_TIMEOUT) if kept.failed else self._ttl
            if self._clock() - kept.asked < fresh_for:
                return kept
        try:
            async with asyncio.timeout(REVALIDATE_TIMEOUT):
                return await self._once(
                    ("tags", repository, ""), lambda: self._ask_tags(repository)
                )
        except TimeoutError:  # the flight goes on, and keeps what it gets
            tags = [] if kept is None else kept.tags
            return TagList(self._clock(), tags, failed=True)

    async def _ask_tags(self, repository: str) -> TagList:
        """Ask upstream for ``repository``'s tags; keep and return the answer."""
        try:
            tags = sorted(set(await self._list_upstream_tags(repository)))
        except (errors.NotFound, errors.PermissionDenied, errors.SizeLimitExceeded) as exc:
            log.info("pull-through: upstream lists no tags of %s: %s", repository, exc.message)
            tags = []
        except errors.ImageStoreError as exc:
            log.warning(
                "pull-through: listing the tags of %s without upstream's: it did not answer: %s",
                repository,
                exc.message,
            )
            last = self._tag_lists.get(repository)
            failed = TagList(self._clock(), [] if last is None else last.tags, failed=True)
            return self._tag_lists.keep(repository, failed)
        return self._tag_lists.keep(repository, TagList(self._clock(), tags))

    def early_references(self, repository: str) -> list[str]:
        """References (tags and digests) of ``repository`` whose pull is in flight
        and whose manifest was answered already (early): tags/list knows the
        repository and lists the tags before the pull names them."""
        return [
            reference
            for (kind, of, reference), flight in self._flights.items()
            if kind == "pull" and of == repository
            if flight.ready is not None and flight.ready.done()
        ]

    def early_manifest(self, repository: str, digest: str) -> bool:
        """A pull of ``repository`` in flight has stored the manifest ``digest``."""
        return (repository, digest) in self._early

    def pulling(self, repository: str) -> bool:
        """A pull of ``repository`` is in flight: its blobs are served before it
        holds a name."""
        return any(key[0] == "pull" and key[1] == repository for key in self._flights)

    async def blob(self, repository: str, digest: str, *, streaming: bool) -> Download | None:
        """Before a blob is served: the download of it to stream from (only when
        ``streaming``: a whole-blob GET), or None once the store should answer,
        after waiting for a download of it, or for the pulls of its repository
        while the store lacks it."""
        while True:
            # taken before looking: a download that starts while we look sets it
            new_download = self._new_download
            download = self._downloads.get(digest)
            if download is not None:
                if streaming and download.path is not None and not download.finished:
                    return download  # (a download without a path is never streamed)
                await download.wait_finished()  # its failure is its pull's to report
                continue
            pulls = [
                flight.task
                for (kind, of, _), flight in self._flights.items()
                if kind == "pull" and of == repository
            ]
            if not pulls or await self._unary.run(self._store.stored, digest):
                return None
            started = asyncio.ensure_future(new_download.wait())
            try:
                await asyncio.wait({*pulls, started}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                started.cancel()

    async def close(self) -> None:
        """Cancel the pulls in flight (the server is stopping); their leases end."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # ---- single flight -----------------------------------------------------------

    def _flight(
        self,
        key: tuple[str, str, str],
        make: Callable[[asyncio.Future[EarlyManifest]], Coroutine[Any, Any, Any]],
    ) -> _Flight:
        """The flight for ``key``, started once for every concurrent caller: it
        runs ``make(ready)`` to its end even when its callers go away."""
        flight = self._flights.get(key)
        if flight is None:
            ready: asyncio.Future[EarlyManifest] = asyncio.get_running_loop().create_future()
            flight = _Flight(asyncio.create_task(make(ready)), ready)
            self._flights[key] = flight

            def finished(done: asyncio.Task[Any]) -> None:
                if self._flights.get(key) is flight:
                    del self._flights[key]
                if not done.cancelled():
                    done.exception()  # retrieved: a pull nobody waits for any more is no error

            flight.task.add_done_callback(finished)
        return flight

    async def _once(
        self, key: tuple[str, str, str], make: Callable[[], Coroutine[Any, Any, T]]
    ) -> T:
        """``make()``'s result, started once for every concurrent caller with ``key``."""
        flight = self._flight(key, lambda _ready: make())
        return cast(T, await asyncio.shield(flight.task))

    def _miss(self, repository: str, reference: str) -> str:
        """How a miss is counted: a pull of it in flight is joined, else started."""
        joined = _pull_key(repository, reference) in self._flights
        return "miss-joined" if joined else "miss-pulled"

    async def _pull_once(
        self, repository: str, reference: str, by_digest: bool
    ) -> EarlyManifest | None:
        """Start or join the pull of ``reference``: its early answer once its
        manifests are stored, or None when it ended first (the store answers)."""
        flight = self._flight(
            _pull_key(repository, reference),
            lambda ready: self._pull(repository, reference, by_digest, ready),
        )
        assert flight.ready is not None
        # wait() never cancels what it waits for: the pull goes on without us
        await asyncio.wait({flight.task, flight.ready}, return_when=asyncio.FIRST_COMPLETED)
        if flight.ready.done():
            return flight.ready.result()
        flight.task.result()  # its failure, raised
        return None

    # ---- pulling -------------------------------------------------------------------

    async def _pull(
        self,
        repository: str,
        reference: str,
        by_digest: bool,
        ready: asyncio.Future[EarlyManifest],
    ) -> PullResult:
        image = f"{repository}@{reference}" if by_digest else f"{repository}:{reference}"
        log.info("pull-through: pulling %s from upstream", image)
        early: list[tuple[str, str]] = []

        def documents_stored(target: Descriptor, manifests: dict[str, str]) -> None:
            for digest, media_type in manifests.items():
                self._early[(repository, digest)] = media_type
                early.append((repository, digest))
            ready.set_result(EarlyManifest(target.digest, target.media_type))

        try:
            result = await self._puller.pull(
                image, (), None, self._progress, on_documents=documents_stored
            )
        except errors.ImageStoreError as exc:
            # said here too: a client answered early sees only a blob cut short
            log.warning("pull-through: pulling %s failed: %s", image, exc.message)
            raise
        finally:
            for key in early:
                self._early.pop(key, None)
        if not by_digest:
            self._validated_now(repository, reference)
        key = (repository, result.digest)
        known = self._pulled.get(key)
        tags = () if by_digest else (reference,)
        if known is not None:
            tags = tuple(dict.fromkeys((*known.tags, *tags)))
        self._pulled[key] = _Pulled(
            repository, result.digest, tags, (f"{repository}@{result.digest}",)
        )
        self._pulled.move_to_end(key)
        log.info("pull-through: stored %s (%s)", image, result.digest)
        await self._evict(keep=key)
        return result

    def _download_started(self, download: Download) -> None:
        self._downloads[download.digest] = download
        new, self._new_download = self._new_download, asyncio.Event()
        new.set()

        def forget() -> None:
            if self._downloads.get(download.digest) is download:
                del self._downloads[download.digest]

        download.when_finished(forget)

    def _progress(self, event: ProgressEvent) -> None:
        if self._on_progress is not None:
            self._on_progress(event)

    # ---- revalidation -----------------------------------------------------------------

    def _validated_now(self, repository: str, tag: str) -> None:
        self._validated[(repository, tag)] = self._clock()
        self._validated.move_to_end((repository, tag))
        while len(self._validated) > MAX_VALIDATED_TAGS:
            self._validated.popitem(last=False)

    async def _revalidate(self, repository: str, tag: str, stored: str) -> Answer:
        """Ask upstream where a stored tag points once its last check is older
        than the TTL; pull it again when it moved."""
        checked = self._validated.get((repository, tag))
        if checked is not None and self._clock() - checked < self._ttl:
            self._count("hit")
            return Answer()
        try:
            async with asyncio.timeout(REVALIDATE_TIMEOUT):
                current = await self._once(
                    ("head", repository, tag), lambda: self._upstream_digest(repository, tag)
                )
        except errors.NotFound:  # upstream dropped the tag: ours is all there is
            current = stored
        except (errors.ImageStoreError, TimeoutError) as exc:
            return self._stale(repository, tag, stored, exc)
        if current == stored:
            self._validated_now(repository, tag)
            self._count("hit")
            return Answer()
        log.info("pull-through: %s:%s moved upstream (%s → %s)", repository, tag, stored, current)
        outcome = self._miss(repository, tag)
        try:
            early = await self._pull_once(repository, tag, False)
        except errors.ImageStoreError as exc:
            return self._stale(repository, tag, stored, exc)
        self._count(outcome)
        return Answer(early=early)

    def _stale(self, repository: str, tag: str, stored: str, exc: Exception) -> Answer:
        reason = exc.message if isinstance(exc, errors.ImageStoreError) else "timed out"
        log.warning(
            "pull-through: serving %s:%s stale (%s): upstream did not answer: %s",
            repository,
            tag,
            stored,
            reason,
        )
        self._count("stale")
        return Answer(warning=STALE_WARNING)

    async def _list_upstream_tags(self, repository: str) -> list[str]:
        reference = parse_reference(repository, default_tag=False)
        endpoint = self._registry.endpoints(reference.domain, for_push=False)[0]
        repo: Repository = await self._registry.repository(reference, endpoint, None)
        return await list_tags(repo, limit=self._registry.options.max_manifest_bytes_per_pull)

    async def _upstream_digest(self, repository: str, tag: str) -> str:
        """The digest upstream's tag points at: a HEAD (one try: a stale answer
        now beats a fresh one after every retry), a GET when the HEAD names none."""
        reference = parse_reference(f"{repository}:{tag}")
        endpoint = self._registry.endpoints(reference.domain, for_push=False)[0]
        repo: Repository = await self._registry.repository(reference, endpoint, None)
        what = f"manifest {repository}:{tag}"
        try:
            response = await repo.request(
                "HEAD", repo.url(f"manifests/{tag}"), headers={"Accept": MANIFEST_ACCEPT}, what=what
            )
        except Retryable as exc:
            raise exc.final from None
        async with response:
            if response.status == 404:
                raise errors.ManifestUnknown(f"{what} is not known upstream")
            if response.status != 200:
                raise await fail_for(response, what)
            declared = response.headers.get("Docker-Content-Digest", "")
        if declared.startswith("sha256:") and len(declared) == 71:
            return declared
        return (await get_manifest(repo, tag)).digest

    # ---- refusals ---------------------------------------------------------------------

    def _refuse(self, repository: str) -> None:
        domain = _domain(repository)
        self._count("refused")
        if domain in self._refusals_logged or len(self._refusals_logged) >= MAX_REFUSALS_LOGGED:
            return
        self._refusals_logged.add(domain)
        log.info(
            "pull-through: %s is not an allowed upstream (--registry-upstream); its names"
            " are served from the store only",
            domain,
        )

    # ---- the size cap -----------------------------------------------------------------

    async def _evict(self, keep: tuple[str, str]) -> None:
        """Remove pulled-through images, least recently served first, while the
        store holds more than the cap (never ``keep``)."""
        if not self._max_bytes:
            return
        stored = await self._unary.run(self._store.stored_bytes)
        for key in [k for k in self._pulled if k != keep]:
            if stored <= self._max_bytes:
                return
            image = self._pulled.pop(key)
            for tag in image.tags:
                self._validated.pop((image.repository, tag), None)
            stored = await self._unary.run(self._remove, image)
            log.info(
                "pull-through: evicted %s@%s (the store held more than"
                " --registry-pull-through-max-bytes %d)",
                image.repository,
                image.digest,
                self._max_bytes,
            )
        if stored > self._max_bytes:
            log.warning(
                "pull-through: the store holds %d bytes, over --registry-pull-through-max-bytes"
                " %d, with nothing pulled through left to evict",
                stored,
                self._max_bytes,
            )

    def _remove(self, image: _Pulled) -> int:
        """Remove the names the pull gave ``image`` that still point at it; the
        store then holds how many bytes (blocking)."""
        names = [
            f"{image.repository}:{tag}"
            for tag in image.tags
            if (target := self._store.repository_target(image.repository, tag)) is not None
            and target.digest == image.digest
        ]
        names += image.digest_names  # a digest name cannot point elsewhere
        self._store.remove(names)
        return self._store.stored_bytes()

    # ---- metrics ----------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        if self._telemetry is not None:
            self._telemetry.pull_through.labels(outcome).inc()
