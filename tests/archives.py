"""Docker-save archives made in memory, for feeding Load."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class ImageSpec:
    tags: Sequence[str]
    layers: Sequence[bytes]  # uncompressed layer tars
    labels: dict[str, str] = field(default_factory=dict)
    created: str = "2024-05-06T07:08:09Z"
    architecture: str = "amd64"

    def config(self) -> bytes:
        return json.dumps(
            {
                "architecture": self.architecture,
                "os": "linux",
                "created": self.created,
                "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/app"], "Labels": self.labels},
                "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in self.layers]},
                "history": [
                    {"created": self.created, "created_by": f"COPY layer{i} /"}
                    for i in range(len(self.layers))
                ],
            },
            sort_keys=True,
        ).encode()

    @property
    def image_id(self) -> str:
        return sha(self.config())


def docker_archive(*images: ImageSpec) -> bytes:
    """A legacy `docker save` archive: <hex>.json configs, <n>/layer.tar layers."""
    members: dict[str, bytes] = {}
    manifest = []
    for image in images:
        config = image.config()
        members[f"{sha(config)[7:]}.json"] = config
        paths = []
        for layer in image.layers:
            path = f"{sha(layer)[7:19]}/layer.tar"
            members[path] = layer
            paths.append(path)
        manifest.append(
            {"Config": f"{sha(config)[7:]}.json", "RepoTags": list(image.tags), "Layers": paths}
        )
    members["manifest.json"] = json.dumps(manifest).encode()
    return tar_of(members)


# ---- hand-made headers, for archives no honest writer makes ------------------------


def tar_header(name: bytes, size: int, kind: bytes = b"0", linkname: bytes = b"") -> bytes:
    """One ustar header block with a valid checksum; ``size`` may be a lie."""
    block = bytearray(512)
    block[0 : len(name[:100])] = name[:100]
    block[100:108] = b"0000644\x00"
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:136] = b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[156:157] = kind
    block[157 : 157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def tar_member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    """A header and its data, padded to whole blocks."""
    return tar_header(name, len(data), kind) + data + b"\x00" * (-len(data) % 512)


def tar_end() -> bytes:
    return b"\x00" * 1024


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax_digits_archive(digits: int = 200_000) -> bytes:
    """CVE-2024-6232's shape: a PAX header that is one long run of digits
    (quadratic in the interpreter's tarfile; ~230 bytes once gzipped)."""
    return tar_member(b"././@PaxHeader", b"1" * digits, b"x") + tar_end()


def long_name_archive(claimed: int = 200 << 20) -> bytes:
    """A GNU long-name header claiming ``claimed`` bytes of name, then a little of it."""
    return tar_header(b"././@LongLink", claimed, b"L") + b"a" * 4096


def json_members_archive(count: int = 100, size: int = 4 << 20) -> bytes:
    """``count`` members of ``size`` bytes that look like JSON documents."""
    body = b"{" + b" " * (size - 2) + b"}"
    return b"".join(tar_member(b"doc%d.json" % i, body) for i in range(count)) + tar_end()


def empty_members_archive(count: int = 300_000) -> bytes:
    """``count`` empty regular files (one header block each)."""
    return b"".join(tar_header(b"e%d" % i, 0) for i in range(count)) + tar_end()
