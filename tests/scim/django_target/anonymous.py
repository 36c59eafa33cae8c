"""No login in the test project: every request is served (the interop tests are about SCIM, not Django auth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AnonymousClient:
    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        request.user = None
        return self.get_response(request)


def everyone(user: object) -> bool:
    return True
