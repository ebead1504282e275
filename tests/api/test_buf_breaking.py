"""The frozen API: `buf breaking` (``make breaking``, part of ``make lint``) against the
committed baseline refuses a copy of protos/ with a breaking edit, naming the change,
and accepts protos/ as it is.

The edited field is chosen from the baseline itself (a plain ``string`` field of a
top-level message), so the test follows the API when the baseline is taken again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.api.conftest import PROJECT

BASELINE = PROJECT / "protos" / "baseline" / "imagestore-v1.binpb"
PROTO_FILE = "imagestore/v1/imagestore.proto"
#: the largest field number protobuf allows: no message of the API uses it
FREE_NUMBER = (1 << 29) - 1


def _buf() -> str:
    buf = PROJECT / "node_modules" / ".bin" / "buf"
    if buf.is_file():
        return str(buf)
    message = "buf is not installed (`make lint` or `npm ci` installs node_modules)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Field:
    """A plain string field of the baseline and its declaration in the proto's text."""

    message: str
    name: str
    number: int
    declaration: re.Pattern[str]
    block: tuple[int, int]

    def edited(self, text: str, replacement: str) -> str:
        """``text`` with the declaration replaced (``\\1`` is its indentation)."""
        start, end = self.block
        changed = self.declaration.sub(
            replacement.format(name=self.name, number=self.number), text[start:end]
        )
        return text[:start] + changed + text[end:]


def _proto_text(workspace: Path) -> Path:
    return workspace / "protos" / PROTO_FILE


def _message_block(text: str, message: str) -> tuple[int, int] | None:
    """Start and end offsets of the top-level ``message { … }`` block in ``text``."""
    start = re.search(rf"^message {message} \{{$", text, re.MULTILINE)
    if start is None:
        return None
    end = re.compile(r"^\}$", re.MULTILINE).search(text, start.end())
    return None if end is None else (start.start(), end.end())


def _chosen_field(text: str) -> Field:
    """The first plain string field of the baseline declared once in its message's block."""
    # A buf image is wire-compatible with a FileDescriptorSet.
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    (api,) = (file for file in image.file if file.name == PROTO_FILE)
    for message in api.message_type:
        block = _message_block(text, message.name)
        if block is None:
            continue
        for field in message.field:
            plain = (
                field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING
                and field.label == descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
                and not field.HasField("oneof_index")
            )
            declaration = re.compile(rf"^(\s+)string {field.name} = {field.number};$", re.MULTILINE)
            if plain and len(declaration.findall(text, *block)) == 1:
                return Field(message.name, field.name, field.number, declaration, block)
    pytest.fail(f"the baseline has no plain string field to edit in {PROTO_FILE}")


def _workspace(tmp_path: Path) -> Path:
    """A copy of the buf workspace: buf.yaml and protos/."""
    workspace = tmp_path / "workspace"
    shutil.copytree(PROJECT / "protos", workspace / "protos")
    shutil.copy(PROJECT / "buf.yaml", workspace / "buf.yaml")
    return workspace


def _breaking(workspace: Path) -> tuple[int, list[dict[str, object]]]:
    """``buf breaking`` as ``make breaking`` runs it: exit code and the reported changes."""
    result = subprocess.run(
        [_buf(), "breaking", "--against", str(BASELINE), "--error-format", "json"],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 100), result.stderr  # 100: breaking changes found
    changes = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, changes


def test_the_baseline_is_an_image_of_the_api() -> None:
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    (api,) = (file for file in image.file if file.name == PROTO_FILE)
    assert api.package == "imagestore.v1"
    assert [s.name for s in api.service] == ["ImageStoreService"]


def test_protos_as_they_are_pass_against_the_baseline(tmp_path: Path) -> None:
    assert _breaking(_workspace(tmp_path)) == (0, [])


@pytest.mark.parametrize(
    ("edit", "rule", "replacement"),
    [
        ("renumber", "FIELD_NO_DELETE", rf"\1string {{name}} = {FREE_NUMBER};"),
        ("remove", "FIELD_NO_DELETE", ""),
        ("change-type", "FIELD_SAME_TYPE", r"\1int64 {name} = {number};"),
        ("rename", "FIELD_SAME_NAME", r"\1string {name}_renamed = {number};"),
    ],
)
def test_a_breaking_edit_is_refused_naming_the_change(
    tmp_path: Path, edit: str, rule: str, replacement: str
) -> None:
    workspace = _workspace(tmp_path)
    proto = _proto_text(workspace)
    text = proto.read_text()
    field = _chosen_field(text)
    edited = field.edited(text, replacement)
    assert edited != text
    proto.write_text(edited)

    code, changes = _breaking(workspace)

    assert code == 100, f"{edit} of {field.message}.{field.name} was accepted"
    named = [
        change
        for change in changes
        if change["type"] == rule
        and f'"{field.message}"' in str(change["message"])
        and f'"{field.name}"' in str(change["message"])
    ]
    assert named, changes
    assert all(change["path"] == f"protos/{PROTO_FILE}" for change in changes)
