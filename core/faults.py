"""Fault injection points, for tests.

The engine passes a few values through `fire(point, value, **context)`;
normally nothing is registered and the value comes back unchanged. A test
registers a function with `inject(point, fn)` to make that point fail the way
the world does: a NaN loss, a CUDA out-of-memory error at step N. Nothing in
the app registers a fault.

Points: "loss" (the training loss of a step, before backward; context: epoch,
step, run_id); "record_end" (a run that raised is about to be recorded as
failed or interrupted; value None; context: run_id).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

_hooks: dict[str, Callable[..., Any]] = {}


def fire(point: str, value: Any, **context) -> Any:
    hook = _hooks.get(point)
    return value if hook is None else hook(value, **context)


@contextmanager
def inject(point: str, fn: Callable[..., Any]) -> Iterator[None]:
    """While the block runs, `fn(value, **context)` replaces `point`'s value (or raises)."""
    before = _hooks.get(point)
    _hooks[point] = fn
    try:
        yield
    finally:
        if before is None:
            _hooks.pop(point, None)
        else:
            _hooks[point] = before
