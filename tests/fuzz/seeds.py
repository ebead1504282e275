"""Write the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<name>/).

``python -m tests.fuzz.seeds`` regenerates them, deterministically: valid
examples of what each parser reads in real use (manifests and configs as
registries and archives carry them, references and filters from the tests,
``--format`` templates, small archives in every format the reader knows). The
fuzzer mutates from there; inputs it found worth keeping can be added beside
them (``make fuzz`` writes its own corpus under build/fuzz/, not here).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

from imagestore.oci import mediatypes as mt
from tests.archives import ImageSpec, docker_archive, pax_record, tar_end, tar_member, tar_of
from tests.fuzz.run import CORPUS


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


CONFIG = _json(
    {
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "author": "someone",
        "config": {
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.opencontainers.image.version": "1.0", "x": "y"},
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(b"layer1"), _digest(b"layer2")]},
        "history": [
            {"created": "2024-01-02T03:04:05Z", "created_by": "ADD layer1 /"},
            {"created": "2024-01-02T03:04:06+02:00", "created_by": "ENV A=1", "empty_layer": True},
            {"created_by": "COPY layer2 /", "comment": "buildkit"},
        ],
    }
)


def _manifest(media_type: str | None, config_type: str, layer_type: str) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "digest": _digest(CONFIG), "size": len(CONFIG)},
        "layers": [
            {"mediaType": layer_type, "digest": _digest(b"gz1"), "size": 3},
            {
                "mediaType": layer_type,
                "digest": _digest(b"gz2"),
                "size": 3,
                "annotations": {"org.example": "v"},
            },
        ],
    }
    if media_type:
        document["mediaType"] = media_type
    return _json(document)


def _index(media_type: str, platforms: list[str]) -> bytes:
    entries = []
    for number, platform in enumerate(platforms):
        os, arch, *variant = platform.split("/")
        entry: dict[str, object] = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": _digest(b"%d" % number),
            "size": 500 + number,
            "platform": {"os": os, "architecture": arch},
        }
        if variant:
            entry["platform"] = {"os": os, "architecture": arch, "variant": variant[0]}
        entries.append(entry)
    return _json({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})


PLATFORMS = [
    "linux/amd64",
    "linux/amd64/v2",
    "linux/amd64/v3",
    "linux/arm64/v8",
    "linux/arm64/v8.2",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/arm/v5",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "windows/amd64",
    "darwin/arm64",
    "freebsd/amd64",
    "linux/loong64",
    "linux/aarch64",
    "linux/x86_64",
    "linux/armhf",
]


def manifests() -> dict[str, bytes]:
    return {
        "oci-manifest.json": _manifest(mt.OCI_MANIFEST, mt.OCI_CONFIG, mt.OCI_LAYER_GZIP),
        "docker-manifest.json": _manifest(
            mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_GZIP
        ),
        "umoci-manifest.json": _manifest(None, mt.OCI_CONFIG, mt.OCI_LAYER),
        "foreign-layer.json": _manifest(
            mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_FOREIGN_LAYER
        ),
        "oci-index-20.json": _index(mt.OCI_INDEX, PLATFORMS),
        "docker-list.json": _index(mt.DOCKER_MANIFEST_LIST, PLATFORMS[:4]),
        "schema1.json": _json({"schemaVersion": 1, "name": "a", "tag": "1", "fsLayers": []}),
        "config.json": CONFIG,
        "config-minimal.json": _json({"rootfs": {"type": "layers", "diff_ids": []}}),
    }


def references() -> dict[str, bytes]:
    values = [
        "redis",
        "redis:7.2",
        "library/redis",
        "docker.io/library/redis:7",
        "index.docker.io/redis",
        "user/app/sub:1",
        "localhost:5000/a/b:t",
        "127.0.0.1:5000/app",
        "Example.COM/app",
        "[::1]:5000/app",
        "a-b__c/d.e",
        "redis@sha256:" + "b" * 64,
        "redis:7@sha256:" + "b" * 64,
        "r:_Tag.-9",
        "https://index.docker.io/v1/",
        "a/" + "b" * 253,
    ]
    return {f"ref-{number:02d}.txt": value.encode() for number, value in enumerate(values)}


def filters() -> dict[str, bytes]:
    values = [
        "reference=busy*:*libc\nreference=*/*/app:*",
        "dangling=true\nlabel=com.example.version=1.0\nlabel=x",
        "before=redis:7\nsince=alpine",
        "until=24h",
        "until=1h30m15.5s",
        "until=2024-01-02T03:04:05.123456789Z",
        "until=2024-01-02T03:04:05+02:00",
        "until=2024-01-02",
        "until=1700000000.123456789",
        "label!=keep=yes\nuntil=-10m",
        "dangling=false\ndangling=0",
    ]
    seeds = {f"filters-{number:02d}.txt": value.encode() for number, value in enumerate(values)}
    # Found by fuzzing: an ``until`` beyond what datetime holds must be refused
    # as an InvalidArgument, not escape as OverflowError, ValueError or OSError.
    found = ["until=17000003456789", "until=2222222222222222222", "until=" + "4" * 40]
    found += ["until=100000000h", "until=" + "4" * 50 + "m"]
    seeds.update({f"found-until-{number}.txt": v.encode() for number, v in enumerate(found)})
    return seeds


def globs() -> dict[str, bytes]:
    values = [
        ("busy*:*libc", ["busybox:glibc", "busybox:musl"]),
        ("*/*", ["user/app", "app"]),
        ("app:[0-9]", ["app:7", "app:x"]),
        ("app:[^0-9]", ["app:x", "app:7"]),
        ("a\\*b", ["a*b", "ab"]),
        ("[\\]a-c]?*", ["]x", "b/"]),
        ("*a*a*a*a*a*a*a*a*a*b", ["a" * 40, "a" * 40 + "b"]),
        ("*[a/]*b", ["aa/b", "/b"]),
        ("a[^a]b", ["a☺b", "a/b"]),
        ("[a-ζ]*", ["\N{GREEK SMALL LETTER ALPHA}", "A"]),
        ("docker.io/library/redis:*", ["docker.io/library/redis:7"]),
    ]
    return {
        f"glob-{number:02d}.txt": "\0".join([pattern, *names]).encode()
        for number, (pattern, names) in enumerate(values)
    }


def platforms() -> dict[str, bytes]:
    seeds = {f"platforms-{n:02d}.txt": p.encode() for n, p in enumerate(PLATFORMS[:10])}
    seeds["several.txt"] = "\n".join(PLATFORMS).encode()
    seeds["object.json"] = _json({"os": "linux", "architecture": "arm", "variant": "v6"})
    seeds["windows.json"] = _json(
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1234"}
    )
    return seeds


def template() -> dict[str, bytes]:
    values = [
        "{{.Id}}",
        "{{.Config.Env}}",
        "{{.Config.Labels.x}}|{{.Config.Labels.missing}}",
        '{{index .Config.Labels "com.example.version"}}',
        "{{index .RepoTags 1}}",
        "{{json .RepoTags}}",
        "{{.RepoTags | json}}",
        '{{join .RepoTags ","}}',
        "{{range .RepoTags}}{{println .}}{{end}}",
        "{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}",
        "{{range .Config.Cmd}}x{{else}}none{{end}}",
        '{{if eq .Os "windows"}}w{{else if eq .Os "linux"}}l{{else}}o{{end}}',
        "{{if and .Os (not .Variant)}}yes{{end}}",
        "{{with .Config}}{{len .Env}}{{end}}",
        '{{printf "%s/%s %d %q %v %%" .Os .Architecture .Size .Id .Flag}}',
        '{{upper .Os}} {{lower "ABC"}} {{title .Os}}',
        '{{split "a,b" ","}}',
        "a {{- .Os -}} b",
        "{{/* a comment */}}x",
        "{{$os := .Os}}{{$os}}",
        "{{.Os}}/{{.Architecture}} {{json .Config.Labels}} {{len .RootFS.Layers}} layer(s)",
        "{{truncate .Id 12}} {{pad .Os 2 2}} {{lt .Size 2000}} {{ge .Ratio 0.5}}",
        "{{.Nope}}",
        "{{if .Id}}x",
    ]
    seeds = {f"template-{number:02d}.txt": v.encode() for number, v in enumerate(values)}
    # Found by fuzzing: a bad string literal and ``and``/``or`` without
    # arguments must be template errors (InvalidArgument).
    found = ['{{printf "\x01"}}', '{{"\\x"}}', "{{and}}", "{{or}}"]
    seeds.update({f"found-{number}.txt": v.encode() for number, v in enumerate(found)})
    return seeds


def _trimmed(archive: bytes) -> bytes:
    """Without tarfile's padding to 10 KiB: the members, then two zero blocks."""
    used = len(archive.rstrip(b"\0"))
    return archive[: used + -used % 512] + tar_end()


def _tar(format_: int, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format_) as tar:
        for info in members:
            info.mtime = 0
            content = data.get(info.name)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return _trimmed(buffer.getvalue())


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


def archive() -> dict[str, bytes]:
    long_name = "dir/" + "n" * 150 + "/file"
    mixed = _tar(
        tarfile.USTAR_FORMAT,
        [
            _info("etc/", tarfile.DIRTYPE),
            _info("etc/hello", size=5),
            _info("etc/link", tarfile.SYMTYPE, link="hello"),
            _info("etc/hard", tarfile.LNKTYPE, link="etc/hello"),
            _info("dev/null", tarfile.CHRTYPE),
            _info("fifo", tarfile.FIFOTYPE),
        ],
        {"etc/hello": b"hello"},
    )
    gnu = _tar(
        tarfile.GNU_FORMAT,
        [_info(long_name, size=3), _info("l", tarfile.SYMTYPE, link="t" * 120)],
        {long_name: b"abc"},
    )
    xattrs = tar_member(
        b"././@PaxHeader",
        pax_record("SCHILY.xattr.user.big", b"x" * 2000)
        + pax_record("path", long_name.encode())
        + pax_record("size", b"4")
        + pax_record("mtime", b"1700000000.5"),
        b"x",
    )
    pax = xattrs + tar_member(b"short", b"data") + tar_end()
    layer = _trimmed(tar_of({"hello": b"hi"}))
    image = _trimmed(
        docker_archive(ImageSpec(tags=["example/hello:1"], layers=[layer], labels={"a": "b"}))
    )
    return {
        "ustar-kinds.tar": mixed,
        "gnu-long-names.tar": gnu,
        "pax-xattrs.tar": pax,
        "docker-archive.tar": image,
        "docker-archive.tar.gz": gzip.compress(image, mtime=0),
        "ustar-kinds.tar.xz": lzma.compress(mixed),
        "gnu-long-names.tar.bz2": bz2.compress(gnu),
        "empty.tar": tar_end(),
        "no-end-blocks.tar": tar_member(b"a", b"b"),
    }


HARNESSES = {
    "manifests": manifests,
    "references": references,
    "filters": filters,
    "globs": globs,
    "platforms": platforms,
    "template": template,
    "archive": archive,
}


def write(root: Path = CORPUS) -> None:
    """(Re)write every harness's seed files under ``root``."""
    for name, seeds in HARNESSES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in seeds().items():
            (folder / file_name).write_bytes(content)


if __name__ == "__main__":
    write()
