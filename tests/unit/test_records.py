"""dmabuf_inspect.records.NamedTuple makes the same records as typing.NamedTuple, without eval()."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import typing

import pytest

import dmabuf_inspect
from dmabuf_inspect.records import NamedTuple


class Ours(NamedTuple):
    """A record."""

    pid: int
    name: str | None = None
    fds: tuple[int, ...] = ()

    @property
    def twice(self) -> int:
        return 2 * self.pid


class Typing(typing.NamedTuple):
    pid: int
    name: str | None = None
    fds: tuple[int, ...] = ()


CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((1,), {}),
    ((1, "a"), {}),
    ((1, "a", (3,)), {}),
    ((), {"pid": 2}),
    ((), {"pid": 2, "fds": (4, 5)}),
    ((), {"fds": (4,), "name": "n", "pid": 7}),
    ((3,), {"fds": (6,)}),
    ((3, None), {"fds": (6,)}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_made_as_typing_makes_them(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    ours, theirs = Ours(*args, **kwargs), Typing(*args, **kwargs)  # type: ignore[arg-type]
    assert tuple(ours) == tuple(theirs) and hash(ours) == hash(theirs)
    assert repr(ours) == repr(theirs).replace("Typing", "Ours")
    assert ours._asdict() == theirs._asdict()
    assert tuple(ours._replace(name="x")) == tuple(theirs._replace(name="x"))
    assert pickle.loads(pickle.dumps(ours)) == ours and type(pickle.loads(pickle.dumps(ours))) is Ours
    assert (ours.pid, ours.name, ours.fds) == (theirs.pid, theirs.name, theirs.fds)


BAD_CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((), {}),
    ((1, 2, 3, 4), {}),
    ((1,), {"pid": 1}),
    ((1,), {"nope": 1}),
    ((), {"name": "n"}),
    ((), {"pid": 1, "name": "n", "nope": 2}),
]


@pytest.mark.parametrize(("args", "kwargs"), BAD_CALLS)
def test_refuses_what_typing_refuses(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Typing(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Ours(*args, **kwargs)  # type: ignore[arg-type]


def test_class_attributes_are_namedtuples() -> None:
    assert Ours._fields == Typing._fields == Ours.__match_args__
    assert Ours._field_defaults == Typing._field_defaults
    assert Ours._make([1, "n", ()]) == Ours(1, "n")
    with pytest.raises(TypeError):
        Ours._make([1])
    with pytest.raises(ValueError, match="unexpected field names"):
        Ours(1)._replace(nope=1)  # type: ignore[call-arg]
    assert Ours(4).twice == 8 and Ours.__doc__ == "A record." and Ours.__module__ == __name__
    assert Ours.__qualname__ == "Ours" and isinstance(Ours(1), tuple) and vars(Ours)["__slots__"] == ()
    assert Ours.__annotations__ == {"pid": "int", "name": "str | None", "fds": "tuple[int, ...]"}
    match Ours(5, "m"):
        case Ours(pid, name):
            assert (pid, name) == (5, "m")
        case _:
            pytest.fail("no match")


def test_a_record_class_is_checked_as_typing_checks_it() -> None:
    with pytest.raises(TypeError, match="Non-default"):

        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="_replace"):

        class Worse(NamedTuple):
            a: int

            def _replace(self) -> None: ...  # type: ignore[misc]

    with pytest.raises(ValueError, match="underscore"):

        class Worst(NamedTuple):
            _a: int  # type: ignore[misc]


def test_commands_define_their_records_without_typing_namedtuple() -> None:
    # typing.NamedTuple eval()s each class's __new__ and compiles a ForwardRef per string annotation:
    # about 0.1 ms per class natively, some 40 classes before `dump` scans.
    code = (
        "import collections, typing\n"
        "def refuse(*a, **k): raise SystemExit('collections.namedtuple called')\n"
        "collections.namedtuple = refuse\n"
        "import dmabuf_inspect.cli.main\n"
        "for c in ('dump', 'list', 'buffers', 'heaps', 'tui'):\n"
        "    __import__('dmabuf_inspect.cli.commands.' + c)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.path.dirname(os.path.dirname(dmabuf_inspect.__file__))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
