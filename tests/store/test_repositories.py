"""The repository queries the OCI Distribution endpoint pages through (tags,
repositories, what a reference denotes in a repository), on every catalog."""

from __future__ import annotations

from imagestore.oci.references import parse_reference
from imagestore.store.store import Store
from tests.store.builders import build_image, build_index, layer_tar

#: repositories whose names share prefixes: each one's names must stay its own
#: ("-", ".", "/" sort below ":" and "_" above "@", around a repository's names)
NEIGHBOURS = ["a", "a-b", "a.b", "a/b", "a_b", "ab"]


def canonical(short: str) -> str:
    return f"docker.io/library/{short}" if "/" not in short else f"docker.io/{short}"


def _seed(store: Store) -> None:
    names = [f"{short}:{tag}" for short in NEIGHBOURS for tag in ("1", "2", "latest")]
    build_image(store, [layer_tar({"f": b"x"})], names=names)


def test_tags_are_the_repository_s_own_in_byte_order_and_paged(store: Store) -> None:
    built = build_image(store, [layer_tar({"f": b"x"})], names=["a:v2", "a:V1", "a:10", "a:9"])
    _seed(store)
    store.tag(f"{canonical('a')}@{built.manifest.digest}", "a-b:only")  # a digest name: no tag
    repo = canonical("a")
    everything = store.repository_tags(repo, limit=100)
    assert everything == sorted(["v2", "V1", "10", "9", "1", "2", "latest"])  # bytes: "10" < "9"
    pages, after = [], ""
    while page := store.repository_tags(repo, after=after, limit=3):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [tag for page in pages for tag in page] == everything
    assert store.repository_tags(repo, after="latest", limit=10) == ["v2"]
    assert store.repository_tags(repo, limit=0) == []
    assert store.repository_tags(canonical("a-b"), limit=10) == ["1", "2", "latest", "only"]
    assert store.repository_tags(canonical("nothing"), limit=10) == []


def test_repositories_are_each_listed_once_across_pages(store: Store) -> None:
    _seed(store)
    build_image(store, [layer_tar({"f": b"y"})], names=["127.0.0.1:5000/demo/app:1"])
    everything = store.repositories(limit=100)
    expected = {canonical(short) for short in NEIGHBOURS} | {"127.0.0.1:5000/demo/app"}
    assert sorted(everything) == sorted(expected)
    for size in (1, 2, 3, 7):
        listed, after = [], ""
        while page := store.repositories(after=after, limit=size):
            assert len(page) <= size
            listed += page
            after = page[-1]
        assert listed == everything, size
    assert store.repositories(limit=0) == []


def test_a_repository_with_only_a_digest_name_is_listed(store: Store) -> None:
    built = build_image(store, [layer_tar({"f": b"z"})], names=["tagged:1"])
    digest_only = f"docker.io/library/pinned@{built.manifest.digest}"
    with store.lease() as lease:  # a digest name, as a pull by digest records it
        store.commit_target(lease, built.manifest, [parse_reference(digest_only)])
    assert store.repositories(limit=10) == ["docker.io/library/pinned", "docker.io/library/tagged"]
    assert store.has_repository("docker.io/library/pinned")
    assert store.repository_tags("docker.io/library/pinned", limit=10) == []
    assert not store.has_repository("docker.io/library/other")
    assert not store.has_repository("docker.io/library/tag")  # a prefix is not a repository


def test_repository_target_by_tag_and_by_digest(store: Store) -> None:
    single = build_image(store, [layer_tar({"f": b"one"})], names=["single:1"])
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm", variant="v7")
    absent = "sha256:" + "e" * 64
    index = build_index(
        store,
        [(amd, "linux/amd64"), (arm, "linux/arm/v7")],
        names=["multi:1"],
        absent=[(absent, "linux/s390x")],
    )
    multi, lone = "docker.io/library/multi", "docker.io/library/single"
    by_tag = store.repository_target(multi, "1")
    assert by_tag is not None
    assert (by_tag.digest, by_tag.media_type) == (
        index.target_digest,
        "application/vnd.oci.image.index.v1+json",
    )
    assert by_tag.size == store.blob_size(index.target_digest)
    by_digest = store.repository_target(multi, index.target_digest)
    assert by_digest == by_tag
    child = store.repository_target(multi, arm.manifest.digest)  # listed by the tag's index
    assert child is not None
    assert child.digest == arm.manifest.digest
    assert store.repository_target(multi, absent) is None  # listed, not stored
    assert store.repository_target(multi, single.manifest.digest) is None  # another repository's
    assert store.repository_target(lone, arm.manifest.digest) is None
    assert store.repository_target(lone, "2") is None
    found = store.repository_target(lone, single.manifest.digest)
    assert found is not None
    assert found.media_type == single.manifest.media_type
    assert store.repository_target("docker.io/library/nothing", "1") is None
