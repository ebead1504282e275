"""Test certificates made with openssl: a CA, a server, a client, an outsider."""

from __future__ import annotations

from pathlib import Path

from tests.tools import require, run


def _certificate(openssl: str, d: Path, name: str, extension: str) -> None:
    """A key and a certificate for ``name``, signed by the test CA."""
    key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", key, "-out", csr)  # fmt: skip
    ext.write_text(extension + "\n")
    run(openssl, "x509", "-req", "-in", csr, "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", d / f"{name}.crt")  # fmt: skip


def _authority(openssl: str, d: Path, name: str) -> None:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", key, "-out", crt)  # fmt: skip


def make_pki(d: Path) -> Path:
    """ca.crt, server.{crt,key} for 127.0.0.1, client.{crt,key}, and other.crt
    (a CA nobody trusts), all in ``d``."""
    openssl = require("openssl")
    d.mkdir(parents=True, exist_ok=True)
    _authority(openssl, d, "ca")
    _certificate(openssl, d, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _certificate(openssl, d, "client", "extendedKeyUsage=clientAuth")
    _authority(openssl, d, "other")
    return d
