from collections.abc import Iterable
from typing import Any

def fds_by_inode(dirfd: int, dev: int, /) -> dict[int, tuple[int, ...]]: ...
def weave(
    pieces: tuple[str, ...], rows: Iterable[tuple[Any, ...]], sep: str, nested: dict[int, tuple[str, ...]] = ..., /
) -> str: ...
