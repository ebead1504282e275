"""Fuzz the CLI's ``--format`` template engine (imagestore.cli.template).

Input: a template source, parsed and rendered against an image as ``imagestore
inspect`` and ``images`` see it. A template error is an InvalidArgument.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore.cli.template import Struct, Template

from tests.fuzz.harness import main, text

IMAGE = Struct(
    Id="sha256:" + "a" * 64,
    RepoTags=["a:1", "b:2"],
    RepoDigests=[],
    Created="2024-01-01T00:00:00Z",
    Size=1234,
    Config=Struct(
        Env=["A=1", "B=2"],
        Labels={"com.example.version": "1.0", "x": "y"},
        Cmd=["sh", "-c", "echo hi"],
        Entrypoint=None,
    ),
    RootFS=Struct(Type="layers", Layers=["sha256:" + "b" * 64]),
    Os="linux",
    Architecture="arm64",
    Variant="",
    Count=0,
    Ratio=0.5,
    Flag=True,
)


def target(data: bytes) -> None:
    rendered = Template(text(data)).render(IMAGE)
    assert isinstance(rendered, str)


if __name__ == "__main__":
    main(target)
