"""The trees captured from the lab's real kernels read back as the scene that was captured.

fixtures/lab-6.12 and fixtures/lab-7.3 were written by `run_lab.py --capture-fixtures`: the
scene of tests/kernel/scene.py (see each README.md), captured by `dmabuf-inspect capture`.
"""

from __future__ import annotations

import pytest
from paths import FIXTURES

from dmabuf_inspect.kernel.reader import Roots
from dmabuf_inspect.model import Buffer, Snapshot
from dmabuf_inspect.scan.snapshot import collect

FIXTURES = FIXTURES
KiB = 1024


@pytest.fixture(params=["6.12", "7.3"])
def lab(request: pytest.FixtureRequest) -> tuple[str, Snapshot]:
    series: str = request.param
    tree = FIXTURES / f"lab-{series}"
    assert (tree / "README.md").is_file(), f"{tree} missing: python3 tests/kernel/run_lab.py --capture-fixtures"
    return series, collect(Roots.from_tree(str(tree)))


def _one(snap: Snapshot, exporter: str, size: int) -> Buffer:
    (b,) = [b for b in snap.buffers if (b.exporter, b.size_bytes) == (exporter, size)]
    return b


def test_kernel_and_sources(lab: tuple[str, Snapshot]) -> None:
    series, snap = lab
    assert snap.kernel.startswith(series + ".")
    assert snap.sources["bufinfo"] == "ok"
    assert snap.sources["sysfs"].startswith("unavailable")
    assert [h.name for h in snap.heaps] == ["system"]
    assert snap.udmabuf is not None and snap.udmabuf.present
    assert snap.errors == () and snap.denied_pids == ()


def test_the_scene_buffers(lab: tuple[str, Snapshot]) -> None:
    _, snap = lab
    assert sorted((b.exporter, b.size_bytes) for b in snap.buffers) == sorted(
        [
            ("udmabuf", 64 * KiB),
            ("system", 1024 * KiB),
            ("system", 256 * KiB),
            ("system", 128 * KiB),
            ("drm", 16 * KiB),
            ("drm", 4 * KiB),
            ("udmabuf", 32 * KiB),
        ]
    )
    comm = {p.pid: p.comm for p in snap.processes}
    assert sorted(comm.values()) == ["scene-fork", "scene-owner", "scene-recv"]
    owner = next(pid for pid, c in comm.items() if c == "scene-owner")

    shared = _one(snap, "udmabuf", 64 * KiB)
    assert sorted(comm[h.pid] for h in shared.holders) == ["scene-fork", "scene-owner", "scene-recv"]
    by_comm = {comm[h.pid]: h for h in shared.holders}
    assert by_comm["scene-owner"].fds == by_comm["scene-fork"].fds  # inherited by fork
    assert (shared.count, shared.kernel_refs) == (3, 0)

    named = _one(snap, "system", 1024 * KiB)
    assert (named.name, named.count, named.kernel_refs) == ("scene-named", 1, 0)

    mapped = _one(snap, "system", 256 * KiB)
    ((h),) = mapped.holders
    assert (h.pid, h.fds, h.maps, h.mapped_bytes) == (owner, (), 1, 256 * KiB)
    assert (mapped.count, mapped.kernel_refs, mapped.size_source) == (1, 0, "bufinfo")

    pymapped = _one(snap, "system", 128 * KiB)
    ((h),) = pymapped.holders
    assert (len(h.fds), h.maps, h.mapped_bytes, pymapped.count) == (2, 1, 128 * KiB, 3)

    for size, signaled in ((16 * KiB, False), (4 * KiB, True)):
        b = _one(snap, "drm", size)
        assert (b.exporter_class, b.count, b.kernel_refs, b.attachments) == ("gpu-prime", 3, 2, ())
        ((f),) = b.fences
        assert (f.usage, f.seqno, f.signaled) == ("write", "1", signaled)
        names = ("", "") if f.context is not None and signaled else ("vgem", "unbound")
        assert (f.driver, f.timeline) == names

    imported = _one(snap, "udmabuf", 32 * KiB)
    assert (imported.holders, imported.attachments, imported.count, imported.kernel_refs) == ((), ("vgem",), 3, 3)


def test_fence_format_per_kernel(lab: tuple[str, Snapshot]) -> None:
    series, snap = lab
    contexts = [f.context for b in snap.buffers for f in b.fences]
    if series == "6.12":
        assert contexts == [None, None]  # `write fence:vgem unbound seq 1 ...`
    else:
        assert all(c is not None and c.isdigit() for c in contexts)  # `write fence:CTX:1 unbound vgem ...`


def test_totals(lab: tuple[str, Snapshot]) -> None:
    _, snap = lab
    t = snap.totals
    assert (t.buffers, t.bytes, t.userspace_bytes, t.kernel_only_bytes) == (7, 1560576, 1527808, 32768)
