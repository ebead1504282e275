"""systemd's readiness protocol (sd_notify(3)), written by hand.

A service of ``Type=notify`` finds a unix datagram socket in ``$NOTIFY_SOCKET``
(a path, or ``@name`` in the abstract namespace) and sends it newline-separated
``KEY=VALUE`` lines: ``READY=1`` once it serves, ``STOPPING=1`` when it begins to
shut down, ``STATUS=…`` for ``systemctl status``. Without the variable nothing is
sent. A notification is a courtesy to the supervisor: a failed send is logged
once and never stops the server.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("imagestore.server")

ENVIRONMENT_VARIABLE = "NOTIFY_SOCKET"
#: a supervisor reads promptly; a send must not hold the event loop if it does not
SEND_TIMEOUT = 1.0


class Notifier:
    """Sends state changes to the supervisor's socket, if there is one."""

    def __init__(self, address: str | None) -> None:
        self._shown = address or ""
        self._address = _socket_address(address) if address else None
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get(ENVIRONMENT_VARIABLE))

    def ready(self, address: str, *, registry: str | None = None) -> None:
        """``STATUS=serving on <address>``, and ``; registry on <address>`` when
        the registry endpoint listens (the ports bound, for ``:0``)."""
        status = f"serving on {address}" + (f"; registry on {registry}" if registry else "")
        self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="shutting down")

    def send(self, **fields: str) -> None:
        if self._address is None:
            return
        message = "".join(f"{key}={value}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
                sender.settimeout(SEND_TIMEOUT)
                sender.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s", self._shown, exc)


def _socket_address(address: str) -> str:
    """``@name`` is the abstract namespace: a leading NUL byte on the wire."""
    return "\0" + address[1:] if address.startswith("@") else address
