"""A throw-away certificate authority for the emulator's TLS (EC P-256, generated in memory)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "LeafCertificate", "system_ca_pem", "write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` whole or not at all (temp file, fsync, rename)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_PEM = serialization.Encoding.PEM


def system_ca_pem() -> bytes:
    """The system's trusted CA certificates (PEM), as OpenSSL finds them without the
    ``SSL_CERT_FILE`` override (a shell that ran an emulator's exports has one); certifi's
    bundle where the system has no CA file; empty when neither exists."""
    paths = ssl.get_default_verify_paths()
    candidates = [paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    try:
        import certifi  # brought by requests (azure-core); not a dependency of its own
    except ImportError:  # pragma: no cover - requests always brings it
        return b""
    return Path(certifi.where()).read_bytes()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class LeafCertificate:
    """A server certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def server_context(self, ca_pem: bytes) -> ssl.SSLContext:
        """Build a server-side SSL context presenting this leaf (and the CA as its chain)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # ssl only loads chains from files; write them to a private temp dir and remove it at once.
        with tempfile.TemporaryDirectory(prefix="kvemu-leaf-") as tmp:
            chain = Path(tmp) / "chain.pem"
            key = Path(tmp) / "key.pem"
            chain.write_bytes(self.cert_pem + ca_pem)
            key.write_bytes(self.key_pem)
            ctx.load_cert_chain(chain, key)
        return ctx


class CertificateAuthority:
    """A self-signed EC P-256 CA that issues leaf certificates for loopback servers.

    Generate one per test session (``CertificateAuthority.generate()``) and share it between
    emulators: clients then trust every emulator through a single CA file.
    """

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key
        self.cert_pem: bytes = cert.public_bytes(_PEM)

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self._cert.subject.rfc4514_string()!r})"

    @classmethod
    def generate(cls, common_name: str = "kvconfig emulator CA") -> CertificateAuthority:
        """Create a fresh CA valid for ten years."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        """Load a CA written by :meth:`save`."""
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file} does not hold an EC private key")
        return cls(cert, key)

    @classmethod
    def load_or_generate(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        """Reuse the CA stored at these paths, or generate and save a new one there."""
        if cert_file.exists() and key_file.exists():
            return cls.load(cert_file, key_file)
        ca = cls.generate()
        ca.save(cert_file, key_file)
        return ca

    def save(self, cert_file: Path, key_file: Path) -> None:
        """Write the key (owner-only) and the certificate (world-readable) as PEM.

        Each file is written whole or not at all (temp file, fsync, rename), key first: a kill
        at any moment leaves no torn file, and a certificate only next to its complete key.
        """
        write_atomic(key_file, _key_pem(self._key), 0o600)
        write_atomic(cert_file, self.cert_pem)

    def issue(
        self, ips: tuple[str, ...] = ("127.0.0.1",), dns: tuple[str, ...] = ("localhost",)
    ) -> LeafCertificate:
        """Issue a one-year server certificate with the given IP and DNS SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cn = dns[0] if dns else ips[0]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return LeafCertificate(cert.public_bytes(_PEM), _key_pem(key))

    def client_context(self) -> ssl.SSLContext:
        """A client-side SSL context that trusts only this CA."""
        return ssl.create_default_context(cadata=self.cert_pem.decode("ascii"))
