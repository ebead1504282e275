"""What the real server's access log says about the calls it ended.

The server writes one line per RPC when its handler has finished. A client
that cancels a call moves on at once; the line says the server's side is over
too (its job stopped, its lease swept), so a test waits for it before it stops
the server or checks what was left."""

from __future__ import annotations

import re

from tests.api.conftest import Server, wait_until

_ENDED = re.compile(r"rpc method=/imagestore\.v1\.ImageStoreService/(\w+) code=(\w+)")


def ended(server: Server, method: str) -> list[str]:
    """The status code of each call of ``method`` the server has finished, in order."""
    found = (_ENDED.search(line) for line in list(server.stderr_lines))
    return [m[2] for m in found if m is not None and m[1] == method]


def wait_for_failed_ends(server: Server, method: str, count: int) -> None:
    """Wait until the server has finished ``count`` calls of ``method`` that did
    not succeed (cancelled by the client, or past their deadline)."""
    wait_until(lambda: sum(code != "OK" for code in ended(server, method)) >= count, timeout=60)
