"""Reference filters that used to freeze the server: globs as backtracking regexes.

``ListImages(filters=["reference=*a*a*a*a*a*a*a*a*a*b"])`` against an image
named by 40 ``a``'s held the GIL for 17 s: the glob became ``[^/]*a[^/]*a…``,
which backtracks exponentially on a name of ``a``'s. Globs are now matched by
Go's chunk algorithm (imagestore.oci.globs), linear in pattern x name.

Bounds enforced, for each pattern below (the attack, more stars, ``?`` chunks,
patterns near the 1,024-character cap) against names of 40 and of 376 ``a``'s:
health and Inspect answer within 2 s throughout (the watchdog); RSS grows by
at most 64 MiB, threads by at most 8, descriptors by at most 16; the answer is
right (no image, or the seed under exactly the names that match); a malformed
pattern is INVALID_ARGUMENT naming its first 200 characters; a pattern over the
cap, or more than 64 filters, is INVALID_ARGUMENT at once; nothing is stored.
"""

from __future__ import annotations

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.hostile.conftest import SEED, MiB, Target, rpc_error

ATTACK = "*a*a*a*a*a*a*a*a*a*b"
SHORT_NAME = "a" * 40
LONG_NAME = "a" * 247 + ":" + "a" * 128  # the longest: "library/" + 247 is 255
GLOB_RSS = 64 * MiB

NO_MATCH = [
    pytest.param(ATTACK, id="reported"),
    pytest.param("*a" * 64 + "*b", id="64-stars"),
    pytest.param("*" + "?a" * 60 + "*b", id="question-chunks"),
    pytest.param("*" + "[a]*" * 40 + "b", id="class-chunks"),
    pytest.param("*[" + "a" * 900 + "]*a*a*a*a*a*b", id="long-class"),
    pytest.param("*a" * 500 + "*b", id="500-stars"),
]
OVERSIZED = [
    pytest.param("*[" + "a" * MiB + "]*a*a*a*a*a*b", id="megabyte-class"),
    pytest.param("*a" * (MiB // 2) + "*b", id="megabyte-of-stars"),
    pytest.param(ATTACK + "[" + "a" * MiB, id="megabyte-malformed"),
]


def tag_attack_names(target: Target) -> None:
    for name in (SHORT_NAME, LONG_NAME):
        target.stub.Tag(pb.TagRequest(source=SEED, target=name), timeout=30)


def listed(target: Target, pattern: str) -> list[pb.ImageSummary]:
    request = pb.ListImagesRequest(filters=[f"reference={pattern}"])
    return list(target.stub.ListImages(request, timeout=60).images)


@pytest.mark.parametrize("pattern", NO_MATCH)
def test_a_glob_that_backtracked_answers_at_once(target: Target, pattern: str) -> None:
    tag_attack_names(target)
    with target.watch() as seen:
        for _ in range(3):
            assert listed(target, pattern) == []
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()


def test_a_glob_of_many_stars_still_matches_what_it_should(target: Target) -> None:
    tag_attack_names(target)
    with target.watch() as seen:
        short = listed(target, "a*a*a*a*a*a*a*a*a*:latest")
        long = listed(target, "a*a*a*a*a*a*a*a*a*:*a?a*a*a")
    assert [[n.familiar for n in image.repo_tags] for image in short] == [[SHORT_NAME + ":latest"]]
    assert [[n.familiar for n in image.repo_tags] for image in long] == [[LONG_NAME]]
    assert short[0].id == target.seed_id
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()


def test_a_malformed_glob_is_refused_naming_it(target: Target) -> None:
    tag_attack_names(target)
    pattern = ATTACK + "[" + "a" * 1000
    with target.watch() as seen, pytest.raises(grpc.RpcError) as raised:
        listed(target, pattern)
    code, reason, metadata = rpc_error(raised.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FILTER_INVALID")
    assert metadata == {"filter": "reference", "value": pattern[:200]}
    assert "syntax error in pattern" in str(raised.value.details())
    assert len(str(raised.value.details())) < 1000
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()


@pytest.mark.parametrize("pattern", OVERSIZED)
def test_a_megabyte_glob_is_refused_before_it_is_compiled(target: Target, pattern: str) -> None:
    with target.watch() as seen, pytest.raises(grpc.RpcError) as raised:
        listed(target, pattern)
    code, _, metadata = rpc_error(raised.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata == {"filter": "reference", "limit": "1024"}
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()


def test_ten_thousand_filters_are_refused(target: Target) -> None:
    request = pb.ListImagesRequest(filters=[f"reference=x{i}*" for i in range(10_000)])
    with target.watch() as seen, pytest.raises(grpc.RpcError) as raised:
        target.stub.ListImages(request, timeout=60)
    code, _, metadata = rpc_error(raised.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata == {"filters": "10000", "limit": "64"}
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()
