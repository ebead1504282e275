"""References, digests and platforms: Docker's cases, table-driven, plus properties.

Reference filters (globs) are in test_globs.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import errors
from imagestore.oci.digests import parse_digest
from imagestore.oci.platforms import Platform, best_match, parse_platform
from imagestore.oci.references import Reference, parse_reference, parse_tag_target

HEX = "a" * 64
DIGEST = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "canonical", "familiar"),
    [
        ("redis", "docker.io/library/redis:latest", "redis:latest"),
        ("redis:7.2", "docker.io/library/redis:7.2", "redis:7.2"),
        ("library/redis", "docker.io/library/redis:latest", "redis:latest"),
        ("docker.io/redis", "docker.io/library/redis:latest", "redis:latest"),
        ("index.docker.io/redis", "docker.io/library/redis:latest", "redis:latest"),
        ("docker.io/library/redis:7", "docker.io/library/redis:7", "redis:7"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("user/app/sub:1", "docker.io/user/app/sub:1", "user/app/sub:1"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
        ("example.com/app", "example.com/app:latest", "example.com/app:latest"),
        ("Example.COM/app", "Example.COM/app:latest", "Example.COM/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
        ("a-b__c/d.e", "docker.io/a-b__c/d.e:latest", "a-b__c/d.e:latest"),
        ("app---x", "docker.io/library/app---x:latest", "app---x:latest"),
        ("redis@" + DIGEST, "docker.io/library/redis@" + DIGEST, "redis@" + DIGEST),
        ("redis:7@" + DIGEST, "docker.io/library/redis:7@" + DIGEST, "redis:7@" + DIGEST),
        ("r:" + "t" * 128, "docker.io/library/r:" + "t" * 128, "r:" + "t" * 128),
        ("r:_Tag.-9", "docker.io/library/r:_Tag.-9", "r:_Tag.-9"),
    ],
)
def test_docker_normalises_references(text: str, canonical: str, familiar: str) -> None:
    reference = parse_reference(text)
    assert str(reference) == canonical
    assert reference.familiar() == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Redis", "must be lowercase"),
        ("user/App", "must be lowercase"),
        (HEX, "cannot specify 64-byte hexadecimal strings"),
        ("redis:", "invalid reference format"),
        (":tag", "invalid reference format"),
        ("-redis", "invalid reference format"),
        ("redis-", "invalid reference format"),
        ("re..dis", "invalid reference format"),
        ("redis:.tag", "invalid reference format"),
        ("redis:-tag", "invalid reference format"),
        ("r:" + "t" * 129, "invalid reference format"),
        ("a/" + "b" * 254, "not be more than 255 characters"),
        ("redis@sha256:abc", "invalid reference format"),
        ("redis@sha512:" + "c" * 128, "unsupported digest algorithm"),
        ("redis@sha256:" + "C" * 64, "64 lowercase hex"),
        ("has space", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("a/b/", "invalid reference format"),
        ("localhost:port/app", "invalid reference format"),
        ("example.com:5000/", "invalid reference format"),
    ],
)
def test_docker_refuses_invalid_references(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_reference(text)


def test_a_path_of_255_characters_is_the_limit() -> None:
    assert parse_reference("a/" + "b" * 253).path == "a/" + "b" * 253


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("app@" + DIGEST, "refusing to create a tag with a digest reference"),
        ("sha256", "ambiguous tag using digest algorithm as name"),
        ("sha256:v1", "ambiguous tag using digest algorithm as name"),
        ("App:1", "must be lowercase"),
        (HEX, "64-byte hexadecimal"),
    ],
)
def test_tag_targets_refuse_what_docker_refuses(target: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_tag_target(target)


_component = st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_domain = st.sampled_from(["", "localhost/", "example.com/", "reg.io:5000/", "docker.io/"])


@given(
    domain=_domain,
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
)
def test_parse_format_parse_is_stable(
    domain: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = domain + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    try:
        first = parse_reference(text)
    except errors.InvalidArgument:
        return  # e.g. a 64-hex name; covered by the table above
    assert parse_reference(str(first)) == first
    assert parse_reference(first.familiar()) == first
    assert first.tag == tag or (tag is None and digest is None and first.tag == "latest")
    assert first.digest == digest


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (DIGEST, None),
        ("sha256:" + "B" * 64, "64 lowercase hex"),
        ("sha256:abc", "got 3"),
        ("md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
        ("../../etc/passwd", "invalid digest"),
        ("sha256:../" + "a" * 61, "invalid digest"),
    ],
)
def test_digests_are_sha256_and_never_a_path(text: str, error: str | None) -> None:
    if error is None:
        assert parse_digest(text) == text
    else:
        with pytest.raises(errors.InvalidArgument, match=error):
            parse_digest(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/arm64/8.0", Platform("linux", "arm64")),  # found by the fuzzer
        ("linux/arm64/v9", Platform("linux", "arm64", "v9")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/6", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("Linux/AMD64", Platform("linux", "amd64")),
    ],
)
def test_platforms_normalise_like_containerd(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "linux/amd64/v3/x", "linux//amd64", "plan9"])
def test_bad_platforms_are_refused(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid platform"):
        parse_platform(text)


def _offer(*texts: str) -> list[tuple[Platform | None, str]]:
    return [(parse_platform(t), t) for t in texts]


@pytest.mark.parametrize(
    ("wanted", "offered", "picked"),
    [
        ("linux/arm64", ["linux/amd64", "linux/arm64/v8"], "linux/arm64/v8"),
        ("linux/arm64/v8", ["linux/amd64", "linux/arm64"], "linux/arm64"),
        ("linux/arm/v7", ["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7"),
        ("linux/arm/v7", ["linux/arm/v5", "linux/arm/v6"], "linux/arm/v6"),
        ("linux/arm/v6", ["linux/arm/v7"], None),
        ("linux/amd64", ["linux/386"], None),  # another architecture only when asked
        ("linux/386", ["linux/amd64", "linux/386"], "linux/386"),
        ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2"], "linux/amd64/v2"),
        ("linux/amd64", ["windows/amd64"], None),
    ],
)
def test_platform_matching_prefers_the_closest_runnable_variant(
    wanted: str, offered: list[str], picked: str | None
) -> None:
    assert best_match(parse_platform(wanted), _offer(*offered)) == picked


def test_reference_helpers() -> None:
    reference = parse_reference("localhost:5000/app:1")
    assert reference.repository() == Reference("localhost:5000", "app")
    assert reference.with_digest(DIGEST).familiar() == "localhost:5000/app@" + DIGEST
    assert reference.with_tag("2").familiar_name == "localhost:5000/app"
