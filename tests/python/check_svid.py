#!/usr/bin/env python3
"""Checks what trustmesh issued with code we did not write.

usage: check_svid.py SVID_DIR EXPECTED_SPIFFE_ID BUNDLE_JWKS_URL

- py-spiffe's X509Svid.load parses svid.pem/svid.key and enforces the X.509-SVID rules
  (one URI SAN, leaf not a CA, digitalSignature key usage, ...); its X509Bundle loads bundle.pem.
- The SPIFFE bundle (JWK Set) served by the operator is checked with `cryptography`: kty/crv/use,
  spiffe_sequence, the x5c certificate equals the PEM bundle's root, and x/y are its public key.
"""
import base64, json, sys, urllib.request
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import X509Bundle, X509Svid, TrustDomain

d, expected, url = sys.argv[1], sys.argv[2], sys.argv[3]
svid = X509Svid.load(f"{d}/svid.pem", f"{d}/svid.key", serialization.Encoding.PEM)
assert str(svid.spiffe_id) == expected, (str(svid.spiffe_id), expected)
td = TrustDomain(expected.split("/")[2])
bundle = X509Bundle.load(td, f"{d}/bundle.pem", serialization.Encoding.PEM)
roots = bundle.x509_authorities
assert roots, "empty bundle"
leaf = svid.leaf
assert any(leaf.issuer == r.subject for r in roots), "leaf not issued by a bundle root"

jwks = json.load(urllib.request.urlopen(url, timeout=5))
assert isinstance(jwks.get("spiffe_sequence"), int), jwks
assert jwks.get("spiffe_refresh_hint", 0) > 0, jwks
b64u = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
root_der = {r.public_bytes(serialization.Encoding.DER) for r in roots}
for k in jwks["keys"]:
    assert (k["kty"], k["crv"], k["use"]) == ("EC", "P-256", "x509-svid"), k
    der = base64.b64decode(k["x5c"][0])
    assert der in root_der, "JWKS x5c is not a root of bundle.pem"
    nums = x509.load_der_x509_certificate(der).public_key().public_numbers()
    assert int.from_bytes(b64u(k["x"]), "big") == nums.x and int.from_bytes(b64u(k["y"]), "big") == nums.y
print(f"py-spiffe: {svid.spiffe_id} ok, expires {leaf.not_valid_after_utc}; bundle.jwks {len(jwks['keys'])} key(s) ok")
