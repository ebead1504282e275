"""Reference filters that used to freeze the server: globs as backtracking regexes.

``ListImages(filters=["reference=*a*a*a*a*a*a*a*a*a*b"])`` against an image
named by 40 ``a``'s held the GIL for 17 s: the glob became ``[^/]*a[^/]*a…``,
which backtracks exponentially on a name of ``a``'s. Globs are now matched by
Go's chunk algorithm (imagestore.oci.globs), linear in pattern x name.

Bounds enforced, for each pattern below (the attack, more stars, ``?`` chunks,
megabyte patterns) against names of 40 and of 376 ``a``'s: health and Inspect
answer within 2 s throughout (the watchdog); RSS grows by at most 64 MiB,
threads by at most 8, descriptors by at most 16; the answer is right (no image,
or the seed under exactly the names that match); a malformed pattern of a
megabyte is INVALID_ARGUMENT naming its first 200 characters; nothing is stored.
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
    pytest.param("*[" + "a" * MiB + "]*a*a*a*a*a*b", id="megabyte-class"),
    pytest.param("*a" * (MiB // 2) + "*b", id="megabyte-of-stars"),
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
    assert [list(image.repo_tags) for image in short] == [[SHORT_NAME + ":latest"]]
    assert [list(image.repo_tags) for image in long] == [[LONG_NAME]]
    assert short[0].id == target.seed_id
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()


def test_a_malformed_megabyte_glob_is_refused(target: Target) -> None:
    tag_attack_names(target)
    pattern = ATTACK + "[" + "a" * MiB
    with target.watch() as seen, pytest.raises(grpc.RpcError) as raised:
        listed(target, pattern)
    code, reason, metadata = rpc_error(raised.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert metadata == {"filter": "reference", "value": pattern[:200]}
    assert "syntax error in pattern" in str(raised.value.details())
    assert len(str(raised.value.details())) < 1000
    seen.assert_within(rss=GLOB_RSS)
    target.assert_clean()
