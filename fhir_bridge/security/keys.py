"""Key pairs for SMART Backend Services: a private key (PEM) and its public JWKS.

One pair serves both directions the bridge uses: a system client of the bridge keeps the
private key and is registered with the JWKS (``clients add --jwks-file``); the bridge logs in at
a partner with the private key (``partners add --key-file``) and gives the partner the JWKS.
RS384 uses a 3072-bit RSA key, ES384 a P-384 key (the algorithms SMART Backend Services
requires servers to support). The key id defaults to the key's RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ALGORITHMS = ("RS384", "ES384")
RSA_BITS = 3072


@dataclass(frozen=True)
class KeyPair:
    """A private key as unencrypted PKCS#8 PEM, and the public JWKS (one key)."""

    private_pem: bytes
    jwks: dict[str, Any]

    @property
    def kid(self) -> str:
        """The key id the JWKS gives the key."""
        return str(self.jwks["keys"][0]["kid"])


def generate_key_pair(alg: str, kid: str | None = None) -> KeyPair:
    """A new key pair for ``alg`` (RS384 or ES384); ``kid`` defaults to the thumbprint."""
    if alg == "RS384":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    elif alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        raise ValueError(f"alg is one of {', '.join(ALGORITHMS)}")
    jwk.update({"kid": kid or thumbprint(jwk), "alg": alg, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(private_pem=pem, jwks={"keys": [jwk]})


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public RSA or EC JWK, base64url without padding."""
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
