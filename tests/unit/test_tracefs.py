"""kernel/tracefs.py: the trace_pipe line parser (lines as the 7.3 lab printed them), the per-CPU
stats, and why tracing is unavailable."""

from __future__ import annotations

import os

import pytest

from dmabuf_inspect.kernel import tracefs
from dmabuf_inspect.kernel.tracefs import LostEvents, TraceEvent, TraceParseError, parse_line, parse_stats

# Verbatim from the 7.3 lab (record-tgid and irq-info on), a thread of pid 185 named worker-thr.
LAB_LINES = """\
      worker-thr-215     (    185) [001] ...1.    33.272964: dma_buf_export: exp_name=system size=65536 ino=1
      worker-thr-215     (    185) [001] ...1.    33.273559: dma_buf_fd: exp_name=system size=65536 ino=1 fd=7
    my leak-er 1-185     (    185) [000] ...1.    35.918827: dma_buf_get: exp_name=udmabuf size=32768 ino=3 fd=11
{attach}
    my leak-er 1-185     (    185) [000] ...1.    35.921133: dma_buf_put: exp_name=udmabuf size=32768 ino=3
""".format(
    attach="    my leak-er 1-185     (    185) [000] ...1.    35.919337: dma_buf_dynamic_attach: "
    "exp_name=udmabuf size=32768 ino=3 attachment:00000000212b4d34 is_dynamic=0 dev_name=vgem"
)


def test_lab_lines() -> None:
    events = [parse_line(line) for line in LAB_LINES.splitlines()]
    assert events[0] == TraceEvent("dma_buf_export", 215, 185, "worker-thr", 1, 33.272964, "system", 65536, 1)
    assert events[1] == TraceEvent("dma_buf_fd", 215, 185, "worker-thr", 1, 33.273559, "system", 65536, 1, fd=7)
    get = events[2]
    assert isinstance(get, TraceEvent)
    assert (get.comm, get.tid, get.tgid, get.fd, get.exp_name) == ("my leak-er 1", 185, 185, 11, "udmabuf")
    attach = events[3]
    assert isinstance(attach, TraceEvent)
    assert (attach.dev_name, attach.is_dynamic, attach.inode, attach.size_bytes) == ("vgem", False, 3, 32768)
    assert isinstance(events[4], TraceEvent) and events[4].event == "dma_buf_put"


def test_issue_example_without_tgid_column() -> None:
    line = "python3-186 [001] ...1. 15.147275: dma_buf_export: exp_name=system size=65536 ino=1"
    e = parse_line(line)
    assert e == TraceEvent("dma_buf_export", 186, None, "python3", 1, 15.147275, "system", 65536, 1)


@pytest.mark.parametrize(
    ("comm", "pid"),
    [
        ("a-b-c", 42),
        ("x-12 [000] 1.0:", 7),  # a comm made to look like the prefix
        ("-", 3),
        ("  lead", 9),
        ("123", 5),
    ],
)
def test_comm_with_dashes_and_spaces_takes_the_last_pid(comm: str, pid: int) -> None:
    line = f"{comm:>16}-{pid:<7} [003] d..2. 100.000001: dma_buf_export: exp_name=drm size=4096 ino=99"
    e = parse_line(line)
    assert isinstance(e, TraceEvent)
    assert e.tid == pid and e.comm == comm.lstrip(" ") and e.cpu == 3 and e.inode == 99


def test_no_flags_field_and_unknown_tgid() -> None:
    e = parse_line("           <...>-77      (-------) [000]   5.5: dma_buf_fd: exp_name=udmabuf size=8192 ino=4 fd=-1")
    assert isinstance(e, TraceEvent)
    assert (e.comm, e.tgid, e.tid, e.fd, e.timestamp_s) == (None, None, 77, -1, 5.5)


def test_lost_markers() -> None:
    assert parse_line("CPU:0 [LOST 5713 EVENTS]") == LostEvents(0, 5713)
    assert parse_line("CPU:12 [LOST EVENTS]\n") == LostEvents(12, None)


def test_other_lines_are_none() -> None:
    assert parse_line("") is None
    assert parse_line("# tracer: nop") is None
    assert parse_line("  bash-1 [000] ..... 1.0: sched_switch: prev_comm=bash prev_pid=1") is None


def test_a_dma_buf_event_in_another_format_is_an_error() -> None:
    with pytest.raises(TraceParseError):
        parse_line("p-1 [000] 1.0: dma_buf_export: name=system len=4096")
    with pytest.raises(TraceParseError):
        parse_line("p-1 [000] 1.0: dma_buf_fd: exp_name=system size=4096 ino=3")


def test_stats() -> None:
    text = (
        "entries: 293\noverrun: 5713\ncommit overrun: 1\nbytes: 14252\n"
        "oldest event ts:    38.458819\nnow ts:    40.472833\ndropped events: 5707\nread events: 295\n"
    )
    assert parse_stats(text) == 5713 + 1 + 5707
    assert parse_stats("entries: 0\n") == 0


def _fake_tracefs(root: str, *, dma_buf: bool) -> None:
    os.makedirs(os.path.join(root, "instances"))
    os.makedirs(os.path.join(root, "events", "sched"))
    if dma_buf:
        os.makedirs(os.path.join(root, "events", "dma_buf", "dma_buf_export"))


def test_unavailable_reasons(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nothing")
    assert "not mounted" in (tracefs.unavailable_reason(missing) or "")
    empty = os.path.join(tmp_path, "empty")
    os.makedirs(empty)
    assert "not mounted" in (tracefs.unavailable_reason(empty) or "")
    old = os.path.join(tmp_path, "old")
    _fake_tracefs(old, dma_buf=False)
    assert "7.0" in (tracefs.unavailable_reason(old) or "")
    new = os.path.join(tmp_path, "new")
    _fake_tracefs(new, dma_buf=True)
    assert tracefs.unavailable_reason(new) is None
    with pytest.raises(tracefs.TraceUnavailableError, match=r"7\.0"):
        tracefs.TraceInstance.create(old)


def test_remove_stale_only_removes_instances_of_dead_recorders(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "t")
    _fake_tracefs(root, dma_buf=True)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for name in (f"dmabuf-inspect-{dead}", f"dmabuf-inspect-{os.getpid()}", "someone-else", "dmabuf-inspect-x"):
        os.mkdir(os.path.join(root, "instances", name))
    assert tracefs.remove_stale(root) == [f"dmabuf-inspect-{dead}"]
    assert sorted(os.listdir(os.path.join(root, "instances"))) == sorted(
        [f"dmabuf-inspect-{os.getpid()}", "someone-else", "dmabuf-inspect-x"]
    )


def test_resolve_task_of_this_thread() -> None:
    task = tracefs.resolve_task(os.getpid())
    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        start = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert task.pid == os.getpid() and task.start_ticks == start and task.comm


def test_resolve_task_of_a_gone_thread_keeps_the_tid() -> None:
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    assert tracefs.resolve_task(gone) == tracefs.Task(gone, None, None)


def test_parse_tgid() -> None:
    assert tracefs.parse_tgid(b"Name:\tx\nUmask:\t0022\nState:\tS\nTgid:\t185\nNgid:\t0\nPid:\t215\n") == 185
    assert tracefs.parse_tgid(b"Name:\tx\n") is None


def _fake_instance(path: str, cpus: dict[str, str]) -> None:
    """An instance's control files as regular files, trace_pipe as a FIFO, per-CPU stats."""
    for rel in ("tracing_on", "trace_clock", "buffer_size_kb", "options/record-tgid", "events/enable"):
        os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
        with open(os.path.join(path, rel), "w") as f:
            f.write("?")
    for event in tracefs.EVENTS:
        os.makedirs(os.path.join(path, "events", "dma_buf", event))
        with open(os.path.join(path, "events", "dma_buf", event, "enable"), "w") as f:
            f.write("0")
    os.mkfifo(os.path.join(path, "trace_pipe"))
    for cpu, stats in cpus.items():
        os.makedirs(os.path.join(path, "per_cpu", cpu))
        with open(os.path.join(path, "per_cpu", cpu, "stats"), "w") as f:
            f.write(stats)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_setup_writes_the_control_files_and_opens_trace_pipe_without_blocking(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "instances", "dmabuf-inspect-1")
    _fake_instance(path, {"cpu0": "overrun: 3\ndropped events: 4\n", "cpu1": "commit overrun: 5\n"})
    os.mkdir(os.path.join(path, "per_cpu", "cpu2"))  # no stats file: counts nothing
    trace = tracefs.TraceInstance._setup(path, tracefs.EVENTS, 1024)
    try:
        assert (trace.path, trace.clock) == (path, "boot")
        assert [_read(os.path.join(path, f)) for f in ("tracing_on", "trace_clock", "buffer_size_kb")] == [
            "1",
            "boot",
            "1024",
        ]
        assert _read(os.path.join(path, "options", "record-tgid")) == "1"
        assert {
            e: _read(os.path.join(path, "events", "dma_buf", e, "enable")) for e in tracefs.EVENTS
        } == dict.fromkeys(tracefs.EVENTS, "1")
        assert trace.read_events() == ([], 0)  # no writer on the FIFO: an open that blocked would hang here
        assert trace.lost_events() == 3 + 4 + 5
    finally:
        os.close(trace.pipe_fd)


def test_setup_says_which_event_it_could_not_enable(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "inst")
    _fake_instance(path, {})
    os.unlink(os.path.join(path, "events", "dma_buf", "dma_buf_detach", "enable"))
    with pytest.raises(tracefs.TraceUnavailableError, match="enabling dma_buf_detach: No such file or directory"):
        tracefs.TraceInstance._setup(path, tracefs.EVENTS, 1024)
    assert not os.path.exists(os.path.join(path, "events", "dma_buf", "dma_buf_detach", "enable"))  # never created
