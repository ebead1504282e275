"""Where a client connects and how: the target, TLS and token, from explicit
arguments first, then the ``IMAGESTORE_*`` variables the CLI honours too.

Both clients (blocking and asyncio) and the ``imagestore`` CLI resolve their
settings here, so a variable means the same thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

# grpc, pathlib and the errors are imported where used: the CLI reads
# DEFAULT_TARGET for its help without them
if TYPE_CHECKING:
    from pathlib import Path

    import grpc

#: ``grpc`` or ``grpc.aio``: where a client's channels come from
ChannelKind = ModuleType

#: the server when neither an argument nor IMAGESTORE_HOST names one
DEFAULT_TARGET = "127.0.0.1:50051"
#: gRPC's message limit for both directions: above the server's 8 MiB, so a
#: whole answer always fits
MAX_MESSAGE = 16 << 20

ENV_HOST = "IMAGESTORE_HOST"  # host:port, unix:///path (a tcp:// prefix is dropped)
ENV_TLS = "IMAGESTORE_TLS"  # 1/true/yes: TLS with the system CAs
ENV_TLS_CA = "IMAGESTORE_TLS_CA"  # a CA to trust (PEM); implies TLS
ENV_TLS_CERT = "IMAGESTORE_TLS_CERT"  # client certificate for mutual TLS; implies TLS
ENV_TLS_KEY = "IMAGESTORE_TLS_KEY"  # its key
ENV_TOKEN = "IMAGESTORE_TOKEN"  # the server's bearer token
ENV_TOKEN_FILE = "IMAGESTORE_TOKEN_FILE"  # a file whose first line is the token

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Settings:
    """A resolved connection: target, TLS files and bearer token.

    Build one with :meth:`resolve`; the clients do it for you from their
    constructor's arguments.
    """

    target: str = DEFAULT_TARGET
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(
        cls,
        target: str | None = None,
        *,
        tls: bool | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Explicit arguments win; what is None comes from ``environ`` (default
        ``os.environ``): IMAGESTORE_HOST (else 127.0.0.1:50051), IMAGESTORE_TLS,
        IMAGESTORE_TLS_CA, IMAGESTORE_TLS_CERT, IMAGESTORE_TLS_KEY, and the token
        from IMAGESTORE_TOKEN or the first line of IMAGESTORE_TOKEN_FILE.

        TLS is on when asked for or when any TLS file is named. Raises
        InvalidArgument for an empty token file, OSError for one that cannot be
        read."""
        env = os.environ if environ is None else environ
        chosen = target or env.get(ENV_HOST) or DEFAULT_TARGET
        ca = ca_file or env.get(ENV_TLS_CA) or None
        cert = cert_file or env.get(ENV_TLS_CERT) or None
        key = key_file or env.get(ENV_TLS_KEY) or None
        wanted = tls if tls is not None else env.get(ENV_TLS, "").strip().lower() in _TRUE
        if token is None and token_file is None:
            token = env.get(ENV_TOKEN) or None
            token_file = None if token else env.get(ENV_TOKEN_FILE) or None
        if token is None and token_file is not None:
            token = read_token(token_file)
        return cls(
            target=chosen.removeprefix("tcp://"),
            tls=bool(wanted or ca or cert or key),
            ca_file=_path(ca),
            cert_file=_path(cert),
            key_file=_path(key),
            token=token or None,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel's TLS credentials (None: plaintext); the files are read now."""
        if not self.tls:
            return None
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def channel(self, kind: ChannelKind) -> Any:
        """A channel to the target from ``kind`` (the ``grpc`` module, or
        ``grpc.aio``: both open channels with the same calls), TLS or not."""
        credentials = self.credentials()
        if credentials is None:
            return kind.insecure_channel(self.target, options=channel_options())
        return kind.secure_channel(self.target, credentials, options=channel_options())

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call carries: the bearer token, when there is one."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def channel_options() -> list[tuple[str, int | str]]:
    """The options both clients open their channel with. Calls go round the
    target's addresses (``ipv4:10.0.0.1:50051,10.0.0.2:50051``, or a DNS name
    with several): every replica of a scaled-out service answers alike."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.lb_policy_name", "round_robin"),
    ]


def read_token(path: str | Path) -> str:
    """The first line of a token file, stripped; InvalidArgument when empty."""
    from pathlib import Path

    lines = Path(path).read_text().strip().splitlines()
    if not lines or not lines[0].strip():
        from imagestore import errors

        raise errors.InvalidArgument(f"the token file {path} is empty")
    return lines[0].strip()


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _path(value: str | Path | None) -> Path | None:
    if not value:
        return None
    from pathlib import Path

    return Path(value)
