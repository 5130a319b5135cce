"""TLS certificates for load balancers: parse and check PEM, derive Rancher's fields (pure).

A certificate resource holds a server certificate, its private key and, optionally, the
intermediates that chain it to a root. ``check`` reads all three as one unit and answers the
fields Rancher derived from the certificate (``CN``, ``certFingerprint``, ``expiresAt``, ...);
``bundle`` joins them into the one PEM file HAProxy loads per certificate, and
``certificate_bundle`` does so for a stored certificate, whose key is kept encrypted.

Exception tree::

    CertificateError (ValueError)   ``field`` names the part at fault: cert, key or certChain

What is checked: each part is PEM of the right kind and at most ``MAX_PEM`` characters; the
certificate is one X.509 certificate with an RSA or EC public key that has not expired; the
key is an unencrypted RSA or EC private key whose public half is the certificate's; the chain
is one or more X.509 certificates. A certificate not valid yet is accepted (one uploaded ahead
of a switch-over, or a clock a little behind the issuer's). Whether the chain signs the
certificate is not checked: HAProxy serves whatever chain it is given, and clients judge it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

if TYPE_CHECKING:
    from server.security import ServerKey
    from server.store import Record

# Rancher's maxLength for cert, key and certChain: one PEM part, just under 64 KiB.
MAX_PEM = 65535
# A stored certificate's key: encrypted with the server's key for this purpose, under this
# name in the record's data (which no field renders).
KEY_PURPOSE = "certificateKey"
KEY_DATA = "keyEncrypted"

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_CERTIFICATE = "CERTIFICATE"

# How Rancher (BouncyCastle's ``getSigAlgName``) named each signature algorithm's family;
# the hash's name goes before it: ``SHA256WITHRSA``, ``SHA384WITHECDSA``.
_FAMILIES = {
    **dict.fromkeys((SignatureAlgorithmOID.RSA_WITH_MD5, SignatureAlgorithmOID.RSA_WITH_SHA1,
                     SignatureAlgorithmOID.RSA_WITH_SHA224,
                     SignatureAlgorithmOID.RSA_WITH_SHA256,
                     SignatureAlgorithmOID.RSA_WITH_SHA384,
                     SignatureAlgorithmOID.RSA_WITH_SHA512), "RSA"),
    SignatureAlgorithmOID.RSASSA_PSS: "RSAANDMGF1",
    **dict.fromkeys((SignatureAlgorithmOID.ECDSA_WITH_SHA1,
                     SignatureAlgorithmOID.ECDSA_WITH_SHA224,
                     SignatureAlgorithmOID.ECDSA_WITH_SHA256,
                     SignatureAlgorithmOID.ECDSA_WITH_SHA384,
                     SignatureAlgorithmOID.ECDSA_WITH_SHA512), "ECDSA"),
    **dict.fromkeys((SignatureAlgorithmOID.DSA_WITH_SHA1, SignatureAlgorithmOID.DSA_WITH_SHA224,
                     SignatureAlgorithmOID.DSA_WITH_SHA256), "DSA"),
}

_UNHASHED = {SignatureAlgorithmOID.ED25519: "ED25519", SignatureAlgorithmOID.ED448: "ED448"}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CertificateError(ValueError):
    """A certificate, key or chain that cannot serve TLS; ``field`` names the part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CertificateFacts:
    """What Rancher showed about a certificate, read from the certificate alone."""

    cn: str | None
    subject_alternative_names: tuple[str, ...]
    issuer: str
    issued_at: datetime
    expires_at: datetime
    fingerprint: str
    key_size: int
    algorithm: str
    serial_number: str
    version: str

    def fields(self) -> dict[str, Any]:
        """The facts under Rancher's field names; dates as epoch milliseconds."""
        return {"CN": self.cn, "subjectAlternativeNames": list(self.subject_alternative_names),
                "issuer": self.issuer, "issuedAt": _ms(self.issued_at),
                "expiresAt": _ms(self.expires_at), "certFingerprint": self.fingerprint,
                "keySize": self.key_size, "algorithm": self.algorithm,
                "serialNumber": self.serial_number, "version": self.version}


def check(cert_pem: str, key_pem: str, chain_pem: str | None = None, *,
          now: datetime) -> CertificateFacts:
    """The facts of ``cert_pem`` once all three parts are fit to serve together at ``now``."""
    cert = parse_certificate(cert_pem)
    key = parse_key(key_pem)
    if chain_pem:
        parse_chain(chain_pem)
    if public_der(key) != public_der(cert):
        raise CertificateError("key", "the key does not match the certificate: it is the "
                               "private key of another certificate")
    facts = read_facts(cert)
    if facts.expires_at <= now:
        raise CertificateError("cert", f"the certificate expired on {_iso(facts.expires_at)}")
    return facts


def parse_certificate(text: str) -> x509.Certificate:
    """The one X.509 certificate of ``text``, with an RSA or EC public key."""
    blocks = _blocks("cert", text, "a certificate")
    if len(blocks) != 1:
        raise CertificateError("cert", f"cert holds {len(blocks)} certificates: give the "
                               "server's certificate alone, and its intermediates as certChain")
    cert = _load_certificate("cert", blocks[0])
    try:
        public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("cert", "the certificate's public key cannot be read") from None
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CertificateError("cert", "only certificates for RSA and EC keys are supported")
    return cert


def parse_chain(text: str) -> list[x509.Certificate]:
    """The certificates of a chain, in the order given."""
    return [_load_certificate("certChain", block)
            for block in _blocks("certChain", text, "a chain of certificates")]


def parse_key(text: str) -> PrivateKey:
    """The unencrypted RSA or EC private key of ``text`` (PKCS#1, SEC1 or PKCS#8)."""
    _check_size("key", text)
    found = [m for m in _BLOCK.finditer(text) if m.group(1).endswith("PRIVATE KEY")]
    if len(found) != 1:
        raise CertificateError("key", "key must be one PEM private key (-----BEGIN PRIVATE "
                               "KEY-----)" if not found else
                               f"key holds {len(found)} private keys: give one")
    block = found[0]
    if block.group(1) == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in block.group(0):
        raise CertificateError("key", "the key is encrypted with a passphrase: give it "
                               "unencrypted (openssl pkey -in key.pem)")
    try:
        key = serialization.load_pem_private_key(block.group(0).encode(), password=None)
    except TypeError:  # encrypted, in a way the PEM header did not show
        raise CertificateError("key", "the key is encrypted with a passphrase: give it "
                               "unencrypted (openssl pkey -in key.pem)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("key", "key is not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError("key", "only RSA and EC keys are supported")
    return key


def normalised_key(key: PrivateKey) -> str:
    """``key`` as unencrypted PKCS#8 PEM: the form kept (encrypted at rest) and bundled."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_der(item: PrivateKey | x509.Certificate) -> bytes:
    public = item.public_key()
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def read_facts(cert: x509.Certificate) -> CertificateFacts:
    """Rancher's derived fields, as its ``SslCertificateUtils`` read them."""
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertificateFacts(
        cn=str(names[0].value) if names else None,
        subject_alternative_names=_alternative_names(cert),
        issuer=cert.issuer.rfc4514_string(),
        issued_at=cert.not_valid_before_utc,
        expires_at=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA1()).hex(":"),  # as Rancher: an identifier only
        key_size=public.key_size if isinstance(public, rsa.RSAPublicKey) else public.curve.key_size,
        algorithm=_algorithm(cert),
        serial_number=str(cert.serial_number),
        version=str(cert.version.value + 1),  # X.509 counts from 0; Rancher showed "3"
    )


def bundle(cert_pem: str, key_pem: str, chain_pem: str | None = None) -> str:
    """One PEM for HAProxy's ``crt``: the certificate, its chain, then the key."""
    parts = [parse_certificate(cert_pem), *(parse_chain(chain_pem) if chain_pem else [])]
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in parts)
    return pem + normalised_key(parse_key(key_pem))


def certificate_bundle(record: Record, server_key: ServerKey) -> str:
    """``bundle`` for a stored certificate record, its key decrypted with ``server_key``."""
    key = server_key.decrypt(KEY_PURPOSE, record.data[KEY_DATA])
    return bundle(record.data["cert"], key, record.data.get("certChain"))


def _blocks(field: str, text: str, what: str) -> list[str]:
    """The PEM certificate blocks of ``text``; anything else in a block is refused."""
    _check_size(field, text)
    found = list(_BLOCK.finditer(text))
    if any(m.group(1).endswith("PRIVATE KEY") for m in found):
        raise CertificateError(field, f"{field} holds a private key: give the key as key "
                               "(it is kept encrypted and never shown)")
    other = sorted({m.group(1) for m in found} - {_CERTIFICATE})
    if other:
        raise CertificateError(field, f"{field} must hold PEM certificates only, not "
                               f"{', '.join(other)}")
    if not found:
        raise CertificateError(field, f"{field} is not {what} in PEM form "
                               "(-----BEGIN CERTIFICATE-----)")
    return [m.group(0) for m in found]


def _load_certificate(field: str, block: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(block.encode())
    except ValueError:
        raise CertificateError(field, f"{field} holds a PEM block that is not a readable "
                               "X.509 certificate") from None


def _check_size(field: str, text: str) -> None:
    if len(text) > MAX_PEM:
        raise CertificateError(field, f"{field} is longer than {MAX_PEM} characters")


def _alternative_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in extension.value:
        value = name.value
        if isinstance(value, str):  # DNS names, e-mail addresses, URIs
            out.append(value)
        elif isinstance(value, IPv4Address | IPv6Address):
            out.append(str(value))
        elif isinstance(value, x509.Name):
            out.append(value.rfc4514_string())
    return tuple(out)


def _algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    family = _FAMILIES.get(oid)
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if family is None or digest is None:  # Ed25519 and the like: no hash of their own
        return _UNHASHED.get(oid, oid.dotted_string)
    return f"{digest.name.upper().replace('-', '')}WITH{family}"


def _ms(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)


def _iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
