"""What a service provider announces: /ServiceProviderConfig, /ResourceTypes and /Schemas.

All three are optional in practice and odd in the wild (``bulk.supported: false`` without
``maxOperations``, missing blocks, a bare list of resource types, string booleans). Nothing here
raises on an odd shape: unknown stays ``None``, and a missing value never means "no limit".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ScimHTTPError, ScimTransportError

if TYPE_CHECKING:
    from .client import ScimClient

__all__ = ["ServerCapabilities", "discover", "endpoint_name", "parse_capabilities"]


@dataclass
class ServerCapabilities:
    """A lenient summary of the discovery endpoints; ``None`` means not announced."""

    service_provider_config_served: bool = False
    resource_types_served: bool = False
    schemas_served: bool = False
    patch: bool | None = None
    bulk: bool | None = None
    bulk_max_operations: int | None = None
    filter: bool | None = None
    filter_max_results: int | None = None
    etag: bool | None = None
    sort: bool | None = None
    change_password: bool | None = None
    pagination: dict[str, Any] | None = None
    authentication_schemes: list[str] = field(default_factory=list)
    resource_types: dict[str, str] = field(default_factory=dict)
    """Served resource types: endpoint name under the base URL (e.g. ``"Users"``) → resource type name."""
    resource_type_documents: list[dict[str, Any]] = field(default_factory=list)
    """The /ResourceTypes entries, each with its ``endpoint`` normalized to the endpoint name."""
    schema_documents: list[dict[str, Any]] = field(default_factory=list)
    """The /Schemas documents as served."""
    schemas: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def serves(self, endpoint_name: str) -> bool | None:
        """Whether the server lists ``endpoint_name``; ``None`` when it lists nothing."""
        if not self.resource_types_served or not self.resource_types:
            return None
        wanted = endpoint_name.strip("/").lower()
        return any(name.lower() == wanted for name in self.resource_types)

    def summary(self) -> list[tuple[str, str]]:
        """(feature, announced value) pairs for a report."""

        def word(value: bool | None) -> str:
            return "not announced" if value is None else ("yes" if value else "no")

        bulk = word(self.bulk)
        if self.bulk and self.bulk_max_operations is not None:
            bulk += f" (maxOperations {self.bulk_max_operations}; never used by this client)"
        elif self.bulk:
            bulk += " (never used by this client)"
        filtering = word(self.filter)
        if self.filter_max_results is not None:
            filtering += f" (maxResults {self.filter_max_results})"
        rows = [
            ("patch", word(self.patch)),
            ("bulk", bulk),
            ("filter", filtering),
            ("etag", word(self.etag)),
            ("sort", word(self.sort)),
        ]
        if self.pagination:
            rows.append(("pagination", ", ".join(f"{k}={v}" for k, v in sorted(self.pagination.items()))))
        if self.authentication_schemes:
            rows.append(("authentication", ", ".join(self.authentication_schemes)))
        if self.resource_types_served:
            rows.append(("resource types", ", ".join(sorted(self.resource_types)) or "none"))
        return rows


def _get(mapping: object, key: str) -> Any:
    """A case-insensitive key lookup that tolerates a non-mapping."""
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lowered:
            return value
    return None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _supported(config: object, block: str) -> bool | None:
    return _bool(_get(_get(config, block), "supported"))


def _items(body: object) -> list[Any]:
    if isinstance(body, list):
        return body
    resources = _get(body, "Resources")
    if isinstance(resources, list):
        return resources
    return [body] if isinstance(body, Mapping) and _get(body, "endpoint") else []


def endpoint_name(endpoint: str, base_url: str | None = None) -> str | None:
    """A resource type's announced endpoint as its name under the base URL: ``Users``, ``/Users``,
    ``/scim/v2/Users`` (the base URL's path included) and ``https://host/scim/v2/Users`` (same origin)
    all give ``"Users"``. ``None`` for an endpoint on another origin or outside the base URL."""
    text = endpoint.strip()
    base = urlsplit(base_url or "")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        if not base_url or (parts.scheme.lower(), parts.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
            return None
        text = parts.path
    base_path = base.path.rstrip("/")
    if text.startswith("/") and base_path and (text == base_path or text.startswith(base_path + "/")):
        text = text[len(base_path) :]
    elif parts.scheme and base_path:
        return None  # a full URL outside the base URL's path
    name = text.strip("/")
    return name or None


def parse_capabilities(
    config: Mapping[str, Any] | None,
    resource_types: object = None,
    schemas: object = None,
    *,
    base_url: str | None = None,
) -> ServerCapabilities:
    """Build :class:`ServerCapabilities` from raw discovery bodies (any of them ``None``); endpoints
    are normalized against ``base_url`` (see :func:`endpoint_name`)."""
    caps = ServerCapabilities()
    if config is not None:
        caps.service_provider_config_served = True
        caps.patch = _supported(config, "patch")
        caps.bulk = _supported(config, "bulk")
        caps.bulk_max_operations = _int(_get(_get(config, "bulk"), "maxOperations"))
        caps.filter = _supported(config, "filter")
        caps.filter_max_results = _int(_get(_get(config, "filter"), "maxResults"))
        caps.etag = _supported(config, "etag")
        caps.sort = _supported(config, "sort")
        caps.change_password = _supported(config, "changePassword")
        pagination = _get(config, "pagination")
        if isinstance(pagination, Mapping):
            caps.pagination = {str(k): v for k, v in pagination.items() if not isinstance(v, dict)}
        schemes = _get(config, "authenticationSchemes")
        if isinstance(schemes, list):
            caps.authentication_schemes = [
                str(_get(s, "type") or _get(s, "name")) for s in schemes if isinstance(s, Mapping)
            ]
    if resource_types is not None:
        caps.resource_types_served = True
        for item in _items(resource_types):
            endpoint, name = _get(item, "endpoint"), _get(item, "name")
            if not isinstance(endpoint, str) or not endpoint.strip("/"):
                continue
            normalized = endpoint_name(endpoint, base_url)
            if normalized is None:
                caps.notes.append(
                    f"/ResourceTypes: {name or 'a resource type'} is served outside the base URL; ignored"
                )
                continue
            caps.resource_types[normalized] = str(name or normalized)
            if isinstance(item, Mapping):
                caps.resource_type_documents.append({**item, "endpoint": normalized})
        if not caps.resource_types:
            caps.notes.append("/ResourceTypes lists no resource type the client can read")
    if schemas is not None:
        caps.schemas_served = True
        caps.schemas = [str(_get(s, "id")) for s in _items(schemas) if _get(s, "id")]
        caps.schema_documents = [s for s in _items(schemas) if isinstance(s, dict)]
    return caps


async def discover(client: ScimClient) -> ServerCapabilities:
    """Read the three discovery endpoints through ``client``; absent or failing ones are noted. The
    served schemas go to ``client.quirks`` (attributes the target does not define are dropped ones)."""
    bodies: dict[str, dict[str, Any] | None] = {}
    notes: list[str] = []
    for path in ("/ServiceProviderConfig", "/ResourceTypes", "/Schemas"):
        try:
            bodies[path] = await client.get_json(path)
        except (ScimHTTPError, ScimTransportError) as error:
            bodies[path] = None
            notes.append(f"{path}: {error}")
        if bodies[path] is None and not any(n.startswith(path) for n in notes):
            notes.append(f"{path}: not served")
    caps = parse_capabilities(
        bodies["/ServiceProviderConfig"],
        bodies["/ResourceTypes"],
        bodies["/Schemas"],
        base_url=client.settings.base_url,
    )
    caps.notes[:0] = notes
    if caps.schema_documents and caps.resource_type_documents:
        client.quirks.learn_schemas(caps.schema_documents, caps.resource_type_documents)
    return caps
