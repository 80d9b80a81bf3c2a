"""The exporter class table: matching rules, and that every entry says what the issue asks for."""

from __future__ import annotations

import pytest

from dmabuf_inspect import exporters as classes

COARSE = {"udmabuf", "heap", "gpu-prime", "unknown", "i915", "amdgpu", "nouveau", "virtio-gpu", "v4l2", "vfio"}


@pytest.mark.parametrize(
    ("exp_name", "cls", "key"),
    [
        ("udmabuf", "udmabuf", "udmabuf"),
        ("system", "heap", "heap-system"),
        ("system-uncached", "heap", "heap-system-uncached"),
        ("linux,cma", "heap", "heap-cma"),
        ("reserved", "heap", "heap-cma"),
        ("default_cma_region", "heap", "heap-cma"),
        ("tee", "heap", "heap-tee"),
        ("protected,secure-video", "heap", "heap-tee"),
        ("drm", "gpu-prime", "gpu-prime"),
        ("i915", "i915", "i915"),
        ("amdgpu", "amdgpu", "amdgpu"),
        ("nouveau", "nouveau", "nouveau"),
        ("virtio_gpu", "virtio-gpu", "virtio-gpu"),
        ("videobuf2_vmalloc", "v4l2", "v4l2-vmalloc"),
        ("videobuf2_dma_contig", "v4l2", "v4l2-dma-contig"),
        ("videobuf2-dma-sg", "v4l2", "v4l2-dma-sg"),
        ("videobuf2_something_new", "v4l2", "v4l2"),
        ("mystery", "unknown", "unknown"),
        ("", "unknown", "unknown"),
    ],
)
def test_lookup(exp_name: str, cls: str, key: str) -> None:
    entry = classes.lookup(exp_name)
    assert (entry.exporter_class, entry.key) == (cls, key)
    assert classes.exporter_class(exp_name) == cls


def test_a_name_under_dev_dma_heap_is_a_heap() -> None:
    assert classes.exporter_class("carveout", frozenset({"carveout"})) == "heap"
    assert classes.lookup("carveout", {"carveout"}) is classes.GENERIC_HEAP
    assert classes.exporter_class("carveout") == "unknown"


def test_table_names_win_over_heap_names() -> None:
    # "drm" is never a heap's buffer, even if some heap were called that
    assert classes.exporter_class("drm", frozenset({"drm"})) == "gpu-prime"


def test_longest_prefix_wins() -> None:
    assert classes.lookup("videobuf2_dma_contig").key == "v4l2-dma-contig"
    assert classes.lookup("videobuf2").key == "v4l2"


def test_keys_and_exact_names_are_unique() -> None:
    keys = [e.key for e in classes.entries()]
    assert len(keys) == len(set(keys))
    names = [n for e in classes.TABLE for n in e.exact]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("entry", classes.entries(), ids=lambda e: e.key)
def test_every_entry_is_described(entry: classes.ExporterClass) -> None:
    assert entry.exporter_class in COARSE
    assert entry.backing in {"shmem", "pages", "contiguous", "device", "mmio", "vmalloc", "unknown"}
    assert entry.mmap_cost and entry.sync_cost
    if entry in classes.TABLE:
        assert entry.source.startswith(("drivers/", "include/"))
        assert all(entry.matches(n) for n in entry.exact)


def test_the_issue_s_exporters_are_all_covered() -> None:
    keys = {e.key for e in classes.entries()}
    assert {
        "udmabuf",
        "heap-system",
        "heap-system-uncached",
        "heap-cma",
        "gpu-prime",
        "i915",
        "amdgpu",
        "nouveau",
        "v4l2-vmalloc",
        "v4l2-dma-contig",
        "v4l2-dma-sg",
        "virtio-gpu",
        "heap-tee",
        "unknown",
    } <= keys


def test_kernel_quirks_are_noted() -> None:
    udmabuf = " ".join(classes.lookup("udmabuf").notes)
    assert "VM_PFNMAP" in udmabuf and "6.11" in udmabuf and "Rss" in udmabuf
    assert any("vm_file" in n for n in classes.lookup("i915").notes)
    assert any("etnaviv" in n and "vm_file" in n for n in classes.lookup("drm").notes)


def test_caching_and_backing_facts() -> None:
    assert classes.lookup("system").backing == "pages" and classes.lookup("system").cpu_cached
    assert classes.lookup("system-uncached").cpu_cached is False
    assert classes.lookup("linux,cma").backing == "contiguous"
    assert classes.lookup("udmabuf").backing == "shmem"
    assert classes.lookup("tee").cpu_mmap is False
