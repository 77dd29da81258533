"""Key pairs for SMART Backend Services clients the clinic registers on a partner's behalf.

ES384 (ECDSA P-384 with SHA-384), one of the two algorithms SMART Backend Services requires
servers to support (SMART App Launch 2.2, "Backend Services": RS384 and ES384).
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def es384_key_pair(kid: str) -> tuple[str, dict[str, Any]]:
    """A new private key (PKCS#8 PEM) and the JWKS of its public key, with ``kid``."""
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return pem, {"keys": [jwk]}
