"""The mapping model: how roster columns become SCIM attributes, which key matches, and who is in scope.

A mapping is loaded from YAML with `load_mapping(path)`; `Mapping()` is the default mapping (docs/mapping.md describes
the format). It is pure configuration: `scim_pipeline.sync.plan.roster.build_roster` applies it to a roster.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from scim_pipeline.scim.errors import ConfigurationError

__all__ = [
    "DEFAULT_GROUP_RULES",
    "DEFAULT_USER_RULES",
    "EMAIL_PATHS",
    "ENTERPRISE_USER",
    "WORK_EMAIL",
    "AttributeRule",
    "GroupMapping",
    "Mapping",
    "MappingError",
    "MembershipMapping",
    "ScopeClause",
    "UserMapping",
    "load_mapping",
    "template_fields",
]

ENTERPRISE_USER: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
WORK_EMAIL: Final = 'emails[type eq "work"].value'
EMAIL_PATHS: Final = {"typed": WORK_EMAIL, "plain": "emails[primary eq true].value", "single": "emails.value"}
"""Where each e-mail form writes the address (``SCIM_EMAIL_FORM``, or ``email_form`` in the mapping file)."""
EmailForm = Literal["typed", "plain", "single"]

Transform = Literal["lower", "upper", "trim"]
Operator = Literal["equals", "not_equals", "in", "not_in", "is_empty", "is_not_empty", "matches"]

_MAX_YAML_NODES: Final = 100_000


class MappingError(ConfigurationError):
    """A mapping file cannot be used; the message names the file, the key and, when known, the line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def template_fields(template: str) -> list[str]:
    """The column names a template refers to, in order. Raises `ValueError` for anything but plain `{column}`.

    Only plain names are allowed: no `{0}`, no `{a.b}`/`{a[0]}` (attribute or item access), no `!r`, no `:spec`,
    so a template can never reach anything but roster values.
    """
    names: list[str] = []
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or name.isdigit():
            raise ValueError("a template field must name a column, as in {given_name}")
        if any(c in name for c in ".[]") or conversion is not None or spec:
            raise ValueError(f"template field {{{name}}} may only name a column (no '.', '[', '!' or ':')")
        names.append(name)
    return names


def template_parts(template: str) -> Iterator[tuple[str, str | None]]:
    """The template as (literal text, column or None) pairs; `template_fields` must accept it first."""
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        yield literal, name


class AttributeRule(_Strict):
    """How one SCIM attribute is computed from the roster columns of a row.

    Exactly one source: `column`, `join` (non-empty values of several columns joined by `separator`), `template`
    (`"{given_name}.{family_name}@example.com"`, empty when any column it names is empty) or `value` (a constant).
    Then each of `transform` in order (`lower`, `upper`, `trim`); an empty result is "no value", replaced by
    `default` when one is given. In YAML, a plain string is short for `{column: <string>}`.
    """

    column: str | None = None
    join: list[str] | None = Field(default=None, min_length=1)
    separator: str = " "
    template: str | None = None
    value: str | None = None
    transform: list[Transform] = Field(default_factory=list)
    default: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"column": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [k for k in ("column", "join", "template", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of column, join, template or value"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.template is not None:
            template_fields(self.template)
        return self

    @property
    def columns(self) -> list[str]:
        """The roster columns this rule reads."""
        if self.column is not None:
            return [self.column]
        if self.join is not None:
            return list(self.join)
        if self.template is not None:
            return template_fields(self.template)
        return []

    def label(self, path: str) -> str:
        """What to call the value of attribute `path` in a message: its column when it has one, else the path."""
        return self.column if self.column is not None else path


class ScopeClause(_Strict):
    """One condition of a scoping filter; an identity is in scope when every clause holds.

    Name either a roster `column` (after renaming) or a SCIM `attribute` (after mapping; `active` reads as
    `"true"`/`"false"`). Empty means no value. `equals`/`in` never hold for an empty value and `not_equals`/`not_in`
    always do. `matches` is a regular-expression search (anchor it with `^…$` for a whole-value match).
    """

    column: str | None = None
    attribute: str | None = None
    operator: Operator
    value: str | list[str] | None = None
    ignore_case: bool = False

    @model_validator(mode="after")
    def _well_formed(self) -> Self:
        if (self.column is None) == (self.attribute is None):
            raise ValueError("name exactly one of column or attribute")
        if self.operator in ("is_empty", "is_not_empty"):
            if self.value is not None:
                raise ValueError(f"{self.operator} takes no value")
        elif self.operator in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"{self.operator} needs a non-empty list of values")
        elif not isinstance(self.value, str):
            raise ValueError(f"{self.operator} needs one text value (quote numbers and booleans in YAML)")
        if self.operator == "matches":
            assert isinstance(self.value, str)
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return self

    @property
    def target(self) -> str:
        """The column or attribute the clause reads, for messages."""
        return self.column if self.column is not None else f"attribute {self.attribute}"


class _TableMapping(_Strict):
    columns: dict[str, str] = Field(
        default_factory=dict, description="Renames: source column → roster column, applied first."
    )
    attributes: dict[str, AttributeRule | None] = Field(
        default_factory=dict,
        description="SCIM attribute path → rule, merged over the defaults; null stops managing that attribute.",
    )
    scope: list[ScopeClause] = Field(default_factory=list, description="All clauses must hold to be in scope.")

    @model_validator(mode="after")
    def _distinct_renames(self) -> Self:
        targets: dict[str, str] = {}
        for source, target in self.columns.items():
            if target in targets:
                raise ValueError(f"columns {targets[target]!r} and {source!r} are both renamed to {target!r}")
            targets[target] = source
        return self


DEFAULT_USER_RULES: Final[dict[str, AttributeRule]] = {
    "userName": AttributeRule(column="user_name"),
    "externalId": AttributeRule(column="external_id"),
    "name.givenName": AttributeRule(column="given_name"),
    "name.familyName": AttributeRule(column="family_name"),
    "displayName": AttributeRule(column="display_name"),
    WORK_EMAIL: AttributeRule(column="email"),
    "active": AttributeRule(column="active"),
    "title": AttributeRule(column="title"),
    f"{ENTERPRISE_USER}:department": AttributeRule(column="department"),
    f"{ENTERPRISE_USER}:employeeNumber": AttributeRule(column="employee_number"),
    f"{ENTERPRISE_USER}:manager": AttributeRule(column="manager"),
}

DEFAULT_GROUP_RULES: Final[dict[str, AttributeRule]] = {
    "displayName": AttributeRule(column="group_name"),
    "externalId": AttributeRule(column="external_id"),
}


def _merged(
    defaults: dict[str, AttributeRule], overrides: dict[str, AttributeRule | None], required: tuple[str, ...]
) -> dict[str, AttributeRule]:
    rules = dict(defaults)
    for path, rule in overrides.items():
        if rule is None:
            if path in required:
                raise ValueError(f"attribute {path} cannot be removed")
            rules.pop(path, None)
        else:
            rules[path] = rule
    return rules


class UserMapping(_TableMapping):
    """Users: renames, attribute rules, scope, and the matching key (`userName` or `externalId`)."""

    match: Literal["userName", "externalId"] = "userName"
    email_form: EmailForm | None = Field(
        default=None,
        description='How the work e-mail is written: typed (emails[type eq "work"]), plain (value and primary, no '
        "type) or single (one address, written whole); unset: the target's SCIM_EMAIL_FORM.",
    )

    @model_validator(mode="after")
    def _rules_complete(self) -> Self:
        self.rules()
        if self.match == "externalId" and "externalId" not in self.rules():
            raise ValueError("match: externalId needs an externalId attribute")
        return self

    def rules(self) -> dict[str, AttributeRule]:
        """The effective rules: the defaults with this mapping's `attributes` merged over them; the work e-mail at
        the path of `email_form`."""
        rules = _merged(DEFAULT_USER_RULES, self.attributes, ("userName", "active"))
        form = self.email_form or "typed"
        if form != "typed" and WORK_EMAIL in rules:
            rules = {EMAIL_PATHS[form] if path == WORK_EMAIL else path: rule for path, rule in rules.items()}
        return rules

    def is_default(self, path: str) -> bool:
        """Whether the rule for `path` is a default one (its column may be absent: the attribute is then empty)."""
        if path in EMAIL_PATHS.values():
            return WORK_EMAIL not in self.attributes
        return path not in self.attributes


class GroupMapping(_TableMapping):
    """Groups: renames, attribute rules, scope, and the matching key (`displayName` or `externalId`)."""

    match: Literal["displayName", "externalId"] = "displayName"

    @model_validator(mode="after")
    def _rules_complete(self) -> Self:
        self.rules()
        if self.match == "externalId" and "externalId" not in self.rules():
            raise ValueError("match: externalId needs an externalId attribute")
        return self

    def rules(self) -> dict[str, AttributeRule]:
        """The effective rules: the defaults with this mapping's `attributes` merged over them."""
        return _merged(DEFAULT_GROUP_RULES, self.attributes, ("displayName",))

    def is_default(self, path: str) -> bool:
        """Whether the rule for `path` is a default one (its column may be absent: the attribute is then empty)."""
        return path not in self.attributes


class MembershipMapping(_Strict):
    """Memberships: only renames onto `group_name` and `user_name`."""

    columns: dict[str, str] = Field(default_factory=dict)


class Mapping(_Strict):
    """A whole mapping. `Mapping()` is the default: the default columns onto their SCIM attributes, match on
    `userName` (users) and `displayName` (groups), everyone in scope."""

    users: UserMapping = Field(default_factory=UserMapping)
    groups: GroupMapping = Field(default_factory=GroupMapping)
    memberships: MembershipMapping = Field(default_factory=MembershipMapping)
    max_value_length: int = Field(
        default=1024, ge=1, description="Longer values are rejected (SCIM targets truncate or refuse them)."
    )

    _source: str = PrivateAttr(default="the default mapping")

    @property
    def source(self) -> str:
        """Where the mapping came from, for messages (a file path, or "the default mapping")."""
        return self._source

    def with_email_form(self, form: EmailForm) -> Mapping:
        """This mapping with the target's e-mail form (``SCIM_EMAIL_FORM``) where the file chose none."""
        if self.users.email_form is not None:
            return self
        copy = self.model_copy(update={"users": self.users.model_copy(update={"email_form": form})})
        copy._source = self._source
        return copy


# --- loading -----------------------------------------------------------------------------------------------------


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes the document has once aliases are expanded (a guard against "billion laughs")."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def _duplicate_key(node: yaml.Node, seen: set[int]) -> tuple[str, int] | None:
    if id(node) in seen:
        return None
    seen.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in keys:
                    return key.value, key.start_mark.line + 1
                keys.add(key.value)
            children.append(value)
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    for child in children:
        found = _duplicate_key(child, seen)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location, as deep as it can be followed."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next((p for p in node.value if isinstance(p[0], yaml.ScalarNode) and p[0].value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]  # the key's line: where a person looks
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[")) or part in ("str", "list[str]", "AttributeRule"):
            continue  # pydantic's names for union branches, not keys of the file
        else:
            path += f".{part}" if path else part
    return path


def load_mapping(path: str | Path) -> Mapping:
    """Load a mapping from a YAML file. Raises `MappingError` naming the file, the key and the line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise MappingError(f"mapping file {path} is not UTF-8 (byte offset {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and _expanded_size(root, {}) > _MAX_YAML_NODES:
            raise MappingError(f"mapping file {path} is too large once its YAML aliases are expanded")
        duplicate = None if root is None else _duplicate_key(root, set())
        if duplicate is not None:
            raise MappingError(f"mapping file {path}, line {duplicate[1]}: the key {duplicate[0]!r} appears twice")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} that starts on line {context_mark.line + 1})"
        raise MappingError(f"mapping file {path}{where}: {problem}") from None
    except RecursionError:
        raise MappingError(f"mapping file {path} is nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {path}: expected keys such as users: and groups: at the top level")
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors()[:5]:
            loc = tuple(error["loc"])
            line = _line_of(root, loc)
            where = f", line {line}" if line is not None else ""
            key = _key_path(loc) or "(top level)"
            messages.append(f"mapping file {path}{where}: {key}: {error['msg'].removeprefix('Value error, ')}")
        more = len(exc.errors()) - 5
        if more > 0:
            messages.append(f"… and {more} more")
        raise MappingError("\n".join(messages)) from None
    mapping._source = str(path)
    return mapping
