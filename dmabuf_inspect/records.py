"""`class X(NamedTuple)` for the package's records, made without eval() or compile() at import.

CPython's typing.NamedTuple (3.10-3.13) compiles a ForwardRef for each field whose annotation is a
string (every field under `from __future__ import annotations`) and eval()s each class's __new__
from source (collections.namedtuple): about 0.1 ms natively per class, and a `dump` defines some
40 of them before it scans (a tenth of its start-up under TCG). Here a class statement makes the
same tuple subclass from the names alone: the fields' C accessors, __new__ as a closure, and the
methods namedtuple gives (_make, _replace, _asdict, _fields, _field_defaults, __match_args__,
__getnewargs__, __repr__). Annotations stay as they were written (strings, or types) and are
never evaluated.

mypy sees typing.NamedTuple (the TYPE_CHECKING branch below), so type checking is unchanged.
Modules write

    from dmabuf_inspect.records import NamedTuple

    class Holder(NamedTuple):
        pid: int
        fds: tuple[int, ...] = ()

What differs from typing.NamedTuple: only the class syntax (no functional form, no Generic
records), and __new__'s signature reads (*args, **kwargs) to inspect.signature().
"""

import sys

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    from operator import itemgetter

    try:
        from _collections import _tuplegetter
    except ImportError:  # an interpreter without the C accessor

        def _tuplegetter(index, doc):
            return property(itemgetter(index), doc=doc)

    _tuple_new = tuple.__new__
    _MISSING = object()
    # Names a record may not define: namedtuple's own (typing.NamedTuple refuses the same).
    _PROHIBITED = frozenset(
        (
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        )
    )
    # What type() puts in every class namespace, and typing.NamedTuple does not copy.
    _SPECIAL = frozenset(("__module__", "__name__", "__qualname__", "__annotations__", "__orig_bases__"))

    def _new_of(typename, fields, defaults):
        n = len(fields)
        index = {name: i for i, name in enumerate(fields)}
        first_default = n - len(defaults)

        def __new__(_cls, *args, **kwargs):
            given = len(args)
            if not kwargs:
                if given == n:
                    return _tuple_new(_cls, args)
                if first_default <= given < n:
                    return _tuple_new(_cls, args + defaults[given - first_default :])
            elif not given and len(kwargs) == n and kwargs.keys() == index.keys():
                return _tuple_new(_cls, map(kwargs.__getitem__, fields))
            elif given <= n:
                values = list(args)
                pop = kwargs.pop
                for at in range(given, n):
                    value = pop(fields[at], _MISSING)
                    if value is _MISSING:
                        if at < first_default:
                            raise TypeError(f"{typename}.__new__() missing required argument {fields[at]!r}")
                        value = defaults[at - first_default]
                    values.append(value)
                if not kwargs:
                    return _tuple_new(_cls, values)
                key = next(iter(kwargs))
                if key in index:
                    raise TypeError(f"{typename}.__new__() got multiple values for argument {key!r}")
                raise TypeError(f"{typename}.__new__() got an unexpected keyword argument {key!r}")
            if given > n:
                raise TypeError(f"{typename}.__new__() takes {n} positional arguments but {given} were given")
            raise TypeError(f"{typename}.__new__() missing required argument {fields[given]!r}")

        __new__.__qualname__ = f"{typename}.__new__"
        __new__.__doc__ = f"Create new instance of {typename}({', '.join(fields)})"
        return __new__

    def _methods(typename, fields):
        n = len(fields)
        repr_fmt = "(" + ", ".join(f"{name}=%r" for name in fields) + ")"

        @classmethod
        def _make(cls, iterable):
            result = _tuple_new(cls, iterable)
            if len(result) != n:
                raise TypeError(f"Expected {n} arguments, got {len(result)}")
            return result

        def _replace(self, /, **kwds):
            result = self._make(map(kwds.pop, fields, self))
            if kwds:
                raise ValueError(f"Got unexpected field names: {list(kwds)!r}")
            return result

        def __repr__(self):
            return self.__class__.__name__ + repr_fmt % self

        def _asdict(self):
            return dict(zip(self._fields, self, strict=True))

        def __getnewargs__(self):
            return tuple(self)

        return {
            "_make": _make,
            "_replace": _replace,
            "__repr__": __repr__,
            "_asdict": _asdict,
            "__getnewargs__": __getnewargs__,
        }

    class _RecordMeta(type):
        def __new__(mcls, typename, bases, ns):
            if bases != (_Root,):
                raise TypeError("a record may only derive from NamedTuple")
            annotations = ns.get("__annotations__", {})
            fields = tuple(annotations)
            for name in fields:
                if name.startswith("_"):
                    raise ValueError(f"Field names cannot start with an underscore: {name!r}")
            defaults = []
            for name in fields:
                if name in ns:
                    defaults.append(ns[name])
                elif defaults:
                    raise TypeError(f"Non-default namedtuple field {name} cannot follow default field")
            body = {
                "__doc__": f"{typename}({', '.join(fields)})",
                "__slots__": (),
                "_fields": fields,
                "_field_defaults": dict(zip(fields[len(fields) - len(defaults) :], defaults, strict=True)),
                "__new__": _new_of(typename, fields, tuple(defaults)),
                "__match_args__": fields,
                "__annotations__": dict(annotations),
                "__module__": ns.get("__module__", sys._getframe(1).f_globals.get("__name__", "__main__")),
                "__qualname__": ns.get("__qualname__", typename),
                **_methods(typename, fields),
            }
            for i, name in enumerate(fields):
                body[name] = _tuplegetter(i, f"Alias for field number {i}")
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key not in _SPECIAL and key not in annotations:
                    body[key] = value
            return type.__new__(type, typename, (tuple,), body)

    _Root = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def _mro_entries(bases):
        return (_Root,)

    def NamedTuple(typename, fields=None, /, **kwargs):
        raise TypeError("dmabuf_inspect.records.NamedTuple takes the class syntax only")

    NamedTuple.__mro_entries__ = _mro_entries
