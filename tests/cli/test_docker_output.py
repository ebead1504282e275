"""What the CLI prints where docker's own output is the reference: save of a
whole repository, template errors and printf, JSON escaping and nulls, df's
columns against what prune frees, history --human, images --tree, the prune
prompt and the help texts."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from imagestore.cli.progress import ProgressView
from imagestore.client import Phase, Progress
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.cli.conftest import Cli
from tests.registry.conftest import Published


def _image(tag: str, n: int, **labels: str) -> ImageSpec:
    return ImageSpec([tag], [tar_of({f"file{n}": b"y" * (1000 * n)})], labels=labels)


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path) -> Cli:
    archive = tmp_path / "images.tar"
    archive.write_bytes(
        docker_archive(
            _image("repo:a", 1),
            _image("repo:b", 2),
            _image("other/repo:c", 3),
            _image("labelled:1", 4, note="<a&b>"),
        )
    )
    cli.ok("load", "-i", str(archive))
    return cli


def _saved_tags(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return sorted(tag for entry in json.load(member) for tag in entry["RepoTags"] or [])


def test_save_of_a_repository_saves_every_tag(loaded: Cli, tmp_path: Path) -> None:
    whole = tmp_path / "repo.tar"
    loaded.ok("save", "-o", str(whole), "repo")
    assert _saved_tags(whole) == ["repo:a", "repo:b"]  # not other/repo, not repo:latest
    one = tmp_path / "one.tar"
    loaded.ok("save", "-o", str(one), "repo:b")
    assert _saved_tags(one) == ["repo:b"]
    piped = loaded.binary("save", "repo")
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "piped.tar").write_bytes(piped.stdout)
    assert _saved_tags(tmp_path / "piped.tar") == ["repo:a", "repo:b"]
    missing = loaded("save", "-o", str(tmp_path / "none.tar"), "nosuch")
    assert missing.returncode == 1
    assert "nosuch" in missing.stderr
    assert not (tmp_path / "none.tar").exists()
    nowhere = tmp_path / "no-such-folder" / "repo.tar"
    unwritable = loaded("save", "-o", str(nowhere), "repo")
    assert (unwritable.returncode, unwritable.stderr) == (
        1,
        f"Error: {nowhere}: no such file or directory\n",
    )


@pytest.mark.parametrize(
    "command",
    [
        ("images",),
        ("inspect", "repo:a"),
        ("history", "repo:a"),
        ("inspect", "no-such-image"),  # the template is read before the image is looked up
        ("history", "no-such-image"),
    ],
)
def test_an_unclosed_action_is_gos_parse_error(loaded: Cli, command: tuple[str, ...]) -> None:
    result = loaded(*command, "--format", "{{.ID")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "template parsing error: template: :1: unclosed action" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_printf_honours_width_and_precision(loaded: Cli) -> None:
    out = loaded.ok("images", "repo", "--format", '{{printf "%.2s|%-6s|%5d|" .Repository .Tag 42}}')
    assert sorted(out.splitlines()) == ["re|a     |   42|", "re|b     |   42|"]


def test_json_is_not_html_escaped_either_way(loaded: Cli) -> None:
    # docker's --format json is {{json .}}: neither escapes <, > or &
    plain = loaded.ok("images", "--format", "json")
    template = loaded.ok("images", "--format", "{{json .}}")
    assert plain == template
    assert '"Digest":"<none>"' in plain
    assert "\\u003c" not in plain
    labels = loaded.ok("inspect", "--format", "{{json .Config.Labels}}", "labelled:1")
    assert labels == '{"note":"<a&b>"}\n'
    history = loaded.ok("history", "--format", "json", "repo:a").splitlines()
    assert json.loads(history[0])["ID"] == loaded.ok("images", "-q", "repo:a").strip()


def test_inspect_prints_null_where_docker_has_nil(loaded: Cli) -> None:
    [document] = json.loads(loaded.ok("inspect", "repo:a"))
    config = document["Config"]
    # no labels, volumes, ports, entrypoint or onbuild in this image: Go's nil
    for key in ("Labels", "Volumes", "ExposedPorts", "Entrypoint", "OnBuild", "Shell"):
        assert config[key] is None, key
    assert document["RepoTags"] == ["repo:a"]  # docker's lists of names stay lists
    assert loaded.ok("inspect", "--format", "{{json .Config.Labels}}", "repo:a") == "null\n"
    [labelled] = json.loads(loaded.ok("inspect", "labelled:1"))
    assert labelled["Config"]["Labels"] == {"note": "<a&b>"}


def test_df_active_and_reclaimable_match_prune(loaded: Cli, tmp_path: Path) -> None:
    # a name that moves to another image leaves the first one dangling: not active
    moved = tmp_path / "moved.tar"
    moved.write_bytes(docker_archive(_image("repo:a", 9)))
    old_id = json.loads(loaded.ok("inspect", "repo:a"))[0]["Id"]
    out = loaded.ok("load", "-i", str(moved)).splitlines()
    assert out == [
        f"The image repo:a already exists, renaming the old one with ID {old_id} to empty string",
        "Loaded image: repo:a",
    ]
    summary = loaded.ok("df", "--format", "{{json .}}")
    row = json.loads(summary)
    assert (row["Type"], row["TotalCount"], row["Active"]) == ("Images", "5", "4")
    assert row["Reclaimable"].endswith("(100%)")
    would = loaded.ok("prune", "-a", "--dry-run").splitlines()[-1]
    assert would == f"Total reclaimable space: {row['Reclaimable'].split()[0]}"
    table = loaded.ok("df").splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert table[1].split()[:3] == ["Images", "5", "4"]
    assert loaded.ok("df", "--format", "{{.Type}}: {{.Active}}/{{.TotalCount}}") == "Images: 4/5\n"
    dangling = loaded.ok("prune", "-f").splitlines()
    assert f"deleted: {old_id}" in dangling
    assert json.loads(loaded.ok("df", "--format", "json"))["Active"] == "4"
    verbose = loaded.ok("df", "-v").splitlines()
    assert verbose[2].split("  ")[0] == "REPOSITORY"
    assert "CONTENT SIZE" in verbose[2]
    assert "CONTAINERS" not in verbose[2]
    rows = loaded.ok("df", "-v", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert sorted(rows) == ["labelled:1", "other/repo:c", "repo:a", "repo:b"]


def test_the_prune_all_prompt_talks_about_images_only(loaded: Cli) -> None:
    result = loaded("prune", "-a", input="n\n")
    assert result.returncode == 1
    assert "container" not in result.stdout
    assert result.stdout.startswith("WARNING! This will remove all images, tagged or not")
    assert result.stderr == "image prune has been cancelled\n"


def test_history_human_false_prints_bytes_and_rfc3339(loaded: Cli) -> None:
    human = loaded.ok("history", "-H", "--format", "{{.Size}}|{{.CreatedSince}}", "repo:b")
    raw = loaded.ok("history", "--human=false", "--format", "{{.Size}}|{{.CreatedSince}}", "repo:b")
    size, created = raw.splitlines()[0].split("|")
    assert re.fullmatch(r"\d+", size)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", created)
    shown_size, since = human.splitlines()[0].split("|")
    assert re.fullmatch(r"[\d.]+[kMG]?B", shown_size)
    assert since.endswith(" ago")
    refused = loaded("history", "--human=perhaps", "repo:b")
    assert refused.returncode == 2


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("images", ["uncompressed", "build time", "not when it was"]),
        ("prune", ["stored here", "not their build time"]),
        ("df", ["ACTIVE", "prune -a", "CONTENT SIZE", "compressed"]),
        ("history", ["--human=false", "RFC 3339"]),
    ],
)
def test_help_defines_the_columns_and_until(cli: Cli, command: str, words: list[str]) -> None:
    text = " ".join(cli.ok(command, "--help").split())
    for word in words:
        assert word in text, word


def test_images_tree_shows_an_index_and_its_platforms(cli: Cli, published: Published) -> None:
    name = published.ref("umoci/multi:1")
    cli.ok("pull", "--platform", "linux/arm64", name)
    image_id = cli.ok("images", "-q", name).strip()
    lines = [line.rstrip() for line in cli.ok("images", "--tree").splitlines()]
    assert lines[0].split() == ["IMAGE", "ID", "SIZE", "PLATFORMS"]
    head = lines[1].split()
    assert head[0] == name
    assert " ".join(head[2:]) == "1 of 2 stored"
    child = lines[2].split()
    assert child[:3] == ["└─", "linux/arm64", image_id]
    assert len(lines) == 3
    everything = cli.ok("images", "--tree", "-a").splitlines()
    assert any(line.startswith("├─ linux/amd64") and "not stored" in line for line in everything)


def test_an_up_to_date_pull_shows_no_layer_lines() -> None:
    # what a pull sends when every layer is stored: docker prints none of it
    out = io.StringIO()
    with ProgressView(out, terminal=False, hide_present=True) as view:
        view.show(Progress(Phase.RESOLVING, "Pulling from x", subject="1"))
        for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            view.show(Progress(Phase.WAITING, "Pulling fs layer", subject=layer))
        for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            view.show(Progress(Phase.ALREADY_EXISTS, "Already exists", subject=layer))
        view.show(Progress(Phase.SUMMARY, "Digest: sha256:1"))
    assert out.getvalue() == "1: Pulling from x\nDigest: sha256:1\n"


def test_a_partial_pull_says_already_exists_without_pulling_it() -> None:
    out = io.StringIO()
    with ProgressView(out, terminal=False, hide_present=True) as view:
        for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            view.show(Progress(Phase.WAITING, "Pulling fs layer", subject=layer))
        view.show(Progress(Phase.ALREADY_EXISTS, "Already exists", subject="aaaaaaaaaaaa"))
        view.show(Progress(Phase.DOWNLOADING, "Downloading", subject="bbbbbbbbbbbb", total=9))
        view.show(Progress(Phase.COMPLETE, "Pull complete", subject="bbbbbbbbbbbb"))
        view.show(Progress(Phase.SUMMARY, "Digest: sha256:1"))
    assert out.getvalue().splitlines() == [
        "aaaaaaaaaaaa: Already exists",
        "bbbbbbbbbbbb: Pulling fs layer",
        "bbbbbbbbbbbb: Pull complete",  # no byte counts without a terminal, as docker
        "Digest: sha256:1",
    ]


def test_terminal_output_escapes_the_servers_words_and_moves_only_the_cursor() -> None:
    out = io.StringIO()
    with ProgressView(out, terminal=True, columns=120) as view:
        view.show(
            Progress(Phase.DOWNLOADING, "Down\x1b[2J", subject="ab\x9b1m", current=5, total=10)
        )
        view.show(Progress(Phase.SUMMARY, "Status: \x1b]0;t\x07"))
    shown = out.getvalue()
    assert "ab\\x9b1m: Down\\x1b[2J [" in shown
    assert "Status: \\x1b]0;t\\x07\n" in shown
    # the only escapes are docker's own: erase line, cursor up, cursor down
    assert set(re.findall(r"\x1b\[\d*[A-Z]", shown)) <= {"\x1b[2K", "\x1b[1A", "\x1b[1B"}
    assert shown.count("\x1b") == len(re.findall(r"\x1b\[\d*[A-Z]", shown))
