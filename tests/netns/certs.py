#!/usr/bin/env python3
"""Client certificates the server's sidecar must refuse, for tests/tests/netns_mesh.rs.

usage: certs.py OUT_DIR MESH_CA_CERT MESH_CA_KEY SPIFFE_ID
writes into OUT_DIR:
  foreign.pem/.key   a leaf for SPIFFE_ID issued by a fresh P-256 CA that is not in the bundle
  expired.pem/.key   a leaf for SPIFFE_ID issued by the mesh CA, valid only in January 2020
Both leaves are otherwise proper X.509-SVIDs (one URI SAN, cA=false, digitalSignature,
serverAuth + clientAuth).
"""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out, ca_cert_path, ca_key_path, spiffe_id = sys.argv[1:5]
now = datetime.datetime.now(datetime.timezone.utc)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netns-test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def leaf(issuer_name, issuer_key, not_before, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def write(stem, cert, key):
    with open(os.path.join(out, stem + ".pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(out, stem + ".key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


os.makedirs(out, exist_ok=True)

# A CA of our own, unknown to the mesh, naming the same trust domain.
foreign_key = ec.generate_private_key(ec.SECP256R1())
foreign_name = name("foreign root")
write("foreign", *leaf(foreign_name, foreign_key, now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1)))

# The mesh's own CA, but a certificate that expired long ago.
with open(ca_cert_path, "rb") as f:
    ca_cert = x509.load_pem_x509_certificate(f.read())
with open(ca_key_path, "rb") as f:
    ca_key = serialization.load_pem_private_key(f.read(), password=None)
start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
write("expired", *leaf(ca_cert.subject, ca_key, start, start + datetime.timedelta(days=1)))
print("wrote foreign.pem/.key and expired.pem/.key")
