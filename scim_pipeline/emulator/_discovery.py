"""The discovery documents: /ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7643 §5-7)."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from scim2_models import Context, EnterpriseUser, Group, User

from ._profile import (
    CONTAINER_PERMISSION_SCHEMA,
    CONTAINER_SCHEMA,
    GROUP_SCHEMA,
    LIST_RESPONSE_SCHEMA,
    PRIVILEGED_DATA_SCHEMA,
    RULES,
    USER_SCHEMA,
)

SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SERVICE_PROVIDER_CONFIG_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


def _attribute(
    name: str,
    *,
    type_: str = "string",
    multi_valued: bool = False,
    required: bool = False,
    mutability: str = "readWrite",
    description: str = "",
    sub_attributes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    attribute: dict[str, Any] = {
        "name": name,
        "type": type_,
        "multiValued": multi_valued,
        "description": description or name,
        "required": required,
        "caseExact": name in ("value", "$ref"),
        "mutability": mutability,
        "returned": "default",
        "uniqueness": "none",
    }
    if sub_attributes is not None:
        attribute["subAttributes"] = sub_attributes
    return attribute


def _reference(name: str, target: str, *, required: bool = False) -> dict[str, Any]:
    return _attribute(
        name,
        type_="complex",
        required=required,
        description=f"The {target} this resource refers to.",
        sub_attributes=[
            _attribute("value", required=True, description=f"The id of the {target}."),
            _attribute("display", mutability="readOnly", description=f"The name of the {target}."),
            _attribute("$ref", type_="reference", mutability="readOnly"),
        ],
    )


_PAM_SCHEMAS: list[dict[str, Any]] = [
    {
        "schemas": [SCHEMA_SCHEMA],
        "id": CONTAINER_SCHEMA,
        "name": "Container",
        "description": "A Secret Server folder holding privileged data.",
        "attributes": [
            _attribute("name", required=True, description="The folder name."),
            _attribute("displayName"),
            _attribute("description"),
            _reference("parent", "parent container"),
        ],
    },
    {
        "schemas": [SCHEMA_SCHEMA],
        "id": CONTAINER_PERMISSION_SCHEMA,
        "name": "ContainerPermission",
        "description": "The rights of one user or group on one container.",
        "attributes": [
            _reference("container", "container", required=True),
            _reference("user", "user"),
            _reference("group", "group"),
            _attribute("rights", multi_valued=True, description='Rights such as "Owner", "Edit", "View".'),
        ],
    },
    {
        "schemas": [SCHEMA_SCHEMA],
        "id": PRIVILEGED_DATA_SCHEMA,
        "name": "PrivilegedData",
        "description": "A secret; it can be moved into or out of a container, not created.",
        "attributes": [
            _attribute("name", mutability="readOnly"),
            _attribute("type", mutability="readOnly"),
            _reference("container", "container"),
            _reference("privilegedData", "privileged data"),
            _reference("user", "user"),
            _reference("group", "group"),
        ],
    },
]


def _without(document: dict[str, Any], dropped: tuple[str, ...]) -> dict[str, Any]:
    """A schema document without the attributes (and sub-attributes) the emulator drops on write."""
    prefix = document["id"].lower() + ":"
    names: set[str] = set()
    for path in dropped:
        lowered = path.lower()
        if lowered.startswith(prefix):
            names.add(lowered[len(prefix) :])
        elif not lowered.startswith("urn:") and document["id"] in (USER_SCHEMA, GROUP_SCHEMA):
            names.add(lowered)
    attributes = []
    for attribute in document["attributes"]:
        name = attribute["name"].lower()
        if name in names:
            continue
        subs = attribute.get("subAttributes")
        kept = [sub for sub in subs or [] if f"{name}.{sub['name'].lower()}" not in names]
        attributes.append(attribute if subs is None else {**attribute, "subAttributes": kept})
    return {**document, "attributes": attributes}


@cache
def schemas(base_url: str, dropped: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every schema the emulator serves, with its ``meta``; attributes in ``dropped`` left out."""
    documents = [
        model.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        for model in (User, EnterpriseUser, Group)
    ] + _PAM_SCHEMAS
    whole = {path.lower() for path in dropped}
    return [
        {
            **_without(document, dropped),
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{document['id']}"},
        }
        for document in documents
        if document["id"].lower() not in whole
    ]


def resource_types(
    base_url: str, *, absolute_endpoints: bool = False, dropped: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The /ResourceTypes documents; ``absolute_endpoints`` announces ``/scim/v2/Users`` instead of ``/Users``
    (the base URL's path, as some servers do), and an extension in ``dropped`` is not listed."""
    documents = []
    prefix = urlsplit(base_url).path.rstrip("/") if absolute_endpoints else ""
    whole = {path.lower() for path in dropped}
    for rules in RULES.values():
        name = rules.schema.rsplit(":", 1)[-1]
        extensions = [extension for extension in rules.extensions if extension.lower() not in whole]
        documents.append(
            {
                "schemas": [RESOURCE_TYPE_SCHEMA],
                "id": name,
                "name": name,
                "endpoint": f"{prefix}/{rules.endpoint}",
                "description": f"{rules.endpoint} (operations: {', '.join(sorted(rules.operations))})",
                "schema": rules.schema,
                "schemaExtensions": [{"schema": extension, "required": False} for extension in extensions],
                "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{name}"},
            }
        )
    return documents


def service_provider_config(base_url: str, page_size_cap: int) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "documentationUri": "https://docs.delinea.com/online-help/delinea-platform/scim/",
        "patch": {"supported": True},
        # As Delinea's Cloud Connector: no /Bulk, announced without maxOperations/maxPayloadSize.
        "bulk": {"supported": False},
        "filter": {"supported": True, "maxResults": page_size_cap},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "pagination": {
            "cursor": False,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": page_size_cap,
            "maxPageSize": page_size_cap,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "OAuth 2.0 client credentials at /identity/api/oauth2/token/xpmplatform",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }


def list_response(resources: list[dict[str, Any]], *, total: int | None = None, start_index: int = 1) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": len(resources) if total is None else total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
