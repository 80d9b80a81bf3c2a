"""`dmabuf-inspect`: argument parsing, subcommand dispatch, and the one-line error policy.

The parser knows every command by its line in `cli/registry.py`; only the module of the command
being run is imported (with its arguments), so `dmabuf-inspect --version` or `list` never pays for
`alloc` or `bench`. The root options (--tree, --proc-root, ...) go before or after the command.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import stat
import sys
from collections.abc import Sequence
from types import ModuleType

from dmabuf_inspect import __version__
from dmabuf_inspect.cli.registry import BY_NAME, COMMANDS
from dmabuf_inspect.errors import EXIT_FAILURE, EXIT_USAGE, DmabufInspectError, UsageError
from dmabuf_inspect.textsafe import escape

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from dmabuf_inspect.kernel.reader import Roots

PROG = "dmabuf-inspect"
AFTER = "after_"  # the dest prefix of a root option given after the command
# (flag, dest, help): the roots of the kernel files, as Roots() has them by default.
ROOT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--proc-root", "proc_root", "default: /proc"),
    ("--sys-root", "sys_root", "default: /sys"),
    ("--debugfs-root", "debugfs_root", "default: SYS_ROOT/kernel/debug"),
    ("--dev-root", "dev_root", "default: /dev"),
    ("--tree", "tree", "a whole capture (DIR/proc, DIR/sys, DIR/dev), as `capture` writes it"),
)
# (flag, dest, help): how a scan may use BPF (README "BPF"), before or after the command too.
BPF_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--no-bpf", "no_bpf", "read no BPF iterator: walk /proc, read debugfs bufinfo"),
    (
        "--bpf-iter",
        "bpf_iter",
        "a pinned dma-buf iterator to read, in Android's format (default: ours as root, else "
        "/sys/fs/bpf/dmabuf/prog_dmabufIter_iter_dmabuf when readable)",
    ),
)
_ROOT_LEVEL_FLAGS = (
    "-h",
    "--help",
    "--version",
    *(flag for flag, _, _ in ROOT_OPTIONS),
    *(flag for flag, _, _ in BPF_OPTIONS),
)


_columns: list[int] = []


def _terminal_columns() -> int:
    """What shutil.get_terminal_size() says, without importing shutil (argparse would import it,
    with bz2, lzma and threading, for every argument it adds: 8 modules, a tenth of a second of
    `dump` under TCG)."""
    if not _columns:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
            except (AttributeError, ValueError, OSError):
                columns = 0
        _columns.append(columns or 80)
    return _columns[0]


class _Help(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, _terminal_columns() - 2 if width is None else width)


class _RawHelp(_Help, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_root_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    group = parser.add_argument_group("reading a captured tree (before or after the command)")
    for flag, dest, text in ROOT_OPTIONS:
        if after:
            group.add_argument(flag, dest=AFTER + dest, default=argparse.SUPPRESS, metavar="DIR", help=text)
        else:
            group.add_argument(flag, dest=dest, default=None, metavar="DIR", help=text)
    _add_bpf_options(parser, after=after)


def _add_bpf_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    group = parser.add_argument_group("BPF (before or after the command)")
    for flag, dest, text in BPF_OPTIONS:
        how: dict[str, Any] = {"action": "store_true"} if flag == "--no-bpf" else {"metavar": "PATH"}
        if after:
            group.add_argument(flag, dest=AFTER + dest, default=argparse.SUPPRESS, help=text, **how)
        else:
            group.add_argument(flag, dest=dest, default=None, help=text, **how)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser of `selected` (its module imported, its arguments added) under the root options;
    with no command selected, every command, by name and summary (for --help and usage errors)."""
    parser = _Parser(
        prog=PROG,
        description="Every dma-buf on this machine: exporters, holders, importers, CPU costs.",
        epilog="With no command: the TUI on a terminal, else the `list` table.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_root_options(parser, after=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        if command.name != selected:
            if selected not in BY_NAME:  # a parser per command: 0.2 s of `dump` under TCG, for nothing
                sub.add_parser(command.name, help=command.summary, add_help=False)
            continue
        module = importlib.import_module(command.module_path)
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=(module.__doc__ or command.summary).strip(),
            formatter_class=_RawHelp,
        )
        module.add_arguments(p)
        _add_root_options(p, after=True)
        for action in p._actions:  # a command's own actions (`bpf status`) take them after them too
            if isinstance(action, argparse._SubParsersAction):
                for nested in action.choices.values():
                    _add_root_options(nested, after=True)
    return parser


def _long_option(token: str) -> str:
    """The root-level option a token names, prefixes expanded as argparse does."""
    name = token.split("=", 1)[0]
    if name in _ROOT_LEVEL_FLAGS:
        return name
    found = [flag for flag in _ROOT_LEVEL_FLAGS if flag.startswith("--") and flag.startswith(name)]
    return found[0] if len(found) == 1 else name


def find_command(argv: Sequence[str]) -> str | None:
    """The first word of argv that is no root option nor an option's value: the command."""
    takes_value = {flag for flag, _, _ in ROOT_OPTIONS} | {"--bpf-iter"}
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            return next(tokens, None)
        if token.startswith("-") and token != "-":
            if "=" not in token and _long_option(token) in takes_value:
                next(tokens, None)
            continue
        return token
    return None


def _command_modules() -> dict[str, ModuleType]:
    """Every command's module, imported (for callers that must import before dropping privileges)."""
    return {c.name: importlib.import_module(c.module_path) for c in COMMANDS}


def _merge_root_options(args: argparse.Namespace) -> dict[str, str]:
    """Each root option once, from before or after the command; {flag: value} of those given."""
    given: dict[str, str] = {}
    for flag, dest, _ in ROOT_OPTIONS:
        before = getattr(args, dest, None)
        after = vars(args).pop(AFTER + dest, None)
        if before is not None and after is not None and before != after:
            raise UsageError(f"{flag} given twice ({escape(before)} and {escape(after)}); give it once")
        value = after if after is not None else before
        setattr(args, dest, value)
        if value is not None:
            given[flag] = value
    return given


def _merge_bpf_options(args: argparse.Namespace) -> None:
    """--no-bpf and --bpf-iter once each, from before or after the command, and checked: a pin
    that does not exist, or a --bpf-iter with --tree (a capture keeps its own copy), is refused."""
    args.no_bpf = bool(getattr(args, "no_bpf", None) or vars(args).pop(AFTER + "no_bpf", None))
    before, after = getattr(args, "bpf_iter", None), vars(args).pop(AFTER + "bpf_iter", None)
    if before is not None and after is not None and before != after:
        raise UsageError(f"--bpf-iter given twice ({escape(before)} and {escape(after)}); give it once")
    path = args.bpf_iter = after if after is not None else before
    if path is None:
        return
    if getattr(args, "tree", None):
        raise UsageError("--bpf-iter reads a pin of the running kernel; a capture (--tree) keeps its own copy")
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode) if path else False
    except FileNotFoundError:
        raise UsageError(f"--bpf-iter {escape(path)}: no such file (`dmabuf-inspect bpf pin` makes one)") from None
    except OSError:
        return  # not this user's to see: the scan says so in sources.bpf
    if not path or is_dir:
        raise UsageError(f"--bpf-iter {escape(path)}: not a pinned iterator (a file on bpffs)")


def _check_directory(flag: str, path: str) -> None:
    if not path:
        raise UsageError(f"{flag} needs a directory, not an empty string")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"{flag} {escape(path)}: no such directory") from None
    except NotADirectoryError:
        raise UsageError(f"{flag} {escape(path)}: not a directory") from None
    except OSError as exc:
        raise UsageError(f"{flag} {escape(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {escape(path)}: not a directory")


def check_root_options(given: dict[str, str]) -> None:
    """Refuse roots that cannot be read as asked: missing, not directories, empty, a --tree that is
    no capture, or --tree together with a single root (it sets them all)."""
    tree = given.get("--tree")
    if tree is not None and len(given) > 1:
        others = ", ".join(f for f in given if f != "--tree")
        raise UsageError(f"--tree sets every root; it cannot be combined with {others}")
    for flag, path in given.items():
        _check_directory(flag, path)
    if tree is not None and not os.path.isdir(os.path.join(tree, "proc")):
        raise UsageError(
            f"--tree {escape(tree)}: not a capture (no proc/ in it); `dmabuf-inspect capture DIR` writes one"
        )


def _roots(args: argparse.Namespace) -> Roots:
    from dmabuf_inspect.kernel.reader import Roots  # not needed by --help and --version

    bpf = not getattr(args, "no_bpf", False)
    if args.tree:
        return Roots.from_tree(args.tree, bpf=bpf)
    default = Roots()
    sys_root = args.sys_root or default.sys_root
    return Roots(
        proc_root=args.proc_root or default.proc_root,
        sys_root=sys_root,
        debugfs_root=args.debugfs_root or f"{sys_root.rstrip('/')}/kernel/debug",
        dev_root=args.dev_root or default.dev_root,
        bpf=bpf,
        bpf_iter=getattr(args, "bpf_iter", None),
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """argv parsed (argparse exits 2 on a usage error), the command's module imported, root options
    merged; raises UsageError for a root option given twice."""
    selected = find_command(argv)
    args = build_parser(selected if selected in BY_NAME else None).parse_args(argv)
    if args.command is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        default = "tui" if interactive else "list"
        args = build_parser(default).parse_args([*argv, default])
    args.root_options = tuple(_merge_root_options(args))
    _merge_bpf_options(args)
    return args


_ended: list[bool] = []  # [True] once a one-shot command has run: entry() may skip the teardown
_kept: list[object] = []
_exits_at_once: list[bool] = []  # [True] under entry(), which ends one-shot commands with os._exit()


def keep(value: object) -> None:
    """Hold `value` until the process ends: under entry(), a one-shot command's snapshot (some
    50 000 objects at 10 000 buffers) is then never freed one object at a time (a fiftieth of
    `dump` under TCG) before os._exit() returns all its memory at once. Elsewhere (tests, callers
    of main()), nothing is held."""
    if _exits_at_once:
        _kept.append(value)


def _run(argv: Sequence[str]) -> int:
    args = parse(argv)
    check_root_options({flag: getattr(args, dest) for flag, dest, _ in ROOT_OPTIONS if getattr(args, dest) is not None})
    args.roots = _roots(args)
    command = BY_NAME[args.command]
    module = importlib.import_module(command.module_path)
    if not command.one_shot:
        result: int = module.run(args)
        return result
    was = gc.isenabled()
    gc.disable()
    try:
        result = module.run(args)
    finally:
        if was:
            gc.enable()
    _ended.append(True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except DmabufInspectError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"{PROG}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return EXIT_FAILURE


def entry() -> None:
    _exits_at_once.append(True)
    code = main()
    if _ended:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(code)
    sys.exit(code)
