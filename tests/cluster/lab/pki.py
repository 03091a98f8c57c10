"""Certificates, the service-account key and kubeconfigs for one lab.

One throw-away CA per lab signs the apiserver's serving certificate and one client certificate
per identity. Identities follow what kubeadm makes, so the apiserver's own authorizers do the
work: the admin is in system:masters, each node's kubelet is `system:node:<name>` in
`system:nodes` (Node authorizer + NodeRestriction), kube-proxy is `system:kube-proxy` (bound to
system:node-proxier by the default policy), and the controller manager and scheduler have their
`system:kube-*` users. ECDSA P-256 keys: generating them takes milliseconds.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class Identity:
    """A client certificate: file stem, CN (user) and O (groups)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class PKI:
    """Writes and reads the lab's PKI under `dir` (ca.crt, <stem>.crt/.key, sa.key/.pub)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    def create(self, *, server_ips: list[str], server_dns: list[str], clients: list[Identity]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
        ca_key = _key()
        ca_name = _name("stockade-lab-ca")
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self._write("ca", ca, ca_key)

        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in server_dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        self._leaf("apiserver", _name("kube-apiserver"), server=True, sans=sans, ca=(ca, ca_key), now=now)
        for ident in clients:
            self.add_client(ident, ca=(ca, ca_key), now=now)

        sa = _key()
        self.path("sa.key").write_bytes(_key_pem(sa))
        self.path("sa.key").chmod(0o600)
        self.path("sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def add_client(
        self,
        ident: Identity,
        *,
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        """A client certificate signed by the lab's CA (read from its files unless given): also
        for identities that join later, such as a node added to a running lab."""
        if ca is None:
            key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            ca = (x509.load_pem_x509_certificate(self.path("ca.crt").read_bytes()), key)
        when = now or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        self._leaf(ident.stem, _name(ident.user, ident.groups), server=False, sans=[], ca=ca, now=when)

    def _leaf(
        self,
        stem: str,
        subject: x509.Name,
        *,
        server: bool,
        sans: list[x509.GeneralName],
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        now: dt.datetime,
    ) -> None:
        ca_cert, ca_key = ca
        key = _key()
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        self._write(stem, b.sign(ca_key, hashes.SHA256()), key)

    def _write(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.path(f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.path(f"{stem}.key").write_bytes(_key_pem(key))
        self.path(f"{stem}.key").chmod(0o600)

    def kubeconfig(self, dest: Path, *, stem: str, user: str, server: str) -> Path:
        """A self-contained kubeconfig (certificates inlined) for identity `stem`."""

        def b64(name: str) -> str:
            return base64.b64encode(self.path(name).read_bytes()).decode()

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "stockade-lab",
                    "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(f"{stem}.crt"),
                        "client-key-data": b64(f"{stem}.key"),
                    },
                }
            ],
            "contexts": [{"name": "stockade-lab", "context": {"cluster": "stockade-lab", "user": user}}],
            "current-context": "stockade-lab",
        }
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(yaml.safe_dump(doc, sort_keys=False))
        dest.chmod(0o600)
        return dest
