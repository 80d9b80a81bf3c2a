"""dmabuf-inspect: every dma-buf on a Linux machine, and what each one costs to touch.

The classify API is for programs that must tell a udmabuf from a GPU buffer at run time:

    from dmabuf_inspect import classify_fd, is_udmabuf

`import dmabuf_inspect` imports nothing else: each name below is imported the first time it is
asked for (PEP 562), so the CLI, which imports this package first, never pays for classify, and
classify_fd users pay for classify alone (standard library only). Not even `typing` nor
`__future__` here: under TCG, typing (which imports re) costs as much as a bare interpreter start.
"""

import sys

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    from dmabuf_inspect.classify import ExporterInfo, classify, classify_fd, is_udmabuf
    from dmabuf_inspect.errors import DmabufInspectError, NotADmabufError
else:
    ModuleType = type(sys)

# The one place the version is written; pyproject.toml repeats it (tests/unit/test_cli_registry.py
# checks that they agree with the installed metadata). A constant, not importlib.metadata, which
# costs more to import than the rest of the package.
__version__ = "0.1.0"

_LAZY = {
    "DmabufInspectError": "dmabuf_inspect.errors",
    "ExporterInfo": "dmabuf_inspect.classify",
    "NotADmabufError": "dmabuf_inspect.errors",
    "classify": "dmabuf_inspect.classify",
    "classify_fd": "dmabuf_inspect.classify",
    "is_udmabuf": "dmabuf_inspect.classify",
}

__all__ = [
    "DmabufInspectError",
    "ExporterInfo",
    "NotADmabufError",
    "__version__",
    "classify",
    "classify_fd",
    "is_udmabuf",
]


def __getattr__(name: str) -> "Any":
    source = _LAZY.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


class _Package(ModuleType):
    def __setattr__(self, name: str, value: "Any") -> None:
        # Importing the submodule dmabuf_inspect.classify binds it to this package's `classify`;
        # the name stays the function, as `from dmabuf_inspect import classify` promises.
        if name == "classify" and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
