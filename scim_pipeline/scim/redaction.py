"""The one scrubber for text that comes from a server (or from httpx about a server).

Every piece of server text that can reach an exception message, a log record, or anything a caller stores (SCIM
error ``detail``, OAuth ``error`` / ``error_description``, body excerpts, reason phrases, httpx's and httpcore's
log lines) goes through :func:`scrub`. It removes

- every secret registered with :func:`register_secret` (the client secret, each bearer token the client obtained),
  also in their URL-encoded forms;
- the value of any ``Authorization`` header and any ``Bearer …`` / ``Basic …`` credential;
- token-shaped strings: JWT-like ``xxx.yyy.zzz`` and long opaque base64 / hex runs.

The registry is process-wide on purpose: an error can be built, pickled and stored far from the client that knew
the token, and the scrubbing must not depend on the caller passing the right secrets along.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "register_secret", "scrub"]

REDACTED = "[redacted]"

_MIN_SECRET_LENGTH = 3
"""Shorter values are not replaced (a one-letter "secret" would blank every occurrence of that letter)."""
_REMEMBERED_SECRETS = 256
"""Tokens are refreshed for the life of a process; the oldest are forgotten once they are long expired."""

_AUTHORIZATION_VALUE = re.compile(
    r"(?i)\b((?:proxy-)?authorization)(\"?\s*[:=]\s*\"?)(?:(?:bearer|basic|digest|negotiate|token)\s+)?[^\s\",;]+"
)
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9\-._~+/]{6,}=*)")
_JWT_LIKE = re.compile(r"\b[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9+/_\-]{32,}={0,2}")
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")

_lock = threading.Lock()
_secrets: deque[str] = deque(maxlen=_REMEMBERED_SECRETS)


def register_secret(value: str | None) -> None:
    """Make :func:`scrub` remove ``value`` (and its URL-encoded forms) from every text from now on."""
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            if form not in _secrets:
                _secrets.append(form)


def _opaque(match: re.Match[str]) -> str:
    text = match.group(0)
    # A UUID (a SCIM id) or a run of one character class only (a word, a number) is not a credential.
    if _UUID.fullmatch(text) or not (re.search(r"[0-9]", text) and re.search(r"[A-Za-z]", text)):
        return text
    return REDACTED


def _credential(match: re.Match[str]) -> str:
    value = match.group(3)
    # "Bearer authentication is required" names the scheme; a credential has digits or base64 punctuation.
    if not re.search(r"[0-9+/=._~-]", value):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def scrub(text: str) -> str:
    """``text`` without secrets, credentials or token-shaped strings."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _AUTHORIZATION_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SCHEME_CREDENTIAL.sub(_credential, text)
    text = _JWT_LIKE.sub(REDACTED, text)
    return _OPAQUE_RUN.sub(_opaque, text)
