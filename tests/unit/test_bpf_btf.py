"""The BTF parser: on crafted blobs (every way to be broken gives one BtfError line), and on this
machine's own /sys/kernel/btf/vmlinux where it has one."""

from __future__ import annotations

import os
import struct

import pytest

from dmabuf_inspect.kernel.bpf import btf as B
from dmabuf_inspect.kernel.bpf.btf import Btf, BtfError, Field
from dmabuf_inspect.kernel.bpf.programs import Layout


class Builder:
    """A BTF blob, type by type (ids from 1), as the kernel lays it out."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        at = self.strings.find(b"\0" + name.encode() + b"\0")
        if at >= 0:
            return at + 1
        at = len(self.strings)
        self.strings += name.encode() + b"\0"
        return at

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"", flag: bool = False) -> int:
        info = (int(flag) << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name: str, size: int) -> int:
        return self.add(name, B.INT, 0, size, struct.pack("<I", size * 8))

    def ptr(self, to: int) -> int:
        return self.add("", B.PTR, 0, to)

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]], kind: int = B.STRUCT) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), t, bits) for n, t, bits in members)
        return self.add(name, kind, len(members), size, extra)

    def blob(self, magic: int = B.MAGIC, version: int = 1) -> bytes:
        header = struct.pack("<HBBIIIII", magic, version, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + self.types + self.strings


def sample() -> tuple[Builder, dict[str, int]]:
    b = Builder()
    ids: dict[str, int] = {}
    ids["long"] = b.int_("long unsigned int", 8)
    ids["int"] = b.int_("int", 4)
    ids["size_t"] = b.add("size_t", B.TYPEDEF, 0, ids["long"])
    ids["const_size_t"] = b.add("", B.CONST, 0, ids["size_t"])
    ids["char"] = b.int_("char", 1)
    ids["char_p"] = b.ptr(ids["char"])
    ids["fwd"] = b.add("dma_buf", B.FWD, 0, 0)  # a forward declaration first: struct() must skip it
    ids["counter"] = b.struct_("atomic_t", 8, [("counter", ids["long"], 0)])
    ids["anon"] = b.struct_("", 16, [("a", ids["int"], 0), ("b", ids["int"], 32)], kind=B.UNION)
    ids["dma_buf"] = b.struct_(
        "dma_buf",
        96,
        [
            ("size", ids["const_size_t"], 0),
            ("file", ids["char_p"], 64),
            ("", ids["anon"], 128),
            ("refs", ids["counter"], 256),
            ("exp_name", ids["char_p"], 512),
            ("name", ids["char_p"], 576),
        ],
    )
    ids["dma_buf_p"] = b.ptr(ids["dma_buf"])
    ids["proto"] = b.add(
        "",
        B.FUNC_PROTO,
        2,
        ids["int"],
        struct.pack("<IIII", b.s("meta"), ids["char_p"], b.s("dmabuf"), ids["dma_buf_p"]),
    )
    ids["iter_struct"] = b.struct_("bpf_iter_dmabuf", 8, [("x", ids["long"], 0)])
    ids["func"] = b.add("bpf_iter_dmabuf", B.FUNC, 1, ids["proto"])
    ids["enum"] = b.add(
        "bpf_func_id", B.ENUM, 2, 4, struct.pack("<IiIi", b.s("BPF_FUNC_unspec"), 0, b.s("BPF_FUNC_seq_write"), 127)
    )
    ids["enum64"] = b.add("big", B.ENUM64, 1, 8, struct.pack("<III", b.s("HUGE"), 1, 2))
    return b, ids


def test_crafted_blob_gives_struct_members_through_modifiers_and_anonymous_unions() -> None:
    b, ids = sample()
    btf = Btf(b.blob())
    assert btf.type_count == b.count
    assert btf.struct("dma_buf") == ids["dma_buf"]
    assert btf.field("dma_buf", "size") == Field(0, ids["long"], 8)
    assert btf.field("dma_buf", "name").offset_bytes == 72
    assert btf.field("dma_buf", "b") == Field(20, ids["int"], 4)  # in the anonymous union
    assert btf.field("dma_buf", "refs.counter") == Field(32, ids["long"], 8)
    assert btf.has_field("dma_buf", "exp_name") and not btf.has_field("dma_buf", "nothing")
    with pytest.raises(BtfError, match=r"no member refs\.nothing"):
        btf.field("dma_buf", "refs.nothing")


def test_crafted_blob_tells_a_func_from_a_struct_of_the_same_name() -> None:
    b, ids = sample()
    btf = Btf(b.blob())
    assert btf.ids_named("bpf_iter_dmabuf") == [ids["iter_struct"], ids["func"]]
    assert btf.find("bpf_iter_dmabuf", B.FUNC) == ids["func"]
    assert btf.find("bpf_iter_dmabuf", B.STRUCT) == ids["iter_struct"]
    assert btf.params(ids["func"]) == [("meta", ids["char_p"]), ("dmabuf", ids["dma_buf_p"])]
    assert btf.pointee(ids["dma_buf_p"]) == ids["dma_buf"]
    assert btf.enum_value("bpf_func_id", "BPF_FUNC_seq_write") == 127
    assert btf.enumerators(ids["enum64"]) == {"HUGE": 1 | 2 << 32}
    assert btf.find("bpf_iter_task_vma", B.FUNC) is None
    with pytest.raises(BtfError, match="no FUNC bpf_iter_task_vma"):
        btf.need("bpf_iter_task_vma", B.FUNC)


def test_a_big_endian_blob_reads_the_same() -> None:
    b, _ = sample()
    little = b.blob()
    words = struct.unpack(f"<{len(b.types) // 4}I", b.types)
    big = (
        struct.pack(">HBBIIIII", B.MAGIC, 1, 0, 24, 0, len(b.types), len(b.types), len(b.strings))
        + struct.pack(f">{len(words)}I", *words)
        + b.strings
    )
    assert Btf(big).field("dma_buf", "name") == Btf(little).field("dma_buf", "name")


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:10], "shorter than a BTF header"),
        (lambda d: b"\x7fELF" + d[4:], "not BTF"),
        (lambda d: d[:2] + b"\x02" + d[3:], "BTF version 2"),
        (lambda d: d[:-5], "truncated"),
        (lambda d: d[:24] + d[24:30] + b"\x00\x00\x00\x00\x00\x00" + d[36:], "kind 0"),
        (lambda d: d[:4] + struct.pack("<I", 1 << 20) + d[8:], "header length"),
        (lambda d: d[:8] + struct.pack("<I", 2) + d[12:], "aligned"),
    ],
)
def test_broken_blobs_give_one_line(mangle: object, message: str) -> None:
    b, _ = sample()
    with pytest.raises(BtfError) as caught:
        Btf(mangle(b.blob()), "crafted")  # type: ignore[operator]
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("crafted: ")


def test_an_unknown_kind_is_named() -> None:
    b, _ = sample()
    b.add("future", 25, 0, 0)
    with pytest.raises(BtfError, match=r"kind 25, unknown to this parser \(kinds 1-19\)"):
        Btf(b.blob())


def test_a_type_section_cut_in_a_record() -> None:
    b, _ = sample()
    blob = b.blob()
    # claim 4 bytes less of types: the last record (ENUM64, 24 bytes) is cut
    cut = blob[:12] + struct.pack("<I", len(b.types) - 4) + blob[16:]
    with pytest.raises(BtfError, match="truncated in type id"):
        Btf(cut)


def test_missing_file_says_which_config(tmp_path: object) -> None:
    with pytest.raises(BtfError, match="CONFIG_DEBUG_INFO_BTF"):
        Btf.load(os.path.join(str(tmp_path), "vmlinux"))


HOST_BTF = "/sys/kernel/btf/vmlinux"


@pytest.mark.skipif(not os.path.exists(HOST_BTF), reason="this kernel has no BTF")
def test_this_kernels_btf_gives_a_layout() -> None:
    btf = Btf.load()
    layout = Layout.from_btf(btf)
    assert btf.type_count > 10_000
    assert layout.task_file_iter_id is not None  # 5.8+
    assert btf.kind(layout.task_file_iter_id) == B.FUNC
    assert [n for n, _ in btf.params(layout.task_file_iter_id)] == ["meta", "task", "fd", "file"]
    assert (layout.ctx_task_file_fd, layout.ctx_task_file_file) == (16, 24)
    # the helpers' numbers are ABI: what syscall.py has pinned is what this kernel says
    from dmabuf_inspect.kernel.bpf import syscall as S

    for name, number in (
        ("BPF_FUNC_probe_read_kernel", S.FUNC_PROBE_READ_KERNEL),
        ("BPF_FUNC_probe_read_kernel_str", S.FUNC_PROBE_READ_KERNEL_STR),
        ("BPF_FUNC_seq_printf", S.FUNC_SEQ_PRINTF),
        ("BPF_FUNC_seq_write", S.FUNC_SEQ_WRITE),
    ):
        assert btf.enum_value("bpf_func_id", name) == number
    assert btf.enum_value("bpf_cmd", "BPF_ITER_CREATE") == S.ITER_CREATE
    assert btf.enum_value("bpf_cmd", "BPF_LINK_CREATE") == S.LINK_CREATE
    assert btf.enum_value("bpf_prog_type", "BPF_PROG_TYPE_TRACING") == S.PROG_TYPE_TRACING
    assert btf.enum_value("bpf_attach_type", "BPF_TRACE_ITER") == S.TRACE_ITER
