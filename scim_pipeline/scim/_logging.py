"""Keep roster values and secrets out of the log records that libraries write on our behalf.

httpx logs every request at INFO as ``HTTP Request: GET https://…/Users?filter=userName eq "…" "HTTP/1.1 400
<reason phrase>"``: the query holds user names (personal data) and the reason phrase is server text. httpcore logs
at DEBUG what it sends and receives, response headers included, which a hostile server can fill with the token it
was sent. A filter on each of those loggers replaces query strings with ``?…`` and passes the rest of the record's
text through the scrubber. (A filter on a parent logger does not see its children's records, hence the list.)
"""

from __future__ import annotations

import logging

import httpx

from .redaction import scrub

__all__ = ["RETRY_LOGGER", "install_library_log_redaction", "redact_url"]

RETRY_LOGGER = "scim_pipeline.scim.retries"
"""The logger of retry decisions (INFO): the CLI can silence it without silencing the rest."""

_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "hpack",
)


def redact_url(url: httpx.URL | str) -> str:
    """The URL without its query string (``?…`` marks that one was there)."""
    parsed = httpx.URL(str(url))
    text = str(parsed.copy_with(query=None))
    return f"{text}?…" if parsed.query else text


class RedactLibraryRecords(logging.Filter):
    """Rewrite a library's record: URLs without query strings, every other text scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = ()
        return True


def install_library_log_redaction() -> None:
    """Install :class:`RedactLibraryRecords` on httpx's and httpcore's loggers (once each)."""
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactLibraryRecords) for f in library_logger.filters):
            library_logger.addFilter(RedactLibraryRecords())
