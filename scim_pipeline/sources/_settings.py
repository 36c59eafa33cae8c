"""Reading a source's pydantic settings model from `SCIM_<SOURCE>_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from scim_pipeline.scim.errors import ConfigurationError

__all__ = ["env_settings"]

_Model = TypeVar("_Model", bound=BaseModel)


def env_settings(
    model: type[_Model], env: Mapping[str, str], *, prefix: str, lists: frozenset[str] | set[str] = frozenset()
) -> _Model:
    """`model` from the variables named `prefix` + the field name in upper case.

    A field named in `lists` is read as `key=value1|value2,key=value` (a mapping of tuples); the nested
    `full_read` policy comes from `<PREFIX>FULL_READ_EVERY` and `<PREFIX>FULL_READ_MAX_AGE_HOURS`. A bad value
    raises `ConfigurationError` naming the variable, never quoting the value (it may be a secret).
    """
    data: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name in model.model_fields:
        if name == "full_read":
            policy = {
                key: env[f"{prefix}FULL_READ_{variable}"]
                for key, variable in (("every_cycles", "EVERY"), ("max_age_hours", "MAX_AGE_HOURS"))
                if env.get(f"{prefix}FULL_READ_{variable}", "").strip()
            }
            if policy:
                data[name] = policy
            names[name] = f"{prefix}FULL_READ_EVERY / {prefix}FULL_READ_MAX_AGE_HOURS"
            continue
        variable = f"{prefix}{name.upper()}"
        names[name] = variable
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        data[name] = _mapping_of_lists(raw, variable) if name in lists else raw
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            problems.append(f"{names.get(field, field)}: {error['msg']}")
        raise ConfigurationError("; ".join(problems)) from None


def _mapping_of_lists(raw: str, variable: str) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for item in raw.split(","):
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigurationError(f"{variable}: expected column=attribute[|attribute...] items separated by commas")
        result[key.strip()] = tuple(v.strip() for v in values.split("|") if v.strip())
    return result
