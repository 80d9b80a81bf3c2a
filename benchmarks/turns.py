"""Contenders timed in turns: each once per round, in an order that turns by one every round, so
that the machine's drift (TCG's slow processes, a noisy neighbour) falls on all of them alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_turns(contenders: dict[str, Callable[[], T]], rounds: int, *, warm_up: bool = False) -> dict[str, list[T]]:
    """Each contender's results, round by round. `warm_up`: every contender once first, not kept."""
    names = list(contenders)
    if warm_up:
        for name in names:
            contenders[name]()
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(contenders[name]())
    return results
