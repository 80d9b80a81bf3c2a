from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

_R = TypeVar("_R", bound=tuple[Any, ...])

def fds_by_inode(dirfd: int, dev: int, /) -> dict[int, tuple[int, ...]]: ...
def weave_columns(
    pieces: tuple[str, ...],
    columns: tuple[Sequence[Any], ...],
    sep: str,
    nested: dict[int, tuple[str, ...]],
    lookups: dict[int, dict[Any, str]],
    /,
) -> str: ...

PlainColumns = tuple[
    tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], list[bytes], tuple[int, ...], list[bytes]
]

def bufinfo_plain(body: bytes, /) -> PlainColumns | None: ...
def fd_records(data: bytes, /) -> dict[int, dict[int, tuple[int, ...]]] | None: ...
def buffer_records(data: bytes, exp_bytes: int, name_bytes: int, /) -> tuple[tuple[Any, ...], ...] | None: ...
def hold(
    held: dict[int, tuple[Any, ...]],
    refs: dict[int, int],
    pid: int,
    fds: dict[int, tuple[int, ...]],
    holder: type[tuple[Any, ...]],
    maps: dict[int, list[Any]] | None,
    /,
) -> None: ...
def rows(cls: type[_R], n: int, columns: tuple[Iterable[Any], ...], /) -> list[_R]: ...
def held_sums(buffers: list[Any], helds: list[Any], /) -> list[tuple[int, int]] | None: ...
def bpf(cmd: int, attr: bytearray, pointers: tuple[tuple[int, bytes | bytearray], ...], /) -> int: ...
