"""The access file: which containers should exist, who holds which rights on each, and which existing privileged
data belongs in which container — Delinea's PAM resources as desired state (docs/access.md).

Read from YAML or CSV and validated like the roster: every row that cannot be used (an unknown group or user, an
unknown right, a duplicate) is set aside with the file, its line and why, and the rest proceeds. A row set aside
never removes anything: the permissions and placements it names are held as they are (see :attr:`AccessFile.held`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from scim_pipeline.scim.errors import ConfigurationError

__all__ = [
    "RIGHTS",
    "AccessFile",
    "DesiredContainer",
    "DesiredPermission",
    "DesiredPlacement",
    "load_access",
    "parse_access",
]

RIGHTS: tuple[str, ...] = ("Owner", "Edit", "Add Secret", "View")
"""The container rights Delinea's seed names, in their canonical spelling."""
_RIGHTS_BY_FOLD = {right.casefold(): right for right in RIGHTS}
REJECTED_COLUMNS = ("table", "row", "key", "field", "reason")
TABLE = "access"
_CONTAINER_FIELDS = frozenset({"name", "id", "permissions", "privileged_data", "__line__"})
PrincipalType = Literal["user", "group"]


@dataclass(frozen=True)
class DesiredContainer:
    """A container (a Secret Server folder), found and created by ``name``; ``scim_id`` pins it to one object."""

    name: str
    row: int
    scim_id: str | None = None

    @property
    def name_norm(self) -> str:
        return self.name.casefold()


@dataclass(frozen=True)
class DesiredPermission:
    """The rights of one group or user (its roster key) on one container."""

    container: str
    principal_type: PrincipalType
    principal: str
    rights: frozenset[str]
    row: int

    @property
    def container_norm(self) -> str:
        return self.container.casefold()

    @property
    def principal_key_norm(self) -> str:
        return self.principal.casefold()


@dataclass(frozen=True)
class DesiredPlacement:
    """Existing privileged data (by its name or SCIM id) that belongs in a container."""

    container: str
    data: str
    by: Literal["name", "id"]
    row: int

    @property
    def container_norm(self) -> str:
        return self.container.casefold()

    @property
    def data_key(self) -> str:
        """How the data is named in the state store and the audit: ``id:<id>`` or its name."""
        return f"id:{self.data}" if self.by == "id" else self.data


@dataclass
class AccessFile:
    """A validated access file. ``rejected`` has the roster's rejection columns (``table`` is ``access``)."""

    path: str
    containers: list[DesiredContainer] = field(default_factory=list)
    permissions: list[DesiredPermission] = field(default_factory=list)
    placements: list[DesiredPlacement] = field(default_factory=list)
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(REJECTED_COLUMNS)))
    held_containers: frozenset[str] = frozenset()
    """Containers (casefolded names) of a rejected row: nothing we manage in them is removed this cycle."""
    held_permissions: frozenset[tuple[str, str, str]] = frozenset()
    """(container, principal type, principal) of rejected permission rows, casefolded: kept as they are."""
    held_placements: frozenset[str] = frozenset()
    """Privileged data (its data key, casefolded) of rejected placement rows: left where it is."""

    def is_held(self, container_norm: str, principal_type: str, principal_key_norm: str) -> bool:
        return (
            container_norm in self.held_containers
            or (container_norm, principal_type, principal_key_norm) in self.held_permissions
        )


class _LineLoader(yaml.SafeLoader):
    """A safe YAML loader that remembers the line of every mapping (as ``__line__``), for rejection messages."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def load_access(path: str | Path, *, users: Iterable[str], groups: Iterable[str]) -> AccessFile:
    """Read and validate the access file at ``path`` (``.yaml``/``.yml`` or ``.csv``) against the roster's users
    (userNames) and groups (displayNames). An unreadable or malformed file raises :class:`ConfigurationError`
    naming ``SCIM_ACCESS``; bad rows are set aside in :attr:`AccessFile.rejected`."""
    location = Path(path)
    try:
        text = location.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"SCIM_ACCESS={location}: cannot read the access file ({error})") from None
    if location.suffix.lower() == ".csv":
        entries = _csv_entries(text, location)
    elif location.suffix.lower() in (".yaml", ".yml"):
        entries = _yaml_entries(text, location)
    else:
        raise ConfigurationError(f"SCIM_ACCESS={location}: the access file must be .yaml, .yml or .csv")
    return parse_access(entries, path=str(location), users=users, groups=groups)


def _yaml_entries(text: str, location: Path) -> list[dict[str, Any]]:
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigurationError(f"SCIM_ACCESS={location}: not valid YAML ({error})") from None
    if document is None:
        return []
    containers = document.get("containers") if isinstance(document, dict) else None
    if not isinstance(containers, list):
        raise ConfigurationError(f"SCIM_ACCESS={location}: the access file needs a top-level 'containers:' list")
    return containers


def _csv_entries(text: str, location: Path) -> list[dict[str, Any]]:
    """CSV rows (``container,type,name,rights``) grouped into the YAML shape, each keeping its line."""
    reader = csv.DictReader(text.splitlines())
    expected = {"container", "type", "name", "rights"}
    if reader.fieldnames is None or not expected <= {name.strip().lower() for name in reader.fieldnames}:
        raise ConfigurationError(f"SCIM_ACCESS={location}: the CSV header must be container,type,name,rights")
    containers: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for line, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        name = row.get("container", "")
        kind = row.get("type", "").lower()
        entry = containers.get(name.casefold()) if name else None
        if entry is None:
            entry = {"name": name or None, "__line__": line, "permissions": [], "privileged_data": []}
            if name:
                containers[name.casefold()] = entry
            order.append(entry)
        if kind in ("", "container"):
            continue
        if kind in ("group", "user"):
            rights = [part.strip() for part in row.get("rights", "").split(";") if part.strip()]
            entry["permissions"].append({kind: row.get("name") or None, "rights": rights, "__line__": line})
        elif kind in ("privileged_data", "privileged_data_id"):
            attribute = "id" if kind == "privileged_data_id" else "name"
            entry["privileged_data"].append({attribute: row.get("name") or None, "__line__": line})
        else:
            entry["permissions"].append({"__invalid_type__": kind, "__line__": line})
    return order


@dataclass
class _Validator:
    path: str
    users: frozenset[str]
    groups: frozenset[str]
    result: AccessFile = field(init=False)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    held_containers: set[str] = field(default_factory=set)
    held_permissions: set[tuple[str, str, str]] = field(default_factory=set)
    held_placements: set[str] = field(default_factory=set)
    container_rows: dict[str, int] = field(default_factory=dict)
    principal_rows: dict[tuple[str, str, str], int] = field(default_factory=dict)
    placement_rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.result = AccessFile(path=self.path)

    def reject(self, row: int, key: str | None, field_name: str | None, reason: str) -> None:
        self.rejections.append({"table": TABLE, "row": row, "key": key, "field": field_name, "reason": reason})

    def container(self, entry: Any, fallback_row: int) -> None:
        if not isinstance(entry, Mapping):
            self.reject(fallback_row, None, None, "a container entry must be a mapping with a name")
            return
        row = int(entry.get("__line__", fallback_row))
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            self.reject(row, None, "name", "a container needs a name (Delinea finds containers by name only)")
            return
        name = name.strip()
        scim_id = entry.get("id")
        if scim_id is not None and not isinstance(scim_id, str | int):
            self.reject(row, name, "id", "a container id must be a string")
            return
        first = self.container_rows.get(name.casefold())
        if first is not None:
            self.reject(row, name, "name", f"duplicate container {name!r} (first at line {first}); entry ignored")
            return
        self.container_rows[name.casefold()] = row
        unknown = sorted(str(k) for k in entry if k not in _CONTAINER_FIELDS)
        if unknown:
            # A misspelt "permissions:" must not read as "no permissions": the entry is held whole.
            self.reject(row, name, unknown[0], f"unknown container field(s) {', '.join(unknown)}; entry ignored")
            self.held_containers.add(name.casefold())
            return
        self.result.containers.append(
            DesiredContainer(name=name, row=row, scim_id=str(scim_id) if scim_id is not None else None)
        )
        for permission in _list(entry.get("permissions")):
            self.permission(name, permission, row)
        for placement in _list(entry.get("privileged_data")):
            self.placement(name, placement, row)

    def permission(self, container: str, entry: Any, fallback_row: int) -> None:
        if not isinstance(entry, Mapping):
            self.reject(fallback_row, container, "permissions", "a permission must name a group or a user and rights")
            self.held_containers.add(container.casefold())
            return
        row = int(entry.get("__line__", fallback_row))
        if "__invalid_type__" in entry:
            valid = "container, group, user, privileged_data, privileged_data_id"
            self.reject(row, container, "type", f"unknown row type {entry['__invalid_type__']!r}; valid: {valid}")
            self.held_containers.add(container.casefold())
            return
        named = [kind for kind in ("group", "user") if entry.get(kind) not in (None, "")]
        if len(named) != 1:
            self.reject(row, container, "group", "a permission names exactly one group or one user")
            self.held_containers.add(container.casefold())
            return
        kind: PrincipalType = "group" if named[0] == "group" else "user"
        principal = str(entry[kind]).strip()
        hold = (container.casefold(), kind, principal.casefold())
        known = self.groups if kind == "group" else self.users
        if principal.casefold() not in known:
            reason = f"unknown {kind} {principal!r}: not in the roster (or its row was set aside)"
            self.reject(row, principal, kind, reason)
            self.held_permissions.add(hold)
            return
        rights_value = entry.get("rights")
        rights_list = [rights_value] if isinstance(rights_value, str) else _list(rights_value)
        rights: set[str] = set()
        for right in rights_list:
            canonical = _RIGHTS_BY_FOLD.get(str(right).strip().casefold())
            if canonical is None:
                self.reject(row, principal, "rights", f"unknown right {right!r}; valid rights: {', '.join(RIGHTS)}")
                self.held_permissions.add(hold)
                return
            rights.add(canonical)
        if not rights:
            self.reject(row, principal, "rights", f"no rights given; valid rights: {', '.join(RIGHTS)}")
            self.held_permissions.add(hold)
            return
        first = self.principal_rows.get(hold)
        if first is not None:
            reason = f"duplicate {kind} {principal!r} on {container!r} (first at line {first})"
            self.reject(row, principal, kind, reason)
            return
        self.principal_rows[hold] = row
        self.result.permissions.append(
            DesiredPermission(
                container=container, principal_type=kind, principal=principal, rights=frozenset(rights), row=row
            )
        )

    def placement(self, container: str, entry: Any, fallback_row: int) -> None:
        row = fallback_row
        if isinstance(entry, str):
            by, data = "name", entry.strip()
        elif isinstance(entry, Mapping):
            row = int(entry.get("__line__", fallback_row))
            named = [k for k in ("name", "id") if entry.get(k) not in (None, "")]
            if len(named) != 1:
                self.reject(row, container, "privileged_data", "privileged data is named by exactly one of name or id")
                self.held_containers.add(container.casefold())
                return
            by, data = named[0], str(entry[named[0]]).strip()
        else:
            self.reject(row, container, "privileged_data", "privileged data is named by its name or id")
            self.held_containers.add(container.casefold())
            return
        placement = DesiredPlacement(container=container, data=data, by="id" if by == "id" else "name", row=row)
        first = self.placement_rows.get(placement.data_key.casefold())
        if first is not None:
            self.reject(
                row,
                data,
                "privileged_data",
                f"privileged data {data!r} is already placed at line {first}: it can be in one container only",
            )
            self.held_placements.add(placement.data_key.casefold())
            return
        self.placement_rows[placement.data_key.casefold()] = row
        self.result.placements.append(placement)

    def finish(self) -> AccessFile:
        result = self.result
        if self.rejections:
            result.rejected = pd.DataFrame(self.rejections, columns=list(REJECTED_COLUMNS))
        result.held_containers = frozenset(self.held_containers)
        result.held_permissions = frozenset(self.held_permissions)
        result.held_placements = frozenset(self.held_placements)
        return result


def parse_access(entries: Iterable[Any], *, path: str, users: Iterable[str], groups: Iterable[str]) -> AccessFile:
    """Validate container entries (the YAML shape: mappings with ``name``, ``id``, ``permissions``,
    ``privileged_data``, each optionally carrying its ``__line__``) against the roster's user and group keys."""
    validator = _Validator(
        path=path,
        users=frozenset(str(u).casefold() for u in users),
        groups=frozenset(str(g).casefold() for g in groups),
    )
    for index, entry in enumerate(entries, start=1):
        validator.container(entry, index)
    return validator.finish()


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
