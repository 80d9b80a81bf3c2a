"""The subcommands: name, module and one line of help, known without importing any of them.

`dmabuf-inspect` imports only the module of the command it runs (importing them all took 3.2 s
of a `dump` under TCG, against 2.0 s for its scan: issue 12's profile). To add
a command: write `dmabuf_inspect/cli/commands/NAME.py` with a docstring (its help text),
`add_arguments(parser)` and `run(args) -> int`, and add one `Command` line below. The summary is
the first line of the module's docstring (tests/unit/test_cli_registry.py checks that they agree).
"""

from dmabuf_inspect.records import NamedTuple


class Command(NamedTuple):
    name: str
    module: str  # under dmabuf_inspect.cli.commands
    summary: str  # the first line of the module's docstring
    # True: one scan, print, exit. Such a command runs without the garbage collector (it makes
    # tens of thousands of tuples and no cycle), and the console script ends its process with
    # os._exit() once stdout is flushed, skipping the interpreter's teardown (a tenth of a second
    # under TCG). Leave False for a command that holds resources or runs until stopped.
    one_shot: bool = False

    @property
    def module_path(self) -> str:
        return f"dmabuf_inspect.cli.commands.{self.module}"


COMMANDS: tuple[Command, ...] = (
    Command(
        "alloc",
        "alloc",
        "Allocate dma-bufs in this process (udmabuf or a heap) and hold them, as a known load for testing.",
    ),
    Command(
        "bench",
        "bench",
        "Measure what CPU access to dma-bufs costs, per exporter and size, against anon and memfd memory.",
    ),
    Command(
        "bpf",
        "bpf",
        "Pin our dma-buf BPF iterator for every user (Android's format), unpin it, or say what BPF can read here.",
    ),
    Command("buffers", "buffers", "Per-buffer table with every holder, then totals per exporter.", one_shot=True),
    Command(
        "capture", "capture", "Copy this machine's dma-buf kernel files into DIR, a tree the --tree option reads back."
    ),
    Command(
        "diff",
        "diff",
        "Compare two `dump` documents or captures: new, gone and re-held buffers, per-process deltas.",
    ),
    Command(
        "dump", "dump", "The whole snapshot as one JSON document (schema dmabuf-inspect/1) on stdout.", one_shot=True
    ),
    Command(
        "heaps",
        "heaps",
        "List the dma-buf heaps (/dev/dma_heap) and whether udmabuf is there, with its limits.",
        one_shot=True,
    ),
    Command(
        "list",
        "list",
        "Per-process table: the dma-bufs each process holds by fd or mapping, with Rss and Pss.",
        one_shot=True,
    ),
    Command("metrics", "metrics", "Prometheus metrics of the dma-bufs, on stdout or in a textfile for node_exporter."),
    Command(
        "record",
        "record",
        "Record snapshots over time into a SQLite file, with each buffer's creator where the kernel traces it.",
    ),
    Command(
        "report",
        "report",
        "What grew and who made it, from a recording: growth per process, new buffers by creator, totals.",
    ),
    Command("serve", "serve", "Serve Prometheus metrics over HTTP at /metrics, scanning when scraped."),
    Command("tui", "tui", "Live, htop-like view of dma-bufs: processes, their buffers, holders, fences, exporters."),
    Command(
        "watch",
        "watch",
        "One line per interval, like vmstat: time, total, change, new kernel-only bytes, top growers.",
    ),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}
