"""Exporter classes: what an `exp_name` says about a buffer's backing and CPU cost.

The table is data: one `ExporterClass` per exporter the kernel can name in fdinfo `exp_name`.
`lookup()` picks the entry (exact names first, then the longest prefix, then a name found in
`/dev/dma_heap`, then "unknown"); `exporter_class()` returns its short class for the snapshot.

Sources are the exporters' own files in the kernel tree, named in each entry's `source`.
Where an exporter sets no name, DEFINE_DMA_BUF_EXPORT_INFO leaves exp_name = KBUILD_MODNAME,
the module's name with `-` turned into `_` (so `videobuf2_dma_contig`, `virtio_gpu`, `i915`, `tee`),
and every export that goes through drm_gem_prime_export() says `drm`.
"""

from __future__ import annotations

from dmabuf_inspect.records import NamedTuple

UDMABUF = "udmabuf"
HEAP = "heap"
GPU_PRIME = "gpu-prime"
VFIO = "vfio"
UNKNOWN = "unknown"

# "mmio": a device's PCI BAR (memory-mapped I/O), never RAM; "device": a driver that may place the
# buffer in its device's memory (VRAM) or in system pages.
TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Literal

    Backing = Literal["shmem", "pages", "contiguous", "device", "mmio", "vmalloc", "unknown"]


class ExporterClass(NamedTuple):
    """What is known about one exporter: how its memory is backed and what CPU access costs."""

    key: str  # unique table key, e.g. "heap-system"
    exporter_class: str  # what exporter_class() returns: udmabuf | heap | gpu-prime | driver | unknown
    exact: tuple[str, ...]  # exp_name values matched as they are
    prefixes: tuple[str, ...]  # exp_name prefixes
    backing: Backing
    cpu_cached: bool | None  # cacheable CPU mapping; None when it depends on the buffer
    mmap_cost: str  # expected CPU mmap cost, qualitative
    sync_cost: str  # what DMA_BUF_IOCTL_SYNC does
    cpu_mmap: bool = True  # False: the exporter has no mmap op, mmap fails with EINVAL
    # True: the buffer is device memory, never RAM (a PCI BAR): counted apart from RAM in totals
    # and Rss/Pss, and never touched from the CPU by `bench`.
    device_memory: bool = False
    revocable: bool = False  # the exporter may revoke the buffer under its importers (device reset, ...)
    notes: tuple[str, ...] = ()  # kernel quirks, with the kernel version
    source: str = ""  # the exporter's file in the kernel tree

    def matches(self, exp_name: str) -> bool:
        return exp_name in self.exact or any(exp_name.startswith(p) for p in self.prefixes)


TABLE: tuple[ExporterClass, ...] = (
    ExporterClass(
        key="udmabuf",
        exporter_class=UDMABUF,
        exact=("udmabuf",),
        prefixes=(),
        backing="shmem",
        cpu_cached=True,
        mmap_cost="cheap: the memfd's pages are pinned at create; in 6.12 the first fault "
        "inserts PFNs for the whole mapping, so later touches do not fault",
        sync_cost="first BEGIN builds and maps an sg table; then dma_sync_sgtable_for_cpu/device, "
        "a no-op on cache-coherent x86",
        notes=(
            "mappings are VM_PFNMAP since 6.11 (vmf_insert_pfn): smaps shows no Rss for them",
            "the memfd must be sealed F_SEAL_SHRINK and not F_SEAL_WRITE; 6.12 also takes hugetlbfs memfds",
            "module parameter size_limit_mb (default 64) caps one buffer",
        ),
        source="drivers/dma-buf/udmabuf.c",
    ),
    ExporterClass(
        key="heap-system",
        exporter_class=HEAP,
        exact=("system", "system_heap"),
        prefixes=(),
        backing="pages",
        cpu_cached=True,
        mmap_cost="mmap itself populates every PTE (remap_pfn_range per page), so mmap cost grows "
        "with size and first touch does not fault",
        sync_cost="syncs only attachments that are mapped for a device, and the kernel vmap; "
        "nearly free for a buffer nobody imported",
        notes=(
            "pages come from the buddy allocator in orders 8, 4 and 0 (1 MiB, 64 KiB, 4 KiB), zeroed",
            "exp_name is the heap name since the 2020 patch 'dma-buf: heap-helpers: Set dma-buf "
            "exporter name'; older kernels printed KBUILD_MODNAME",
        ),
        source="drivers/dma-buf/heaps/system_heap.c",
    ),
    ExporterClass(
        key="heap-system-uncached",
        exporter_class=HEAP,
        exact=("system-uncached", "system-uncached-dma32"),
        prefixes=(),
        backing="pages",
        cpu_cached=False,
        mmap_cost="write-combined mapping: writes stream, reads from the CPU are slow (uncached)",
        sync_cost="no cache maintenance: the pages were flushed at allocation",
        notes=("not in mainline: an Android common kernel heap (John Stultz's 2020 patch)",),
        source="drivers/dma-buf/heaps/system_heap.c (Android common kernel)",
    ),
    ExporterClass(
        key="heap-cma",
        exporter_class=HEAP,
        exact=("default_cma_region", "linux,cma", "reserved", "default-pool", "cma_heap"),
        prefixes=(),
        backing="contiguous",
        cpu_cached=True,
        mmap_cost="cheap per page: one fault per page maps the existing contiguous pages",
        sync_cost="syncs mapped attachments and the kernel vmap; nearly free when none",
        notes=(
            "the default CMA heap is named default_cma_region since 6.17; before, reserved, "
            "linux,cma or default-pool depending on the platform",
            "each reusable shared-dma-pool region in the device tree gets a heap named after its node",
        ),
        source="drivers/dma-buf/heaps/cma_heap.c",
    ),
    ExporterClass(
        key="heap-tee",
        exporter_class=HEAP,
        exact=("tee",),
        prefixes=("protected,",),
        backing="contiguous",
        cpu_cached=None,
        mmap_cost="none: protected memory, the exporter has no mmap op",
        sync_cost="none: no begin/end_cpu_access",
        cpu_mmap=False,
        notes=(
            "heaps protected,secure-video, protected,trusted-ui and protected,secure-video-record "
            "(the 2025 TEE protected-memory series); their buffers print exp_name tee "
            "(KBUILD_MODNAME)",
        ),
        source="drivers/tee/tee_heap.c",
    ),
    ExporterClass(
        key="gpu-prime",
        exporter_class=GPU_PRIME,
        exact=("drm",),
        prefixes=(),
        backing="unknown",
        cpu_cached=None,
        mmap_cost="depends on the driver: shmem-backed GEM (vgem, virtio-gpu guest blobs) faults "
        "per page; VRAM goes through the PCI BAR, uncached or write-combined",
        sync_cost="driver-specific; vgem maps write-combined because it has no begin/end_cpu_access",
        notes=(
            "every export through drm_gem_prime_export() says drm: amdgpu, nouveau, etnaviv, "
            "msm, panfrost, vgem and most others",
            "etnaviv swaps vm_file to its shmem file for cached objects: no /dmabuf: line in maps",
        ),
        source="drivers/gpu/drm/drm_prime.c",
    ),
    ExporterClass(
        key="i915",
        exporter_class="i915",
        exact=("i915",),
        prefixes=(),
        backing="shmem",
        cpu_cached=True,
        mmap_cost="shmem pages faulted per page; on discrete parts with local memory, through the BAR",
        sync_cost="moves the object to the CPU domain: clflush on parts without a shared LLC",
        notes=("i915_gem_dmabuf_mmap() swaps vm_file to the GEM shmem file: mappings do not show as /dmabuf: in maps",),
        source="drivers/gpu/drm/i915/gem/i915_gem_dmabuf.c",
    ),
    ExporterClass(
        key="amdgpu",
        exporter_class="amdgpu",
        exact=("amdgpu",),
        prefixes=(),
        backing="device",
        cpu_cached=None,
        mmap_cost="GTT buffers: system pages; VRAM: through the BAR, write-combined",
        sync_cost="begin_cpu_access may migrate the buffer from VRAM to GTT",
        notes=(
            "mainline amdgpu_gem_prime_export() calls drm_gem_prime_export(), so fdinfo says drm; "
            "this entry matches only an exporter that names itself amdgpu",
        ),
        source="drivers/gpu/drm/amd/amdgpu/amdgpu_dma_buf.c",
    ),
    ExporterClass(
        key="nouveau",
        exporter_class="nouveau",
        exact=("nouveau",),
        prefixes=(),
        backing="device",
        cpu_cached=None,
        mmap_cost="TTM object: system pages or VRAM through the BAR",
        sync_cost="no begin/end_cpu_access of its own",
        notes=("mainline nouveau exports through drm_gem_prime_export(), so fdinfo says drm",),
        source="drivers/gpu/drm/nouveau/nouveau_prime.c",
    ),
    ExporterClass(
        key="virtio-gpu",
        exporter_class="virtio-gpu",
        exact=("virtio_gpu", "virtio-gpu"),
        prefixes=(),
        backing="shmem",
        cpu_cached=None,
        mmap_cost="guest shmem pages faulted per page; host blobs map host memory",
        sync_cost="none of its own",
        source="drivers/gpu/drm/virtio/virtgpu_prime.c",
    ),
    ExporterClass(
        key="v4l2-vmalloc",
        exporter_class="v4l2",
        exact=(),
        prefixes=("videobuf2_vmalloc", "videobuf2-vmalloc"),
        backing="vmalloc",
        cpu_cached=True,
        mmap_cost="cached vmalloc pages mapped at mmap (remap_vmalloc_range)",
        sync_cost="none: no begin/end_cpu_access",
        source="drivers/media/common/videobuf2/videobuf2-vmalloc.c",
    ),
    ExporterClass(
        key="v4l2-dma-contig",
        exporter_class="v4l2",
        exact=(),
        prefixes=("videobuf2_dma_contig", "videobuf2-dma-contig"),
        backing="contiguous",
        cpu_cached=None,
        mmap_cost="dma_mmap_attrs: coherent memory, uncached or write-combined on non-coherent "
        "platforms unless the queue asked for non-coherent buffers",
        sync_cost="a no-op for coherent buffers; non-coherent ones (V4L2_MEMORY_FLAG_NON_COHERENT) "
        "are synced since a 2025 fix",
        source="drivers/media/common/videobuf2/videobuf2-dma-contig.c",
    ),
    ExporterClass(
        key="v4l2-dma-sg",
        exporter_class="v4l2",
        exact=(),
        prefixes=("videobuf2_dma_sg", "videobuf2-dma-sg"),
        backing="pages",
        cpu_cached=True,
        mmap_cost="cached pages mapped at mmap (vm_map_pages)",
        sync_cost="dma_sync_sgtable_for_cpu/device",
        source="drivers/media/common/videobuf2/videobuf2-dma-sg.c",
    ),
    ExporterClass(
        key="v4l2",
        exporter_class="v4l2",
        exact=(),
        prefixes=("videobuf2",),
        backing="unknown",
        cpu_cached=None,
        mmap_cost="depends on the videobuf2 allocator",
        sync_cost="depends on the videobuf2 allocator",
        source="drivers/media/common/videobuf2/",
    ),
    ExporterClass(
        key="vfio",
        exporter_class=VFIO,
        exact=("vfio_pci_core",),
        prefixes=(),
        backing="mmio",
        cpu_cached=False,
        mmap_cost="none before the VFIO dma-buf mmap series: the exporter has no mmap op (7.3); "
        "the device's MMIO is uncached in any case",
        sync_cost="none: no begin/end_cpu_access",
        cpu_mmap=False,
        device_memory=True,
        revocable=True,
        notes=(
            "a range of a PCI device's BAR exported by vfio-pci (VFIO_DEVICE_FEATURE_DMA_BUF, 6.19+), "
            "for peer-to-peer DMA by an importer (RDMA, a GPU); device memory, not RAM",
            "revoked (importers lose their mappings) when the device is reset, its memory decoding is "
            "turned off, or its VFIO device is closed",
            "nothing in fdinfo or bufinfo names the device or BAR (7.3): the holder's VFIO device fds "
            "(fdinfo vfio-device-syspath, 6.15+) name the device",
        ),
        source="drivers/vfio/pci/vfio_pci_dmabuf.c",
    ),
)

GENERIC_HEAP = ExporterClass(
    key="heap",
    exporter_class=HEAP,
    exact=(),
    prefixes=(),
    backing="unknown",
    cpu_cached=None,
    mmap_cost="depends on the heap",
    sync_cost="depends on the heap",
    notes=("a heap under /dev/dma_heap that this table does not describe",),
    source="drivers/dma-buf/dma-heap.c",
)

UNKNOWN_EXPORTER = ExporterClass(
    key="unknown",
    exporter_class=UNKNOWN,
    exact=(),
    prefixes=(),
    backing="unknown",
    cpu_cached=None,
    mmap_cost="unknown: measure it with `dmabuf-inspect bench --fd N`",
    sync_cost="unknown",
)

_EXACT: dict[str, ExporterClass] = {name: e for e in TABLE for name in e.exact}
_PREFIXES: tuple[tuple[str, ExporterClass], ...] = tuple(
    sorted(((p, e) for e in TABLE for p in e.prefixes), key=lambda pe: -len(pe[0]))
)


def lookup(exp_name: str, heap_names: frozenset[str] | set[str] = frozenset()) -> ExporterClass:
    """The table entry for an exporter name; `heap_names` are the names under /dev/dma_heap."""
    entry = _EXACT.get(exp_name)
    if entry is not None:
        return entry
    for prefix, candidate in _PREFIXES:
        if exp_name.startswith(prefix):
            return candidate
    if exp_name in heap_names:
        return GENERIC_HEAP
    return UNKNOWN_EXPORTER


def exporter_class(exp_name: str, heap_names: frozenset[str] | set[str] = frozenset()) -> str:
    """The class of an exporter name: udmabuf, heap, gpu-prime, a driver name, or unknown."""
    return lookup(exp_name, heap_names).exporter_class


def is_device_memory(exp_name: str) -> bool:
    """True when the exporter's buffers are device memory (a PCI BAR), never RAM."""
    return lookup(exp_name).device_memory


def entries() -> tuple[ExporterClass, ...]:
    """Every entry, the generic heap and unknown last."""
    return (*TABLE, GENERIC_HEAP, UNKNOWN_EXPORTER)
