"""images, inspect, history, tag, rm, prune, df, check: output and exit codes,
with --filter and --format cases from docker's documentation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.archives import ImageSpec, docker_archive, tar_of
from tests.cli.conftest import Cli


def _image(tag: str, n: int, created: str, **labels: str) -> ImageSpec:
    return ImageSpec(
        [tag], [tar_of({f"file{n}": b"x" * (1000 * n)})], labels=labels, created=created
    )


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path) -> Cli:
    archive = tmp_path / "images.tar"
    archive.write_bytes(
        docker_archive(
            _image("busybox:glibc", 1, "2024-01-01T00:00:00Z"),
            _image("busybox:uclibc", 2, "2024-01-02T00:00:00Z"),
            _image("busybox:musl", 3, "2024-01-03T00:00:00Z"),
            _image("image1:latest", 4, "2023-01-01T00:00:00Z", **{"com.example.version": "1.0"}),
            _image("image2:latest", 5, "2023-02-01T00:00:00Z", **{"com.example.version": "2.0"}),
        )
    )
    out = cli.ok("load", "-i", str(archive))
    assert out.count("Loaded image: ") == 5
    return cli


def _column(out: str, header: str) -> list[str]:
    lines = out.splitlines()
    start = lines[0].index(header)
    return [line[start:].split()[0] if line[start:].strip() else "" for line in lines[1:]]


def test_images_prints_docker_columns_newest_first(loaded: Cli) -> None:
    out = loaded.ok("images")
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
    ]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["busybox", "musl"],
        ["busybox", "uclibc"],
        ["busybox", "glibc"],
        ["image2", "latest"],
        ["image1", "latest"],
    ]
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in _column(out, "IMAGE ID"))
    assert re.search(r"(\d+ (months|years) ago)", lines[1])
    assert "kB" in lines[1]


def test_quiet_digests_and_no_trunc(loaded: Cli) -> None:
    ids = loaded.ok("images", "-q").split()
    assert len(ids) == 5
    assert all(len(i) == 12 for i in ids)
    full = loaded.ok("images", "-q", "--no-trunc").split()
    assert all(f.startswith("sha256:") and len(f) == 71 for f in full)
    header = loaded.ok("images", "--digests").splitlines()[0]
    assert re.split(r"\s{2,}", header.strip())[2] == "DIGEST"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["reference=busy*:*libc"], {"busybox:glibc", "busybox:uclibc"}),
        (["reference=busy*:uclibc", "reference=busy*:glibc"], {"busybox:uclibc", "busybox:glibc"}),
        (["label=com.example.version"], {"image1:latest", "image2:latest"}),
        (["label=com.example.version=1.0"], {"image1:latest"}),
        (["before=busybox:uclibc"], {"busybox:glibc", "image1:latest", "image2:latest"}),
        (["since=busybox:uclibc"], {"busybox:musl"}),
        (["dangling=true"], set()),
    ],
)
def test_filters_from_dockers_documentation(
    loaded: Cli, filters: list[str], expected: set[str]
) -> None:
    args = [arg for f in filters for arg in ("--filter", f)]
    out = loaded.ok("images", *args, "--format", "{{.Repository}}:{{.Tag}}")
    assert set(out.split()) == expected


def test_a_positional_repository_is_a_reference_filter(loaded: Cli) -> None:
    out = loaded.ok("images", "busybox", "--format", "{{.Tag}}")
    assert out.split() == ["musl", "uclibc", "glibc"]
    assert loaded.ok("images", "busy", "--format", "{{.Tag}}") == ""  # not a prefix match
    out = loaded.ok("images", "busybox:musl", "--format", "{{.Tag}}")
    assert out.split() == ["musl"]


def test_format_templates_from_dockers_documentation(loaded: Cli) -> None:
    ids = loaded.ok("images", "-q").split()
    raw = loaded.ok("images", "--format", "{{.ID}}: {{.Repository}}").splitlines()
    assert raw[0] == f"{ids[0]}: busybox"
    table = loaded.ok("images", "--format", "table {{.ID}}\\t{{.Repository}}\\t{{.Tag}}")
    lines = table.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["IMAGE ID", "REPOSITORY", "TAG"]
    assert lines[1].split() == [ids[0], "busybox", "musl"]
    rows = [json.loads(line) for line in loaded.ok("images", "--format", "json").splitlines()]
    assert set(rows[0]) == {
        "Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository",
        "SharedSize", "Size", "Tag", "UniqueSize", "VirtualSize",
    }  # fmt: skip
    assert rows[0]["Containers"] == "N/A"
    assert rows[0]["Digest"] == "<none>"
    assert rows[0]["CreatedAt"] == "2024-01-03 00:00:00 +0000 UTC"


def test_a_bad_filter_or_template_is_one_clear_line(loaded: Cli) -> None:
    result = loaded("images", "--filter", "colour=red")
    assert result.returncode == 1
    assert result.stderr.startswith("Error response from daemon: invalid filter 'colour'")
    assert len(result.stderr.splitlines()) == 1
    result = loaded("images", "--format", "{{.Nope}}")
    assert result.returncode == 1
    assert "can't evaluate field Nope" in result.stderr


def test_inspect_prints_a_json_array_and_templates(loaded: Cli) -> None:
    documents = json.loads(loaded.ok("inspect", "image1", "busybox:musl"))
    assert [d["RepoTags"] for d in documents] == [["image1:latest"], ["busybox:musl"]]
    first = documents[0]
    assert first["Id"].startswith("sha256:")
    assert first["Config"]["Labels"] == {"com.example.version": "1.0"}
    assert first["RootFS"]["Type"] == "layers"
    assert len(first["RootFS"]["Layers"]) == 1
    assert first["Os"] == "linux"
    assert first["Architecture"] == "amd64"
    cases = {
        "{{.Id}}": first["Id"],
        "{{json .RepoTags}}": '["image1:latest"]',
        "{{range .RepoTags}}{{println .}}{{end}}": "image1:latest\n",
        '{{index .Config.Labels "com.example.version"}}': "1.0",
        "{{.Os}}/{{.Architecture}}{{if .Variant}}/{{.Variant}}{{end}}": "linux/amd64",
        "{{len .RootFS.Layers}}": "1",
        "{{json .Config.Env}}": '["PATH=/bin"]',
        '{{join .Config.Cmd " "}}': "/bin/app",
    }
    for template, expected in cases.items():
        assert loaded.ok("inspect", "--format", template, "image1") == expected + "\n", template


def test_inspect_of_an_unknown_image_fails_but_prints_the_others(loaded: Cli) -> None:
    result = loaded("inspect", "image1", "nope")
    assert result.returncode == 1
    assert len(json.loads(result.stdout)) == 1
    assert result.stderr == "Error response from daemon: No such image: nope:latest\n"


def test_history_columns_quiet_and_no_trunc(loaded: Cli) -> None:
    out = loaded.ok("history", "image1")
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == [
        "IMAGE",
        "CREATED",
        "CREATED BY",
        "SIZE",
        "COMMENT",
    ]
    assert "COPY layer0 /" in lines[1]
    assert loaded.ok("history", "-q", "image1").split() == [lines[1].split()[0]]
    assert loaded.ok("history", "-q", "--no-trunc", "image1").startswith("sha256:")


def test_tag_then_rm_untags_and_deletes_like_docker(loaded: Cli) -> None:
    loaded.ok("tag", "image1", "registry.example/team/app:1")
    assert "registry.example/team/app" in loaded.ok("images", "--format", "{{.Repository}}")
    conflict = loaded("rm", loaded.ok("images", "-q", "image1").strip())
    assert conflict.returncode == 1
    assert "must be forced" in conflict.stderr
    assert (
        loaded.ok("rm", "registry.example/team/app:1") == "Untagged: registry.example/team/app:1\n"
    )
    out = loaded.ok("rmi", "image1")
    assert out.splitlines()[0] == "Untagged: image1:latest"
    assert re.fullmatch(r"Deleted: sha256:[0-9a-f]{64}", out.splitlines()[1])
    missing = loaded("rm", "nope")
    assert missing.returncode == 1
    assert "No such image: nope:latest" in missing.stderr
    assert loaded("rm", "-f", "nope").returncode == 0


def test_rm_of_a_mixed_list_applies_the_valid_items_and_reports_the_others(
    loaded: Cli,
) -> None:
    loaded.ok("tag", "image1", "image1:other")  # its ID now needs -f
    image1 = loaded.ok("images", "-q", "--no-trunc", "image1:latest").strip()
    result = loaded("rmi", "busybox:glibc", "nope", image1, "image2")
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert out[0] == "Untagged: busybox:glibc"
    assert re.fullmatch(r"Deleted: sha256:[0-9a-f]{64}", out[1])
    assert "Untagged: image2:latest" in out
    assert not any("image1" in line for line in out)
    errors = result.stderr.splitlines()
    assert errors[0] == "Error response from daemon: No such image: nope:latest"
    assert errors[1].startswith("Error response from daemon: ")
    assert "must be forced" in errors[1]
    assert len(errors) == 2
    left = loaded.ok("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert sorted(left) == ["busybox:musl", "busybox:uclibc", "image1:latest", "image1:other"]
    # with -f an unknown name is only reported, and a conflict is forced through
    forced = loaded("rmi", "-f", "nope", image1)
    assert forced.returncode == 0
    assert forced.stderr == "Error response from daemon: No such image: nope:latest\n"
    assert "Untagged: image1:other" in forced.stdout.splitlines()


def test_prune_asks_first_and_does_nothing_on_no(loaded: Cli) -> None:
    loaded.ok("tag", "busybox:musl", "busybox:glibc")  # the old glibc image is now dangling
    declined = loaded("prune", input="n\n")
    assert declined.returncode == 1
    assert declined.stdout.startswith(
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    )
    assert "image prune has been cancelled" in declined.stderr
    assert len(set(loaded.ok("images", "-a", "-q").split())) == 5
    dry = loaded.ok("prune", "--dry-run")
    assert "Would delete Images:" in dry
    assert "Total reclaimable space:" in dry
    out = loaded("prune", input="y\n")
    assert out.returncode == 0
    assert re.search(
        r"Deleted Images:\ndeleted: sha256:[0-9a-f]{64}\n\nTotal reclaimed space: \S+B", out.stdout
    )
    assert len(set(loaded.ok("images", "-a", "-q").split())) == 4
    assert loaded.ok("prune", "-f").strip() == "Total reclaimed space: 0B"
    everything = loaded.ok("prune", "-a", "-f", "--filter", "label=com.example.version")
    assert everything.count("deleted: sha256:") == 2


def test_df_and_check(loaded: Cli) -> None:
    summary = loaded.ok("df").splitlines()
    assert re.split(r"\s{2,}", summary[0].strip()) == [
        "TYPE",
        "TOTAL",
        "ACTIVE",
        "SIZE",
        "RECLAIMABLE",
    ]
    # every image has a name here: all active; `prune -a` would free all of it
    assert summary[1].split()[:3] == ["Images", "5", "5"]
    assert summary[1].endswith("(100%)")
    verbose = loaded.ok("df", "-v")
    assert verbose.startswith("Images space usage:\n\nREPOSITORY")
    assert "CONTENT SIZE" in verbose
    assert "SHARED SIZE" in verbose
    assert "UNIQUE SIZE" in verbose
    assert loaded.ok("check").startswith("ok: ")


def test_df_verbose_lists_every_image_across_pages(cli: Cli, tmp_path: Path) -> None:
    # more images than one page of the server's default size would be slow to
    # make; the CLI asks for all pages whatever their size, so a few show the walk
    archive = tmp_path / "many.tar"
    specs = [_image(f"many{n}:latest", n + 1, "2024-01-01T00:00:00Z") for n in range(3)]
    archive.write_bytes(docker_archive(*specs))
    cli.ok("load", "-i", str(archive))
    verbose = cli.ok("df", "-v").splitlines()
    assert sorted(line.split()[0] for line in verbose[3:]) == ["many0", "many1", "many2"]


def test_check_prints_each_problem_then_the_summary(loaded: Cli) -> None:
    loaded.ok("rm", "image2")
    blobs = sorted((loaded.server.root / "blobs" / "sha256").iterdir())
    damaged = blobs[0]
    damaged.chmod(0o644)
    content = damaged.read_bytes()
    damaged.write_bytes(bytes([content[0] ^ 1]) + content[1:])  # same size, other bytes
    result = loaded("check")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"sha256:{damaged.name}" in lines[0]
    assert lines[0].startswith("corrupt-blob: ")
    assert re.fullmatch(r"(1 problem|\d+ problems): \d+ blobs and 4 images checked", lines[-1])


def test_save_and_load_round_trip_through_files_and_pipes(loaded: Cli, tmp_path: Path) -> None:
    target = tmp_path / "out.tar"
    assert loaded.ok("save", "-o", str(target), "image1", "image2") == ""
    assert target.stat().st_size > 0
    piped = loaded.binary("save", "image1")
    assert piped.returncode == 0
    assert piped.stdout[257:262] == b"ustar"
    loaded.ok("rm", "image1", "image2")
    out = loaded.ok("load", "-i", str(target))
    assert sorted(out.splitlines()) == [
        "Loaded image: image1:latest",
        "Loaded image: image2:latest",
    ]
    loaded.ok("rm", "image1")
    again = loaded.binary("load", input=piped.stdout)
    assert again.returncode == 0
    assert again.stdout == b"Loaded image: image1:latest\n"


def test_errors_are_one_line_with_the_status_meaning(cli: Cli) -> None:
    result = cli("inspect", "--format", "{{.Id}}", "nope")
    assert result.returncode == 1
    down = cli("-H", "127.0.0.1:1", "images")
    assert down.returncode == 1
    assert down.stderr == (
        "Cannot connect to the imagestore server at 127.0.0.1:1."
        " Is the imagestore server running?\n"
    )
    usage = cli("images", "--no-such-flag")
    assert (usage.returncode, usage.stderr) == (
        2,
        "Error: unknown flag: --no-such-flag\nSee 'imagestore images --help'.\n",
    )
    nested = cli("image", "ls", "--no-such-flag=1")
    assert (nested.returncode, nested.stderr) == (
        2,
        "Error: unknown flag: --no-such-flag\nSee 'imagestore image ls --help'.\n",
    )
    unknown = cli("imagestore-rules")
    assert (unknown.returncode, unknown.stderr) == (
        2,
        "Error: 'imagestore-rules' is not an imagestore command\nSee 'imagestore --help'.\n",
    )
    missing = cli("inspect")
    assert (missing.returncode, missing.stderr.splitlines()) == (
        2,
        ["Error: the following arguments are required: IMAGE", "See 'imagestore inspect --help'."],
    )
