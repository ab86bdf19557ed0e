# -*- test-case-name: tests.integration.test_etcd_supervised -*-
"""The cluster certificate and the etcd certificates each member issues itself with it.

etcd (Go) checks its peers' certificates against a trusted CA and their IP SANs against
the address it dialled, and wants both server and client key usage. One self-signed
certificate shared by every member can't name every member's address, so the cluster
certificate is a CA (self-signed, both usages) and each member signs, with the cluster
key, a certificate for its own etcd naming its own addresses. Peer and client TLS of
every etcd trust exactly the cluster certificate.

Run as `python -m lxdtx.cluster.pki`: the daemon loads the crypto libraries only in
child processes (see lxdtx.tls.ensure_keypair).
"""

import datetime
import ipaddress
import os
import sys


def _write_key(path, key):
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _builder(subject, issuer, public_key, days):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
    )


def _name(common_name):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lxdtx"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_cluster_ca(cert_path, key_path):
    """A new cluster certificate (a CA that signs only member certificates) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    name = _name("lxdtx cluster")
    cert = (
        _builder(name, name, key.public_key(), 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    _write_key(key_path, key)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def issue_member_cert(ca_cert_path, ca_key_path, cert_path, key_path, member, addresses):
    """A certificate for member `member`'s etcd, valid for `addresses` (IPs or names) and
    loopback, signed by the cluster key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with open(ca_cert_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    sans, seen = [], set()
    for address in [*addresses, "127.0.0.1", "::1", "localhost"]:
        if address in seen:
            continue
        seen.add(address)
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            sans.append(x509.DNSName(address))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        _builder(_name(member), ca.subject, key.public_key(), 3650)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_key(key_path, key)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


async def ensure_cluster_ca(cert_path, key_path):
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        from lxdtx.asyncutil import run

        await run([sys.executable, "-m", "lxdtx.cluster.pki", "ca", cert_path, key_path])


async def ensure_member_cert(ca_cert_path, ca_key_path, cert_path, key_path, member, addresses):
    from lxdtx.asyncutil import run

    await run([sys.executable, "-m", "lxdtx.cluster.pki", "member", ca_cert_path, ca_key_path,
               cert_path, key_path, member, *addresses])


if __name__ == "__main__":
    if sys.argv[1] == "ca":
        generate_cluster_ca(*sys.argv[2:4])
    else:
        ca_cert, ca_key, cert, key, member = sys.argv[2:7]
        issue_member_cert(ca_cert, ca_key, cert, key, member, sys.argv[7:])
