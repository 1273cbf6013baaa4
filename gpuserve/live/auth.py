"""Secrets of the live platform: client API keys and worker tokens, kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_token", "new_worker_token", "token_matches"]

WORKER_TOKEN_PREFIX = "wk_"


def hash_token(token: str) -> str:
    """Tokens and keys are stored as SHA-256 digests, never in the clear."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_worker_token() -> str:
    """A fresh worker token: 24 random bytes, URL-safe (the SDK sends it as the Authorization header)."""
    return WORKER_TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_matches(token_hash: str, token: str) -> bool:
    """Constant-time comparison of a presented token with a stored digest."""
    return secrets.compare_digest(token_hash, hash_token(token))
