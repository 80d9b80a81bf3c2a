"""`dmabuf-inspect`: argument parsing, subcommand dispatch, and the one-line error policy."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from dmabuf_inspect.cli import commands
from dmabuf_inspect.errors import EXIT_FAILURE, EXIT_USAGE, DmabufInspectError
from dmabuf_inspect.kernel.reader import Roots


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command_modules() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found[module.NAME] = module
    return found


def build_parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dmabuf-inspect",
        description="Every dma-buf on this machine: exporters, holders, importers, CPU costs.",
        epilog="With no command: the TUI on a terminal, else the `list` table.",
    )
    roots = parser.add_argument_group("reading a captured tree")
    default = Roots()
    roots.add_argument("--proc-root", default=default.proc_root, metavar="DIR", help="default: %(default)s")
    roots.add_argument("--sys-root", default=default.sys_root, metavar="DIR", help="default: %(default)s")
    roots.add_argument("--debugfs-root", default=None, metavar="DIR", help="default: SYS_ROOT/kernel/debug")
    roots.add_argument("--dev-root", default=default.dev_root, metavar="DIR", help="default: %(default)s")
    roots.add_argument(
        "--tree", metavar="DIR", help="a whole capture (DIR/proc, DIR/sys, DIR/dev), as `capture` writes it"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in sorted(modules):
        module = modules[name]
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def _roots(args: argparse.Namespace) -> Roots:
    if args.tree:
        return Roots.from_tree(args.tree)
    debugfs = args.debugfs_root or f"{args.sys_root.rstrip('/')}/kernel/debug"
    return Roots(proc_root=args.proc_root, sys_root=args.sys_root, debugfs_root=debugfs, dev_root=args.dev_root)


def main(argv: Sequence[str] | None = None) -> int:
    modules = _command_modules()
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    args.roots = _roots(args)
    if args.command is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and "tui" in modules
        args.command = "tui" if interactive else "list"
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), args.command], namespace=args)
    try:
        result: int = modules[args.command].run(args)
        return result
    except DmabufInspectError as exc:
        print(f"dmabuf-inspect: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"dmabuf-inspect: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return EXIT_FAILURE


def entry() -> None:
    sys.exit(main())
