#!/usr/bin/env python3
"""Inside a lab VM: build the e2e scene (scene.py), capture it with `dmabuf-inspect capture`.

    python3 tests/kernel/capture_lab.py OUT_DIR     # run by `run_lab.py --capture-fixtures`

Writes OUT_DIR (a capture tree plus README.md). The capture runs in this process, already
warm, right after the unsignalled vgem fence is attached: vgem signals it after 10 s.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from scene import FORK_COMM, NAMED, OWNER_COMM, RECV_COMM, Scene

from dmabuf_inspect.cli.main import main as cli_main
from dmabuf_inspect.kernel.bufinfo import parse_bufinfo
from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Buffer, Snapshot
from dmabuf_inspect.scan.snapshot import collect

ATTEMPTS = 4
ROLE_TEXT = {
    "shared": f"udmabuf held by fd in {OWNER_COMM}, in its fork {FORK_COMM} (same fd number) and in {RECV_COMM} "
    "(received over a unix socket)",
    "named": f"system-heap buffer named `{NAMED}` with DMA_BUF_SET_NAME",
    "mapped": "system-heap buffer mapped with its fd closed",
    "pymapped": "system-heap buffer mapped with Python's mmap, which dup()s the fd: 2 fds, 1 mapping",
    "fenced": "vgem dumb buffer (64x64x32) PRIME export with an unsignalled vgem write fence",
    "signaled": "vgem dumb buffer (32x32x32) PRIME export with a signalled vgem write fence",
    "imported": "udmabuf imported into vgem, then its fd closed: kernel-only, attached to `vgem`",
}


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):g} MiB"


def _holders(b: Buffer) -> str:
    parts = []
    for h in b.holders:
        what = [f"fd {', '.join(map(str, h.fds))}" if h.fds else "no fd"]
        if h.maps:
            what.append(f"{h.maps} mapping ({_kib(h.mapped_bytes)})")
        parts.append(f"{h.pid}: {' + '.join(what)}")
    return "; ".join(parts) or "none (kernel-only)"


def _fences(b: Buffer) -> str:
    out = []
    for f in b.fences:
        ctx = f"{f.context}:{f.seqno}" if f.context is not None else f"seq {f.seqno}"
        names = " ".join(x for x in (f.driver, f.timeline) if x) or "(no names)"
        out.append(f"{f.usage} {ctx} {names} {'signalled' if f.signaled else 'unsignalled'}")
    return "; ".join(out) or "-"


def readme(series: str, snap: Snapshot, scene: Scene) -> str:
    role_of = {e.inode: e.role for e in scene.expected.values()}
    rows = [
        "| inode | role | size | exporter | class | name | count | holders (pid: fds / mappings) "
        "| kernel refs | attachments | fences |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in snap.buffers:
        rows.append(
            f"| {b.inode} | {role_of.get(b.inode, '?')} | {_kib(b.size_bytes)} | {b.exporter} | {b.exporter_class} "
            f"| {b.name or '-'} | {b.count} | {_holders(b)} | {b.kernel_refs} | {', '.join(b.attachments) or '-'} "
            f"| {_fences(b)} |"
        )
    procs = [
        f"- {p.pid} `{p.comm}` (ppid {p.ppid}): {p.buffers} buffers, Rss {p.rss_bytes} bytes, Pss {p.pss_bytes} bytes"
        for p in snap.processes
    ]
    roles = [f"- **{role}**: {text}" for role, text in ROLE_TEXT.items()]
    t = snap.totals
    return "\n".join(
        [
            f"# lab-{series} — captured from the lab's real {series} kernel",
            "",
            f"Kernel `{snap.kernel}`, booted by `python3 tests/kernel/run_lab.py --capture-fixtures "
            f"--kernel {series}` (qemu TCG, virtme-ng). Inside the VM, `tests/kernel/capture_lab.py` built the",
            "end-to-end scene of `tests/kernel/scene.py` (the one `test_scene_e2e.py` checks) and ran",
            "`dmabuf-inspect capture` on it. Nothing here was edited by hand. The capture keeps only",
            "the processes that hold dma-bufs, only their dma-buf fds, and only the dma-buf lines of",
            "their maps.",
            "",
            "The scene:",
            "",
            *roles,
            "",
            "As `dmabuf-inspect --tree` reads it back:",
            "",
            *rows,
            "",
            "Processes:",
            "",
            *procs,
            "",
            f"Totals: {t.buffers} buffers, {t.bytes} bytes; userspace-held {t.userspace_bytes}; "
            f"kernel-only {t.kernel_only_bytes}.",
            "",
            "Kernel refs: a vgem PRIME export keeps 2 (obj->dma_buf and the exporting file's PRIME",
            "handle cache); the vgem import of a udmabuf keeps 3 (the imported GEM object, obj->dma_buf,",
            "the handle cache).",
            "",
        ]
    )


def fence_unsignalled(tree: str, inode: int) -> bool:
    with open(os.path.join(tree, "sys", "kernel", "debug", "dma_buf", "bufinfo"), "rb") as f:
        info = parse_bufinfo(f.read())
    (entry,) = [e for e in info.entries if e.inode == inode]
    return any(not fence.signaled for fence in entry.fences)


def main(out: str) -> int:
    series = ".".join(os.uname().release.split(".")[:2])
    with Scene.start() as scene:
        fenced = scene.expected["fenced"].inode
        for attempt in range(1, ATTEMPTS + 1):
            shutil.rmtree(out, ignore_errors=True)
            attached = scene.attach_fresh_fence()
            rc = cli_main(["capture", out])
            took = time.monotonic() - attached
            print(f"capture_lab: attempt {attempt}: capture exited {rc} {took:.1f} s after the fence", flush=True)
            if rc == 0 and fence_unsignalled(out, fenced):
                break
        else:
            print("capture_lab: the vgem fence signalled (10 s timeout) before every capture", file=sys.stderr)
            return 1
        snap = collect(Roots.from_tree(out))
        with open(os.path.join(out, "README.md"), "w") as f:
            f.write(readme(series, snap, scene))
    print(f"capture_lab: wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
