"""A throwaway TLS certificate for local fake push services.

APNs is HTTP/2 over TLS only, and Web Push services are https, so the fakes
serve TLS with a self-signed certificate for ``localhost``, ``127.0.0.1`` and
``::1``. Clients trust it through :meth:`LocalCertificate.client_context` or by
pointing ``SSL_CERT_FILE`` at :attr:`LocalCertificate.cert_file`.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class LocalCertificate:
    """A self-signed certificate (its own CA) and its key, as PEM files."""

    cert_file: str
    key_file: str

    def server_context(self, *, alpn: list[str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cert_file)

    def trust_bundle(self) -> str:
        """A CA bundle of the public roots (certifi's) plus this certificate, made
        once beside it: point ``SSL_CERT_FILE`` at it so that a process trusts this
        service without distrusting every other.
        """
        bundle = Path(self.cert_file).with_name("ca-bundle.pem")
        if not bundle.exists():
            import certifi  # requests' dependency, so always installed with flask-push

            roots = Path(certifi.where()).read_text(encoding="ascii")
            local = Path(self.cert_file).read_text(encoding="ascii")
            bundle.write_text(f"{roots}\n{local}", encoding="ascii")
        return str(bundle)


def make_local_certificate(directory: str | Path | None = None) -> LocalCertificate:
    """Make a certificate valid for a day for localhost, 127.0.0.1 and ::1, as
    ``cert.pem`` and ``key.pem`` in ``directory``; without one, in a new temporary
    folder that is the caller's to remove (the fakes remove theirs)."""
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="flask-push-tls-"))
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: a trust store that holds two of these finds a certificate's
    # issuer by name, and with one name for both it may check against the other
    # one's key ("self-signed certificate").
    serial = x509.random_serial_number()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"flask-push test service {serial % 16**12:012x}")]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        # Its own CA, so that the same file serves as the client's trust store.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return LocalCertificate(str(cert_file), str(key_file))


def temporary_certificate(owner: object, prefix: str = "flask-push-tls-") -> LocalCertificate:
    """:func:`make_local_certificate` in a new temporary folder that lives as long as
    ``owner`` (a fake push service): removed when it is collected, or at exit, so that
    a fake restarted meanwhile serves the certificate its clients trust."""
    folder = tempfile.mkdtemp(prefix=prefix)
    weakref.finalize(owner, shutil.rmtree, folder, ignore_errors=True)
    return make_local_certificate(folder)
