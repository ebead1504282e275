"""Repository paths ↔ the store's canonical names (distribution/names.py): the
table of cases, and the round trip as a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import errors
from imagestore.distribution.names import path_of, repository
from imagestore.oci.references import parse_reference


@pytest.mark.parametrize(
    ("path", "ns", "canonical"),
    [
        ("library/redis", None, "docker.io/library/redis"),
        ("redis", None, "docker.io/library/redis"),
        ("foo/bar", None, "docker.io/foo/bar"),
        ("foo/bar/baz", None, "docker.io/foo/bar/baz"),
        ("docker.io/library/redis", None, "docker.io/library/redis"),
        ("index.docker.io/foo/bar", None, "docker.io/foo/bar"),
        ("docker.io/redis", None, "docker.io/library/redis"),
        ("quay.io/org/app", None, "quay.io/org/app"),
        ("127.0.0.1_5000/demo/app", None, "127.0.0.1:5000/demo/app"),
        ("registry.example.com_443/a", None, "registry.example.com:443/a"),
        ("localhost/x", None, "localhost/x"),
        ("localhost_5000/x", None, "localhost:5000/x"),
        ("foo_bar/x", None, "docker.io/foo_bar/x"),  # no ".": not a host
        ("quay.io", None, "docker.io/library/quay.io"),  # one component: Docker's reading
        ("library/redis", "docker.io", "docker.io/library/redis"),
        ("redis", "docker.io", "docker.io/library/redis"),
        ("demo/app", "127.0.0.1:5000", "127.0.0.1:5000/demo/app"),
        ("quay.io/x", "ghcr.io", "ghcr.io/quay.io/x"),  # with ns the path is never a host
    ],
)
def test_paths_name_repositories(path: str, ns: str | None, canonical: str) -> None:
    assert repository(path, ns) == canonical


@pytest.mark.parametrize(
    ("path", "ns"),
    [
        ("", None),
        ("Foo/bar", None),
        ("a//b", None),
        ("a/", None),
        ("_catalog", None),
        ("127.0.0.1_123456/x", None),  # a port of six digits is no port
        ("a" * 600, None),
        ("library/redis", "not a host"),
        ("library/redis:tag", None),
        ("library/redis@sha256:" + "a" * 64, None),
    ],
)
def test_what_is_not_a_repository_path(path: str, ns: str | None) -> None:
    with pytest.raises(errors.ReferenceInvalid):
        repository(path, ns)


@pytest.mark.parametrize(
    ("canonical", "path"),
    [
        ("docker.io/library/redis", "library/redis"),
        ("docker.io/foo/bar", "foo/bar"),
        ("docker.io/a.b/c", "docker.io/a.b/c"),  # "a.b/c" would be the host a.b's
        ("docker.io/localhost/c", "docker.io/localhost/c"),
        ("127.0.0.1:5000/demo/app", "127.0.0.1_5000/demo/app"),
        ("localhost:5000/x", "localhost_5000/x"),
        ("quay.io/org/app", "quay.io/org/app"),
        ("[::1]:5000/x", None),  # no path component spells an IPv6 host
    ],
)
def test_canonical_names_have_a_path(canonical: str, path: str | None) -> None:
    assert path_of(canonical) == path


_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([".", "_", "__", "-", "--"])
_COMPONENT = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _ALNUM,
    st.lists(st.tuples(_SEPARATOR, _ALNUM), max_size=2),
)
_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_HOST = st.one_of(
    st.just("docker.io"),
    st.just("localhost"),
    st.builds(lambda labels: ".".join(labels), st.lists(_LABEL, min_size=2, max_size=3)),
    st.builds(lambda *octets: ".".join(map(str, octets)), *[st.integers(0, 255)] * 4),
)
_DOMAIN = st.builds(
    lambda host, port: host if port is None or host == "docker.io" else f"{host}:{port}",
    _HOST,
    st.none() | st.integers(1, 65535),
)


@st.composite
def canonical_repositories(draw: st.DrawFn) -> str:
    domain = draw(_DOMAIN)
    components = draw(st.lists(_COMPONENT, min_size=1, max_size=4))
    return parse_reference(f"{domain}/{'/'.join(components)}", default_tag=False).name


@given(canonical_repositories())
def test_every_canonical_repository_round_trips_through_its_path(canonical: str) -> None:
    path = path_of(canonical)
    assert path is not None
    assert repository(path) == canonical
    assert path_of(repository(path)) == path  # and the path is the one it is given
    assert ":" not in path  # a path component never holds a port's colon
