"""What the look-ups and the PATCH fallbacks need of a SCIM client, as a protocol.

:mod:`.lookup` and :mod:`.patch_forms` are written against :class:`ScimPort`, never against
:class:`~scim_pipeline.scim.client.ScimClient` itself: the client imports them, and they import nothing of it,
so there is no import cycle between the three."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from scim2_models import Resource

from .profiles import Profile
from .results import ClientStats, ScimResult
from .settings import ConnectionSettings
from .target_quirks import TargetQuirks

__all__ = ["ScimPort"]


class ScimPort(Protocol):
    """The part of the SCIM client the look-ups and PATCH fallbacks use."""

    settings: ConnectionSettings
    profile: Profile
    quirks: TargetQuirks

    @property
    def stats(self) -> ClientStats: ...

    async def search(
        self,
        resource_type: str,
        filter: str | None = None,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def iter_pages(
        self,
        resource_type: str,
        filter: str | None = None,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]: ...

    async def get(
        self,
        resource_type: str,
        scim_id: str,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
    ) -> ScimResult: ...

    async def replace(
        self,
        resource_type: str,
        scim_id: str,
        resource: dict[str, Any] | Resource[Any],
        *,
        if_match: str | None = None,
    ) -> ScimResult: ...

    async def patch_request(
        self,
        resource_type: str,
        scim_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: str | None = None,
    ) -> ScimResult: ...
