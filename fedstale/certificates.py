"""TLS certificates and SuperNode keys for a Flower deployment.

Writes what Flower 1.41 expects for a secure federation:

- ``ca.crt`` / ``ca.key``: a self-signed certificate authority;
- ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the
  CA, valid for the given host names and IP addresses (its subject
  alternative names: every address SuperNodes, the ``flwr`` CLI and the
  SuperLink's own SuperExec use to reach it);
- ``supernode-<i>`` / ``supernode-<i>.pub``: one NIST P-384 key pair per
  SuperNode in OpenSSH format (what ``ssh-keygen -t ecdsa -b 384`` writes),
  the private key for ``flower-supernode --auth-supernode-private-key`` and
  the public key for ``flwr supernode register``.

``openssl`` and ``ssh-keygen`` do the same; this module needs only the
``cryptography`` package, which Flower already depends on. Fine for
prototypes and tests; production certificates come from your organisation's
CA. Command line::

    python -m fedstale.certificates certificates --host 203.0.113.5 --host superlink --supernodes 2
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
VALID_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """Paths of the files :func:`write_credentials` wrote."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    supernode_keys: tuple[tuple[Path, Path], ...]
    """(private key, public key) per SuperNode."""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedstale"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)


def make_ca(common_name: str = "fedstale CA") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _subject_alternative_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, hosts: list[str]
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A server key and a certificate for ``hosts`` signed by the CA."""
    if not hosts:
        raise ValueError("hosts: give at least one host name or IP address for the SuperLink")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_subject_alternative_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_node_keys() -> tuple[bytes, bytes]:
    """A SuperNode's P-384 key pair: (OpenSSH private key, OpenSSH public key)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    return path


def write_credentials(
    out_dir: str | Path, hosts: list[str] | None = None, supernodes: int = 0
) -> Credentials:
    """Write a CA, a SuperLink certificate and ``supernodes`` key pairs.

    The certificate is valid for ``hosts`` plus ``localhost`` and
    ``127.0.0.1``: the SuperLink's own SuperExec reaches the Runtime API on
    the loopback address.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    all_hosts = list(hosts or []) + [h for h in DEFAULT_HOSTS if h not in (hosts or [])]
    server_key, server_cert = make_server_cert(ca_key, ca_cert, all_hosts)
    pem = serialization.Encoding.PEM
    keys = []
    for index in range(supernodes):
        private, public = make_node_keys()
        keys.append(
            (
                _write(out / f"supernode-{index}", private, secret=True),
                _write(out / f"supernode-{index}.pub", public + b"\n"),
            )
        )
    return Credentials(
        ca_cert=_write(out / "ca.crt", ca_cert.public_bytes(pem)),
        ca_key=_write(out / "ca.key", _pem_key(ca_key), secret=True),
        server_cert=_write(out / "server.pem", server_cert.public_bytes(pem)),
        server_key=_write(out / "server.key", _pem_key(server_key), secret=True),
        supernode_keys=tuple(keys),
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m fedstale.certificates OUT_DIR [--host H ...] [--supernodes N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write the files to (created if missing)")
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help="a name or IP address the SuperLink is reached at (repeat; "
        f"{', '.join(DEFAULT_HOSTS)} are always added)",
    )
    parser.add_argument(
        "--supernodes", type=int, default=0, help="number of SuperNode key pairs to write"
    )
    args = parser.parse_args(argv)
    creds = write_credentials(args.out_dir, args.hosts, args.supernodes)
    print(f"wrote {creds.ca_cert}, {creds.server_cert} and {args.supernodes} SuperNode key pairs")


if __name__ == "__main__":
    main()
