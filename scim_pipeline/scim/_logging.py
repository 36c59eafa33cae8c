"""Keep roster values out of log records that libraries write on our behalf.

httpx logs every request at INFO as ``HTTP Request: GET https://…/Users?filter=userName eq "…"``:
the query holds user names, which are personal data. A filter on the ``httpx`` logger replaces
the query string of those records with ``?…``; our own logger prints full URLs at DEBUG only.
"""

from __future__ import annotations

import logging

import httpx

__all__ = ["install_httpx_log_redaction", "redact_url"]

_HTTPX_LOGGER = "httpx"


def redact_url(url: httpx.URL | str) -> str:
    """The URL without its query string (``?…`` marks that one was there)."""
    parsed = httpx.URL(str(url))
    text = str(parsed.copy_with(query=None))
    return f"{text}?…" if parsed.query else text


class RedactQueryStrings(logging.Filter):
    """Rewrite httpx's request records so that their URLs carry no query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


def install_httpx_log_redaction() -> None:
    """Install :class:`RedactQueryStrings` on the ``httpx`` logger (once)."""
    httpx_logger = logging.getLogger(_HTTPX_LOGGER)
    if not any(isinstance(f, RedactQueryStrings) for f in httpx_logger.filters):
        httpx_logger.addFilter(RedactQueryStrings())
