"""Content Credentials for the tests, made here (no network, no fixture files): a test CA and a signing certificate
that meet C2PA's certificate profile (the SDK refuses a bare self-signed certificate: it wants a CA, and a leaf with
subject and authority key identifiers, the digital-signature key usage and a critical e-mail-protection extended
key usage), and a signer of JPEG and MP4 files through the SDK's Builder."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CAPTURE_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


@dataclass
class TestChain:
    root_pem: bytes  # the CA certificate: a trust anchor for `trusted`
    chain_pem: bytes  # leaf, then CA
    key_pem: bytes  # the leaf's private key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hcsi test CA")])


def _usage(**allowed) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: allowed.get(n, False) for n in names})


def make_chain(signer_name: str = "hcsi test signer") -> TestChain:
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(days=1), "not_valid_after": now + datetime.timedelta(days=30)}
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=_name("hcsi test root"), issuer_name=_name("hcsi test root"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder(subject_name=_name(signer_name), issuer_name=ca.subject,
                                    public_key=leaf_key.public_key(), serial_number=x509.random_serial_number(),
                                    **valid)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return TestChain(ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem),
                     leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def sign(source: Path, out: Path, chain: TestChain, actions: list[dict] | None = None, generator: str = "hcsi-tests",
         ingredients: list[tuple[Path, dict]] = ()) -> Path:
    """`source` with a C2PA manifest signed by `chain`, written to `out` (JPEG or MP4, by `source`'s suffix)."""
    import c2pa

    fmt = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".mp4": "video/mp4"}[source.suffix.lower()]
    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": source.name,
                "assertions": [{"label": "c2pa.actions", "data": {"actions": actions or [
                    {"action": "c2pa.created", "digitalSourceType": CAPTURE_SOURCE}]}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain.chain_pem, chain.key_pem, None))
    builder = c2pa.Builder(manifest)
    for path, about in ingredients:
        with open(path, "rb") as f:
            builder.add_ingredient(about, "image/jpeg", f)
    with open(source, "rb") as s, open(out, "w+b") as d:
        builder.sign(signer, fmt, s, d)
    return out
