#!/usr/bin/env python3
"""Make the two fixed token vectors with an implementation independent of ours.

Generates a fresh Ed25519 key and a fresh P-256 key in memory, signs one token
with each using PyJWT, and writes only the PUBLIC JWKs (go-jose field order, no
"d") and the tokens next to this script. The private keys are never written.

Usage: python3 testdata/make-vectors.py
"""

import base64
import json
import pathlib

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

OUT = pathlib.Path(__file__).resolve().parent

IAT = 1767225600  # 2026-01-01T00:00:00Z
EXP = 4102444800  # 2100-01-01T00:00:00Z


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def eddsa_public_jwk(key: ed25519.Ed25519PrivateKey, kid: str) -> dict:
    x = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"use": "sig", "kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA", "x": b64url(x)}


def es256_public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "use": "sig",
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "alg": "ES256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def write(name: str, text: str) -> None:
    (OUT / name).write_text(text + "\n")
    print("wrote", OUT / name)


def make(name: str, alg: str, kid: str, key, public_jwk: dict, aud) -> None:
    claims = {"iss": "locate", "sub": "ndt", "aud": aud, "exp": EXP, "iat": IAT, "nbf": IAT}
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
    # Self-check with PyJWT before anything is written.
    decoded = jwt.decode(token, key.public_key(), algorithms=[alg], audience="mlab1-test0", issuer="locate")
    assert decoded == claims, decoded
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": kid, "typ": "JWT"}
    write(f"insecure-pyjwt-{name}.jwk.pub", json.dumps(public_jwk, separators=(",", ":")))
    write(f"vector-pyjwt-{name}.jwt", token)


def main() -> None:
    print(f"PyJWT {jwt.__version__}, cryptography {cryptography.__version__}")
    ed_key = ed25519.Ed25519PrivateKey.generate()
    make("eddsa", "EdDSA", "pyjwt-eddsa", ed_key, eddsa_public_jwk(ed_key, "pyjwt-eddsa"), ["other", "mlab1-test0"])
    ec_key = ec.generate_private_key(ec.SECP256R1())
    make("es256", "ES256", "pyjwt-es256", ec_key, es256_public_jwk(ec_key, "pyjwt-es256"), "mlab1-test0")


if __name__ == "__main__":
    main()
