"""`dmabuf-inspect bpf pin` / `unpin` and reading a pinned iterator, as an unprivileged user.

On 7.3 root pins our iterator at Android's path, bpffs mounted and opened to others as an admin
would; nobody then reads it and finds what bufinfo lists (names with their newlines as spaces,
Android's format). On 6.12 `bpf pin` says the kernel has no dma-buf iterator.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from as_user import NOBODY, call_as
from scene import Scene

from dmabuf_inspect.cli.main import main
from dmabuf_inspect.ioctl.heaps import heap_alloc
from dmabuf_inspect.kernel.bpf.records import BpfBuffer
from dmabuf_inspect.kernel.bpf.source import BPFFS, DEFAULT_PIN, read_pinned
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo

pytestmark = pytest.mark.kernel
HAS_DMABUF_ITER = tuple(map(int, os.uname().release.split(".")[:2])) >= (6, 16)


def test_pin_is_refused_off_bpffs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bpf", "pin", str(tmp_path / "iter")])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"dmabuf-inspect: bpffs not mounted at {tmp_path} (mount -t bpf bpf /sys/fs/bpf)"
    )


def test_pin_on_a_kernel_without_the_iterator_says_so(bpffs: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bpf", "pin"])
    assert code == 1
    assert capsys.readouterr().err.strip() == "dmabuf-inspect: kernel has no dma-buf BPF iterator (6.16+)"
    assert not os.path.exists(DEFAULT_PIN)


def _expected_android(entries: dict[int, object]) -> dict[int, tuple[int, str, str | None]]:
    out = {}
    for inode, e in entries.items():
        name = e.name.replace("\n", " ") if e.name else None  # type: ignore[attr-defined]
        out[inode] = (e.size_bytes, e.exp_name, name)  # type: ignore[attr-defined]
    return out


def test_a_pinned_iterator_is_read_by_nobody_as_bufinfo_lists(bpffs: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Scene.start() as scene, heap_alloc("system", 8192) as odd:
        odd.set_name("pin\nned")
        assert main(["bpf", "pin"]) == 0
        try:
            out = capsys.readouterr().out
            assert out.startswith(f"pinned the dma-buf iterator at {DEFAULT_PIN} (mode 0444)")
            assert stat.S_IMODE(os.stat(DEFAULT_PIN).st_mode) == 0o444
            with open("/sys/kernel/debug/dma_buf/bufinfo", "rb") as f:
                entries = {e.inode: e for e in parse_bufinfo(f.read()).entries if e.inode is not None}

            def read() -> str:
                assert os.geteuid() == NOBODY
                got = read_pinned()
                return json.dumps([list(b) for b in got.buffers] + [got.skipped_lines, got.names_rejoined])

            code, text = call_as(NOBODY, read)
            assert code == 0, text
            *rows, skipped, rejoined = json.loads(text)
            assert (skipped, rejoined) == (0, 0)
            got = {b.inode: (b.size_bytes, b.exp_name, b.name) for b in (BpfBuffer(*r) for r in rows)}
            assert got == _expected_android(entries)
            assert got[odd.inode][2] == "pin ned"
            for role in ("mapped", "imported"):  # held by a mapping only, by the kernel only
                assert scene.expected[role].inode in got
            # the same, through Android's own reading of the format: what `cat` shows
            code, text = call_as(NOBODY, lambda: Path(DEFAULT_PIN).read_bytes().decode())
            assert code == 0 and text.count("\n") == 4 * len(entries)
        finally:
            assert main(["bpf", "unpin"]) == 0
    assert not os.path.exists(DEFAULT_PIN)
    assert not os.path.exists(os.path.dirname(DEFAULT_PIN))  # the directory pin made, gone with it


# Each kernel runs the test that applies to it (the lab counts a skip as a failure).
if HAS_DMABUF_ITER:
    del test_pin_on_a_kernel_without_the_iterator_says_so
else:
    del test_a_pinned_iterator_is_read_by_nobody_as_bufinfo_lists


def test_unprivileged_users_cannot_pin(bpffs: str) -> None:
    code, out = call_as(NOBODY, lambda: main(["bpf", "pin", os.path.join(bpffs, "mine")]))
    assert (code, out) == (0, "1")
    assert not os.path.exists(os.path.join(bpffs, "mine"))


def test_status_names_what_is_there(bpffs: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bpf", "status"]) == 0
    rows = {line[:16].strip(): line[16:].strip() for line in capsys.readouterr().out.splitlines()}
    assert rows["privileges"] == "ok"
    assert rows["task iterators"] == "ok"
    assert rows["task iterator"] == "ok"
    if HAS_DMABUF_ITER:
        assert rows["dma-buf iterator"] == "ok"
    else:
        assert rows["dma-buf iterator"] == "unavailable: kernel has no dma-buf BPF iterator (6.16+)"
    assert rows["bpffs"] == f"mounted at {BPFFS}"
    assert rows["pinned"].startswith(f"no pinned iterator at {DEFAULT_PIN}")
