"""An asyncio event loop on a virtual clock: ``asyncio.sleep`` and every timer run in simulated time, instantly and
deterministically, while tasks still interleave as they would on a real loop (no wall-clock timing in the tests).

The loop's selector, asked to wait for I/O with a timeout, advances the clock by that timeout instead; a loop with
nothing scheduled and nothing to wait for is a deadlock, reported as such.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _AdvancingSelector(selectors.SelectSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is scheduled")
        self._clock.now += max(0.0, timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(selector=_AdvancingSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


def run_virtual(main: Coroutine[Any, Any, _T], clock: VirtualClock | None = None) -> _T:
    """Run ``main`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop(clock or VirtualClock())
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
