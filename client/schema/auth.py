"""The HELLO password hash both sides compute (Faktory's scheme)."""

import hashlib


def password_hash(password: str, salt: str, iterations: int) -> str:
    """sha256(password + salt), then sha256 of the digest, `iterations` applications in all."""
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
