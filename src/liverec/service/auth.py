"""API keys with roles: read < write < admin. Only SHA-256 hashes are stored.

Keys are 32 random bytes (``lr_`` + urlsafe base64), so a fast hash is safe: there is
no dictionary to attack, and a leaked table yields no usable key.

Examples
--------
>>> key = new_key()
>>> key.startswith("lr_") and len(hash_key(key)) == 64
True
>>> allows("admin", "write"), allows("read", "write")
(True, False)
"""

from __future__ import annotations

import hashlib
import secrets

ROLES = ("read", "write", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
HEADER = "X-API-Key"


def new_key() -> str:
    """A fresh random API key (shown once; store only its hash)."""
    return "lr_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key, the form it is stored and looked up in."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header value, if any.

    >>> bearer_token("Bearer lr_abc"), bearer_token("Basic x")
    ('lr_abc', None)
    """
    return authorization[7:].strip() or None if authorization.lower().startswith("bearer ") else None


def allows(have: str, need: str) -> bool:
    """Whether a key with role ``have`` may call an endpoint needing ``need``."""
    return _RANK.get(have, -1) >= _RANK[need]
