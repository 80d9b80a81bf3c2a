"""What each fixture tree under fixtures/ holds, written out by hand from its scenario.

Not derived from the generator (fixtures/make_fixtures.py) nor from the collector: these are the
answers a snapshot of the tree must give. Per fixture:

    kernel        the release in the tree's proc/sys/kernel/osrelease ("unknown" if unreadable)
    sources_ok    the sources that read "ok"; every other source reads "unavailable: ..."
    heaps         names under dev/dma_heap
    udmabuf       (present, size_limit_mb, list_limit)
    buffers       inode -> the buffer:
        size_bytes, exporter, class (classes.exporter_class), name (exact, surrogateescape),
        count (file references: fds + mappings (VMAs) + kernel references),
        holders   pid -> (fds sorted, mappings (VMAs), mapped bytes),
        attachments (devices, in bufinfo order), fences (how many bufinfo prints),
        kernel_refs (count - fds - mappings)
    processes     pid -> the processes that hold a dma-buf (Pss: size // number of holders;
                  start_ticks: field 22 of its stat)
    totals        buffers, bytes, userspace_bytes, kernel_only_bytes (None without bufinfo)

k4.19-legacy can not be keyed by inode (see its README): it has `buffers = None` and says
instead what the tree does show, plus the scenario's hidden `truth`.
"""

from __future__ import annotations

from typing import Any

MIB = 1 << 20

HOSTILE_NAME = "\x1b[31mred\x1b[0m\ttab\nnl\udcff"  # bytes 1b 5b 33 31 6d ... 0a 6e 6c ff

EXPECTED: dict[str, dict[str, Any]] = {
    "k6.12": {
        "kernel": "6.12.107+deb13-amd64",
        "sources_ok": {"fdinfo", "maps", "bufinfo", "heaps", "udmabuf"},
        "heaps": ("system",),
        "udmabuf": (True, 64, 1024),
        "buffers": {
            30001: {
                "size_bytes": 2097152,
                "exporter": "udmabuf",
                "class": "udmabuf",
                "name": None,
                "count": 2,
                "holders": {1204: ((7,), 1, 2097152)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            30002: {
                "size_bytes": 4194304,
                "exporter": "system",
                "class": "heap",
                "name": "camera-preview",
                "count": 5,
                "holders": {812: ((23, 24), 1, 1048576), 1204: ((9,), 0, 0)},
                "attachments": ("0000:00:02.0",),
                "fences": 1,
                "kernel_refs": 1,
            },
            30003: {
                "size_bytes": 1048576,
                "exporter": "drm",
                "class": "gpu-prime",
                "name": None,
                "count": 2,
                "holders": {1350: ((5,), 0, 0)},
                "attachments": (),
                "fences": 1,
                "kernel_refs": 1,
            },
            30004: {
                "size_bytes": 65536,
                "exporter": "system",
                "class": "heap",
                "name": "mmap-only",
                "count": 2,
                "holders": {1350: ((), 2, 65536)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            30005: {
                "size_bytes": 16777216,
                "exporter": "system",
                "class": "heap",
                "name": None,
                "count": 1,
                "holders": {},
                "attachments": ("0000:00:02.0",),
                "fences": 1,
                "kernel_refs": 1,
            },
        },
        "processes": {
            812: {
                "comm": "weston",
                "cmdline": "/usr/bin/weston --backend=drm",
                "uid": 1000,
                "ppid": 1,
                "buffers": 1,
                "rss_bytes": 4194304,
                "pss_bytes": 2097152,
                "start_ticks": 1500,
            },
            1204: {
                "comm": "camera-app",
                "cmdline": "/usr/bin/camera-app --preview",
                "uid": 1000,
                "ppid": 812,
                "buffers": 2,
                "rss_bytes": 6291456,
                "pss_bytes": 4194304,
                "start_ticks": 4000,
            },
            1350: {
                "comm": "gpu-test",
                "cmdline": "./gpu-test --vgem",
                "uid": 1000,
                "ppid": 1100,
                "buffers": 2,
                "rss_bytes": 1114112,
                "pss_bytes": 1114112,
                "start_ticks": 6000,
            },
        },
        "totals": {"buffers": 5, "bytes": 24182784, "userspace_bytes": 7405568, "kernel_only_bytes": 16777216},
    },
    "k7.3": {
        "kernel": "7.3.4+deb13-amd64",
        "sources_ok": {"fdinfo", "maps", "bufinfo", "heaps", "udmabuf"},
        "heaps": ("linux,cma", "system"),
        "udmabuf": (True, 64, 1024),
        "buffers": {
            40001: {
                "size_bytes": 4096,
                "exporter": "drm",
                "class": "gpu-prime",
                "name": None,
                "count": 2,
                "holders": {2001: ((6,), 0, 0)},
                "attachments": (),
                "fences": 2,
                "kernel_refs": 1,
            },
            40002: {
                "size_bytes": 1048576,
                "exporter": "udmabuf",
                "class": "udmabuf",
                "name": HOSTILE_NAME,
                "count": 2,
                "holders": {2002: ((4,), 1, 1048576)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            40003: {
                "size_bytes": 8192,
                "exporter": "system",
                "class": "heap",
                "name": "shared-7.3",
                "count": 2,
                "holders": {2001: ((9,), 0, 0), 2002: ((5,), 0, 0)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            40004: {
                "size_bytes": 262144,
                "exporter": "drm",
                "class": "gpu-prime",
                "name": None,
                "count": 1,
                "holders": {},
                "attachments": ("vgem",),
                "fences": 1,
                "kernel_refs": 1,
            },
            40005: {
                "size_bytes": 1048576,
                "exporter": "linux,cma",
                "class": "heap",
                "name": None,
                "count": 1,
                "holders": {2003: ((), 1, 1048576)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
        },
        "processes": {
            2001: {
                "comm": "vgem-test",
                "cmdline": "/usr/local/bin/vgem-test",
                "uid": 0,
                "ppid": 1,
                "buffers": 2,
                "rss_bytes": 12288,
                "pss_bytes": 8192,
                "start_ticks": 2000,
            },
            2002: {
                "comm": "udmabuf-test",
                "cmdline": "/usr/local/bin/udmabuf-test --name " + HOSTILE_NAME,
                "uid": 0,
                "ppid": 1,
                "buffers": 2,
                "rss_bytes": 1056768,
                "pss_bytes": 1052672,
                "start_ticks": 2100,
            },
            2003: {
                "comm": "cma-user",
                "cmdline": "/usr/local/bin/cma-user",
                "uid": 1000,
                "ppid": 1,
                "buffers": 1,
                "rss_bytes": 1048576,
                "pss_bytes": 1048576,
                "start_ticks": 2200,
            },
        },
        "totals": {"buffers": 5, "bytes": 2371584, "userspace_bytes": 2109440, "kernel_only_bytes": 262144},
    },
    "k5.10-sysfs": {
        # fdinfo has no ino: line before 5.14. Every fd-held buffer here is the only one of its
        # (size, exp_name, name, count) in bufinfo and sysfs, so fds can be joined on those.
        "kernel": "5.10.198-android12-9-00085-g226a9632f13d",
        "sources_ok": {"fdinfo", "maps", "bufinfo", "sysfs", "heaps", "udmabuf"},
        "heaps": ("system",),
        "udmabuf": (True, 64, 1024),
        "buffers": {
            2048: {
                "size_bytes": 3145728,
                "exporter": "system",
                "class": "heap",
                "name": "GraphicBuffer",
                "count": 3,
                "holders": {540: ((31,), 1, 3145728), 733: ((12,), 0, 0)},
                "attachments": (),
                "fences": 2,
                "kernel_refs": 0,
            },
            2049: {
                "size_bytes": 65536,
                "exporter": "udmabuf",
                "class": "udmabuf",
                "name": None,
                "count": 1,
                "holders": {733: ((14,), 0, 0)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            2050: {
                "size_bytes": 1048576,
                "exporter": "system",
                "class": "heap",
                "name": None,
                "count": 1,
                "holders": {540: ((), 1, 1048576)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
            2051: {
                "size_bytes": 1843200,
                "exporter": "videobuf2_dma_contig",
                "class": "v4l2",
                "name": None,
                "count": 1,
                "holders": {},
                "attachments": ("ae00000.qcom,mdss_mdp",),
                "fences": 0,
                "kernel_refs": 1,
            },
        },
        "processes": {
            540: {
                "comm": "surfaceflinger",
                "cmdline": "/system/bin/surfaceflinger",
                "uid": 1000,
                "ppid": 1,
                "buffers": 2,
                "rss_bytes": 4194304,
                "pss_bytes": 2621440,
                "start_ticks": 700,
            },
            733: {
                "comm": "camera.provider",
                "cmdline": "/vendor/bin/hw/android.hardware.camera.provider@2.7-service",
                "uid": 1047,
                "ppid": 1,
                "buffers": 2,
                "rss_bytes": 3211264,
                "pss_bytes": 1638400,
                "start_ticks": 800,
            },
        },
        "totals": {"buffers": 4, "bytes": 6103040, "userspace_bytes": 4259840, "kernel_only_bytes": 1843200},
    },
    "k4.19-legacy": {
        # Before 5.3 every dma-buf is the one anon inode's file: fd links read anon_inode:dmabuf,
        # fdinfo has only pos/flags/mnt_id, maps say anon_inode:dmabuf with the shared inode, and
        # bufinfo has no ino column. Buffers can be listed (bufinfo) and fds counted, not joined.
        "kernel": "4.19.0-27-amd64",
        "sources_ok": {"fdinfo", "maps", "bufinfo"},
        "heaps": (),
        "udmabuf": (False, None, None),
        "buffers": None,
        "bufinfo_entries": [  # in file order (newest first)
            {"size_bytes": 4194304, "exporter": "drm", "count": 1, "attachments": ("0000:00:02.0",), "fences": 0},
            {"size_bytes": 614400, "exporter": "videobuf2_vmalloc", "count": 2, "attachments": (), "fences": 0},
            {"size_bytes": 8388608, "exporter": "drm", "count": 3, "attachments": (), "fences": 2},
        ],
        "dmabuf_fds": {900: (20,), 1500: (45, 52)},  # anon_inode:dmabuf links, buffer unknown
        "anon_dmabuf_maps": {1500: (1, 614400)},  # (mappings, bytes) of anon_inode:dmabuf lines
        "anon_inode": 10357,  # the inode every anon_inode:dmabuf mapping shows: not a buffer's
        "totals": {"buffers": 3, "bytes": 13197312, "userspace_bytes": None, "kernel_only_bytes": None},
        "truth": {  # what the scenario was; not recoverable from the tree
            "drm-8MiB": {"holders": {900: ((20,), 0, 0), 1500: ((45,), 0, 0)}, "kernel_refs": 1},
            "webcam-614400": {"holders": {1500: ((52,), 1, 614400)}, "kernel_refs": 0},
            "drm-4MiB": {"holders": {}, "kernel_refs": 1},
        },
    },
    "no-dmabufs": {
        "kernel": "6.12.107+deb13-amd64",
        "sources_ok": {"fdinfo", "maps"},
        "heaps": (),
        "udmabuf": (False, None, None),
        "buffers": {},
        "processes": {},
        "totals": {"buffers": 0, "bytes": 0, "userspace_bytes": 0, "kernel_only_bytes": None},
    },
    "hostile-links": {
        # Only pid 700 is whole and inside the tree. Everything else leads outside (or nowhere)
        # and must be refused or skipped, never read: see OUTSIDE_LINKS.
        "kernel": "unknown",
        "buffers": {
            50001: {
                "size_bytes": 4096,
                "exporter": "system",
                "class": "heap",
                "name": "ok",
                "count": 1,
                "holders": {700: ((3,), 0, 0)},
                "attachments": (),
                "fences": 0,
                "kernel_refs": 0,
            },
        },
        "processes": {
            700: {
                "comm": "legit",
                "cmdline": "/usr/bin/legit",
                "uid": 1000,
                "ppid": 1,
                "buffers": 1,
                "rss_bytes": 4096,
                "pss_bytes": 4096,
                "start_ticks": 700,
            },
        },
        "totals": {"buffers": 1, "bytes": 4096, "userspace_bytes": 4096, "kernel_only_bytes": None},
    },
}

# Paths in fixtures/hostile-links that lead outside the tree, and their targets.
OUTSIDE_LINKS: dict[str, str] = {
    "proc/sys/kernel/osrelease": "/proc/sys/kernel/osrelease",
    "proc/666/comm": "/etc/hostname",
    "proc/666/cmdline": "/proc/self/cmdline",
    "proc/666/maps": "/etc/passwd",
    "proc/666/fdinfo/3": "/etc/hostname",
    "proc/666/fdinfo/4": "../" * 24 + "etc/hostname",
    "proc/667": "/proc/self",
    "proc/668/fd": "/proc/self/fd",
    "proc/668/fdinfo": "/proc/self/fdinfo",
    "sys/kernel/debug/dma_buf/bufinfo": "/etc/passwd",
    "sys/kernel/dmabuf/buffers/7000/size": "/etc/hostname",
    "sys/kernel/dmabuf/buffers/7001": "/sys/kernel/mm",
    "sys/module/udmabuf/parameters/size_limit_mb": "/sys/module/udmabuf/parameters/size_limit_mb",
    "dev/dma_heap/system": "/dev/zero",
    "dev/udmabuf": "/dev/null",
}
DANGLING_LINKS: dict[str, str] = {"proc/666/fdinfo/5": "no-such-file"}

# What a scan of hostile-links refuses and records (errors of kind "outside"), one per link. The
# sysfs walk stops at whichever of its two outside links it meets first (listdir order).
OUTSIDE_REFUSED: frozenset[str] = frozenset(
    {
        "proc/sys/kernel/osrelease",
        "proc/666/fdinfo/3",
        "proc/666/fdinfo/4",
        "proc/666/maps",
        "proc/667",
        "proc/668/fd",
        "sys/kernel/debug/dma_buf/bufinfo",
    }
)
OUTSIDE_REFUSED_ONE_OF: frozenset[str] = frozenset(
    {"sys/kernel/dmabuf/buffers/7000/size", "sys/kernel/dmabuf/buffers/7001"}
)
