"""Regular expressions compiled the first time they are used, not when their module is imported.

A parser module holds a dozen patterns, most of which a given run never uses (bufinfo's for kernels
before 5.15, cgroup's for container runtimes, ...); compiling one costs about 0.1 ms natively, and
a `dump` imports some thirty of them before it scans (tens of milliseconds under TCG).

    _ROW = lazy(rb"(\\d+)\\t(.*)", re.S)     # typed as re.Pattern[bytes]
    _ROW.fullmatch(line)                   # compiled here, once
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import AnyStr


class _Lazy:
    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self._pattern, self._flags = pattern, flags
        self._compiled: re.Pattern[str] | re.Pattern[bytes] | None = None

    def __getattr__(self, name: str) -> object:  # what a re.Pattern has: match, fullmatch, ...
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(self._pattern, self._flags)
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"lazy({self._pattern!r})"


def lazy(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """re.compile(pattern, flags), done on the first use of any of the pattern's methods."""
    return _Lazy(pattern, flags)  # type: ignore[return-value]
