"""Client key pairs and signed client assertions, as a SMART Backend Services client makes them."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class ClientKey:
    """A private key, its algorithm and kid, and the public JWKS to register."""

    private: Any
    alg: str
    kid: str

    @classmethod
    def rs384(cls, kid: str = "rsa-1") -> ClientKey:
        """A 2048-bit RSA key for RS384."""
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS384", kid)

    @classmethod
    def es384(cls, kid: str = "ec-1") -> ClientKey:
        """A P-384 key for ES384."""
        return cls(ec.generate_private_key(ec.SECP384R1()), "ES384", kid)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (one key, with kid)."""
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS384" else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algo.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return {"keys": [jwk]}

    def jwks_text(self) -> str:
        """The JWKS as JSON text."""
        return json.dumps(self.jwks())

    def assertion(
        self,
        client_id: str,
        aud: str,
        *,
        lifetime: int = 240,
        jti: str | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A signed client assertion (iss = sub = client_id)."""
        now = int(time.time())
        body = {
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "exp": now + lifetime,
            "jti": jti or uuid.uuid4().hex,
            **(claims or {}),
        }
        head = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=head)
