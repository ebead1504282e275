"""JSON from outside the process: registries, archives, credential helpers.

``json.loads`` raises RecursionError, not ValueError, on arrays or objects nested
deeper than the interpreter's stack allows (``[`` a hundred thousand times fits
in a 4 MiB manifest): a caller that catches ValueError for "not JSON" would let
it escape as an internal error. :func:`loads` makes it a ValueError like any
other malformed text.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: bytes | str) -> Any:
    """``json.loads``; text nested too deeply to parse raises ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None
