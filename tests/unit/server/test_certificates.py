"""Reading and checking certificate, key and chain PEM (server/certificates.py)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from server.certificates import (
    MAX_PEM,
    CertificateError,
    bundle,
    check,
    normalised_key,
    parse_chain,
    parse_key,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@functools.cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(key: Key, *, cn: str | None = "www.example.com",
              sans: list[x509.GeneralName] | None = None,
              not_before: datetime = NOW - timedelta(days=1),
              not_after: datetime = NOW + timedelta(days=90),
              issuer: tuple[x509.Name, Key] | None = None, serial: int = 4242) -> str:
    """A PEM certificate for ``key``, self-signed unless ``issuer`` (name, key) signs it."""
    subject = name(cn) if cn else x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                                "Example")])
    issuer_name, signer = issuer or (subject, key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_after))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    digest = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signer, digest)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: Key, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
            password: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def test_an_rsa_certificate_shows_the_fields_rancher_derived() -> None:
    cert = make_cert(rsa_key(), sans=[x509.DNSName("www.example.com"),
                                      x509.DNSName("example.com"),
                                      x509.IPAddress(ip_address("10.0.0.1"))])
    facts = check(cert, key_pem(rsa_key(), serialization.PrivateFormat.TraditionalOpenSSL),
                  now=NOW)
    assert facts.cn == "www.example.com"
    assert facts.subject_alternative_names == ("www.example.com", "example.com", "10.0.0.1")
    assert facts.issuer == "CN=www.example.com,O=Example,C=US"  # most specific first
    assert facts.key_size == 2048
    assert facts.algorithm == "SHA256WITHRSA"
    assert facts.serial_number == "4242" and facts.version == "3"
    assert facts.issued_at == NOW - timedelta(days=1)
    assert facts.expires_at == NOW + timedelta(days=90)
    parsed = x509.load_pem_x509_certificate(cert.encode())
    assert facts.fingerprint == parsed.fingerprint(hashes.SHA1()).hex(":")
    assert len(facts.fingerprint) == 59 and facts.fingerprint == facts.fingerprint.lower()
    fields = facts.fields()
    assert fields["CN"] == "www.example.com" and fields["certFingerprint"] == facts.fingerprint
    assert fields["expiresAt"] == int((NOW + timedelta(days=90)).timestamp() * 1000)
    assert fields["subjectAlternativeNames"] == ["www.example.com", "example.com", "10.0.0.1"]


def test_an_ec_p256_certificate_and_key_in_sec1_form_are_accepted() -> None:
    cert = make_cert(ec_key())
    facts = check(cert, key_pem(ec_key(), serialization.PrivateFormat.TraditionalOpenSSL),
                  now=NOW)
    assert facts.key_size == 256 and facts.algorithm == "SHA256WITHECDSA"
    # openssl ecparam -genkey writes the curve's parameters before the key.
    with_params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    assert check(cert, with_params + key_pem(ec_key()), now=NOW) == facts


def test_a_certificate_without_a_common_name_or_sans_shows_none_and_an_empty_list() -> None:
    facts = check(make_cert(ec_key(), cn=None), key_pem(ec_key()), now=NOW)
    assert facts.cn is None and facts.subject_alternative_names == ()


def test_a_chain_of_pem_certificates_is_accepted_and_bundled_in_order() -> None:
    root_name, intermediate_name = name("Example Root"), name("Example Intermediate")
    intermediate = make_cert(ec_key(1), cn="Example Intermediate",
                             issuer=(root_name, rsa_key(1)))
    leaf = make_cert(rsa_key(), issuer=(intermediate_name, ec_key(1)))
    chain = intermediate + make_cert(rsa_key(1), cn="Example Root")
    facts = check(leaf, key_pem(rsa_key()), chain, now=NOW)
    assert facts.issuer == "CN=Example Intermediate,O=Example,C=US"
    assert facts.algorithm == "SHA256WITHECDSA"  # the issuer's signature, not the key's type
    assert len(parse_chain(chain)) == 2
    pem = bundle(leaf, key_pem(rsa_key(), serialization.PrivateFormat.TraditionalOpenSSL),
                 chain)
    blocks = x509.load_pem_x509_certificates(pem.encode())
    assert [c.subject.rfc4514_string() for c in blocks] == [
        "CN=www.example.com,O=Example,C=US", "CN=Example Intermediate,O=Example,C=US",
        "CN=Example Root,O=Example,C=US"]
    assert pem.endswith(normalised_key(rsa_key()))
    assert pem.count("-----BEGIN PRIVATE KEY-----") == 1


@pytest.mark.parametrize("text", ["", "not a certificate", "-----BEGIN CERTIFICATE-----\n"
                                  "bm90IGRlcg==\n-----END CERTIFICATE-----\n"])
def test_a_malformed_certificate_names_cert(text: str) -> None:
    with pytest.raises(CertificateError) as error:
        check(text, key_pem(rsa_key()), now=NOW)
    assert error.value.field == "cert"


def test_two_certificates_in_cert_point_at_cert_chain() -> None:
    two = make_cert(rsa_key()) + make_cert(rsa_key(1))
    with pytest.raises(CertificateError, match="certChain") as error:
        check(two, key_pem(rsa_key()), now=NOW)
    assert error.value.field == "cert"


def test_a_key_pasted_into_cert_or_the_chain_is_refused_not_stored() -> None:
    cert, key = make_cert(rsa_key()), key_pem(rsa_key())
    cases = [(cert + key, None, "cert"), (cert, make_cert(rsa_key(1)) + key, "certChain")]
    for given, chain, where in cases:
        with pytest.raises(CertificateError, match="private key") as error:
            check(given, key, chain, now=NOW)
        assert error.value.field == where


@pytest.mark.parametrize("text", ["", "garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                  "-----END PRIVATE KEY-----\n"])
def test_a_malformed_key_names_key(text: str) -> None:
    with pytest.raises(CertificateError) as error:
        check(make_cert(rsa_key()), text, now=NOW)
    assert error.value.field == "key"


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8,
                                 serialization.PrivateFormat.TraditionalOpenSSL])
def test_an_encrypted_key_names_key_and_asks_for_it_unencrypted(
        fmt: serialization.PrivateFormat) -> None:
    encrypted = key_pem(rsa_key(), fmt, password=b"hunter2")
    with pytest.raises(CertificateError, match="passphrase") as error:
        check(make_cert(rsa_key()), encrypted, now=NOW)
    assert error.value.field == "key"


def test_a_key_of_another_certificate_is_refused_as_not_matching() -> None:
    for other in (rsa_key(1), ec_key()):
        with pytest.raises(CertificateError, match="does not match") as error:
            check(make_cert(rsa_key()), key_pem(other), now=NOW)
        assert error.value.field == "key"


def test_an_expired_certificate_names_cert_and_when_it_expired() -> None:
    expired = make_cert(rsa_key(), not_before=NOW - timedelta(days=400),
                        not_after=datetime(2026, 5, 1, 12, tzinfo=UTC))
    with pytest.raises(CertificateError, match="expired on 2026-05-01T12:00:00Z") as error:
        check(expired, key_pem(rsa_key()), now=NOW)
    assert error.value.field == "cert"


def test_a_certificate_not_valid_yet_is_accepted() -> None:
    later = make_cert(rsa_key(), not_before=NOW + timedelta(days=7),
                      not_after=NOW + timedelta(days=97))
    assert check(later, key_pem(rsa_key()), now=NOW).issued_at == NOW + timedelta(days=7)


@pytest.mark.parametrize("chain", ["garbage", "-----BEGIN CERTIFICATE-----\nbm8=\n"
                                   "-----END CERTIFICATE-----\n",
                                   "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_a_chain_that_is_not_pem_certificates_names_cert_chain(chain: str) -> None:
    with pytest.raises(CertificateError) as error:
        check(make_cert(rsa_key()), key_pem(rsa_key()), chain, now=NOW)
    assert error.value.field == "certChain"


def test_oversized_parts_are_refused_before_parsing() -> None:
    padding = "x" * MAX_PEM
    cases = [(make_cert(rsa_key()) + padding, key_pem(rsa_key()), None, "cert"),
             (make_cert(rsa_key()), key_pem(rsa_key()) + padding, None, "key"),
             (make_cert(rsa_key()), key_pem(rsa_key()), make_cert(rsa_key(1)) + padding,
              "certChain")]
    for cert, key, chain, field in cases:
        with pytest.raises(CertificateError, match="longer than") as error:
            check(cert, key, chain, now=NOW)
        assert error.value.field == field


def test_keys_other_than_rsa_and_ec_are_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(CertificateError, match="RSA and EC") as error:
        check(make_cert(other), key_pem(other), now=NOW)
    assert error.value.field == "cert"
    with pytest.raises(CertificateError, match="RSA and EC") as error:
        parse_key(key_pem(other))
    assert error.value.field == "key"


def test_the_stored_key_form_is_unencrypted_pkcs8_whatever_was_given() -> None:
    given = key_pem(rsa_key(), serialization.PrivateFormat.TraditionalOpenSSL)
    assert given.startswith("-----BEGIN RSA PRIVATE KEY-----")
    stored = normalised_key(parse_key(given))
    assert stored.startswith("-----BEGIN PRIVATE KEY-----")
    assert normalised_key(parse_key(stored)) == stored
