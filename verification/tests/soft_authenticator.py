"""A software passkey for tests: what a phone's authenticator and browser hand the server.

``SoftAuthenticator`` plays both halves of a WebAuthn ceremony with real keys (EC P-256, ES256):
``create`` answers ``navigator.credentials.create`` options with a new passkey (attestation
"none"), ``get`` answers ``navigator.credentials.get`` options with a signed assertion. The
answers are the JSON a browser's ``PublicKeyCredential.toJSON()`` gives (WebAuthn Level 3),
which is what static/js/passkey.js posts. Knobs on ``get`` make the answers a test needs to be
refused: another origin, no user verification, a chosen counter, another challenge, another
passkey.
"""

import hashlib
import json
import os
import struct
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

# Authenticator data flags (WebAuthn §6.1): user present, user verified, credential data attached.
UP, UV, AT = 0x01, 0x04, 0x40
# A software authenticator has no model to attest to: an all-zero AAGUID, as "none" permits.
AAGUID = bytes(16)


@dataclass
class SoftCredential:
    """One passkey held by the authenticator: its id, private key, owner and counter."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    sign_count: int = 0

    @property
    def id(self) -> str:
        return bytes_to_base64url(self.credential_id)

    def cose_public_key(self) -> bytes:
        """The public key as a COSE_Key map (RFC 9053): EC2 (1), ES256 (-7), P-256 (1), x, y."""
        numbers = self.private_key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )


class SoftAuthenticator:
    """A phone with a platform authenticator, in one browser on ``origin``."""

    def __init__(self, rp_id: str = "localhost", origin: str = "http://localhost:8000") -> None:
        self.rp_id = rp_id
        self.origin = origin
        self.credentials: list[SoftCredential] = []

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        # The browser writes this, not the authenticator; the signature covers its hash.
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin or self.origin},
            separators=(",", ":"),
        ).encode()

    def _auth_data(self, flags: int, sign_count: int, attested: bytes = b"") -> bytes:
        rp_id_hash = hashlib.sha256(self.rp_id.encode()).digest()
        return rp_id_hash + bytes([flags]) + struct.pack(">I", sign_count) + attested

    def create(self, options_json: dict) -> dict:
        """Make a new passkey for ``options_json`` (the server's creation options)."""
        credential = SoftCredential(
            credential_id=os.urandom(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            user_handle=base64url_to_bytes(options_json["user"]["id"]),
        )
        self.credentials.append(credential)
        attested = (
            AAGUID
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + credential.cose_public_key()
        )
        auth_data = self._auth_data(UP | UV | AT, credential.sign_count, attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options_json["challenge"], None)
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {"credProps": {"rk": True}},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options_json: dict,
        *,
        origin: str | None = None,
        user_verified: bool = True,
        sign_count: int | None = None,
        challenge: str | None = None,
        credential: SoftCredential | None = None,
    ) -> dict:
        """Answer ``options_json`` (the server's request options) with a signed assertion.

        By default: the first held passkey the request allows, its counter moved on by one, the
        fingerprint checked. ``origin``, ``user_verified``, ``sign_count``, ``challenge`` and
        ``credential`` change what a tampered, cloned or confused browser would send instead.
        """
        if credential is None:
            allowed = {item["id"] for item in options_json.get("allowCredentials", [])}
            credential = next(c for c in self.credentials if not allowed or c.id in allowed)
        credential.sign_count = credential.sign_count + 1 if sign_count is None else sign_count
        flags = UP | UV if user_verified else UP
        auth_data = self._auth_data(flags, credential.sign_count)
        client_data = self._client_data(
            "webauthn.get", challenge or options_json["challenge"], origin
        )
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = credential.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))  # DER
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
