"""bpf(2)'s edges without a kernel: the verifier's reason picked from its log, the error lines,
the privilege check, the 6.16-6.18 cut-off, and reading a pin that isn't there or isn't allowed."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.kernel.bpf import source, syscall
from dmabuf_inspect.kernel.bpf.programs import Layout
from dmabuf_inspect.kernel.bpf.syscall import NEEDS_ROOT, BpfError, VerifierError, verifier_reason

# A real refusal (6.18), trimmed: the reason is the line before the statistics.
REFUSED = """func#0 @0
0: R1=ctx() R10=fp0
0: (79) r6 = *(u64 *)(r1 +0)
func 'bpf_iter_task_file' arg0 has btf_id 11882 type STRUCT 'bpf_iter_meta'
1: R1=ctx() R6=trusted_ptr_bpf_iter_meta()
6: (79) r2 = *(u64 *)(r8 +32)         ; R2=ptr_inode() R8=ptr_file()
12: (5d) if r5 != r3 goto pc+9        ; R3=scalar(smin=0,smax=umax=0xffffffff)
13: (79) r2 = *(u64 *)(r2 +16384)
access beyond struct inode at off 16384 size 8
processed 14 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0
"""

NULL_CHECK = """0: R1=ctx() R10=fp0
; struct task_struct *task = ctx->task @ prog.c:12
1: (79) r7 = *(u64 *)(r1 +8)          ; R1=ctx() R7=ptr_or_null_task_struct(id=1)
from 4 to 9: R7=ptr_or_null_task_struct(id=1)
9: (61) r4 = *(u32 *)(r7 +1264)
R7 invalid mem access 'ptr_or_null_'
verification time 24 usec
stack depth 16
processed 9 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


def test_the_verifiers_reason_is_its_last_line_that_is_no_trace() -> None:
    assert verifier_reason(REFUSED) == "access beyond struct inode at off 16384 size 8"
    assert verifier_reason(NULL_CHECK) == "R7 invalid mem access 'ptr_or_null_'"
    assert verifier_reason("") == "no reason in its log"


def test_a_verifier_error_is_one_line_and_keeps_the_log() -> None:
    exc = VerifierError("the task_file program", verifier_reason(REFUSED), REFUSED, errno.EACCES)
    assert str(exc) == "the verifier refused the task_file program: access beyond struct inode at off 16384 size 8"
    assert exc.errno == errno.EACCES and exc.log == REFUSED
    assert isinstance(exc, DmabufInspectError) and isinstance(exc, OSError)
    assert source.reason_of(exc) == str(exc)


def test_missing_privileges_read_as_the_issue_says() -> None:
    assert NEEDS_ROOT == "needs CAP_BPF and CAP_PERFMON (root)"
    assert source.reason_of(BpfError("loading the dmabuf program: x", errno.EPERM)) == NEEDS_ROOT
    assert (
        source.reason_of(source.BpfUnavailable(source.NO_DMABUF_ITER)) == "kernel has no dma-buf BPF iterator (6.16+)"
    )


def test_bpf_number_per_machine() -> None:
    assert syscall.sys_bpf_number("x86_64") == 321
    assert syscall.sys_bpf_number("aarch64") == 280
    assert syscall.sys_bpf_number("vax") is None


def test_attr_fields_land_at_their_offsets() -> None:
    attr = syscall._attr((0, "I", 26), (68, "I", 28), (108, "I", 70186), (8, "Q", 0x1122334455667788))
    assert len(attr) == syscall.ATTR_BYTES == 144
    assert attr[0:4] == (26).to_bytes(4, "little") and attr[68:72] == (28).to_bytes(4, "little")
    assert attr[108:112] == (70186).to_bytes(4, "little")
    assert attr[8:16] == bytes.fromhex("8877665544332211")


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ("000001ffffffffff", True),  # root
        ("000000c000000000", True),  # CAP_BPF and CAP_PERFMON
        ("0000000000200000", True),  # CAP_SYS_ADMIN
        ("0000008000000000", False),  # CAP_BPF alone
        ("0000000000000000", False),
    ],
)
def test_capable_reads_the_effective_set(tmp_path: Path, caps: str, expected: bool) -> None:
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{caps}\nCapBnd:\t000001ffffffffff\n")
    assert source.capable(str(status)) is expected
    assert source.capable(str(tmp_path / "missing")) is False


def test_the_6_16_iterator_cut_off_is_refused_only_where_it_exists() -> None:
    full = (os.sysconf("SC_PAGE_SIZE") << 3) - 100
    with pytest.raises(source.BpfUnavailable, match=r"6\.16-6\.18 stops after \d+ KiB \(fixed in 6\.19\)"):
        source.check_dmabuf_complete(full, 512, "6.17.2-arch1")
    source.check_dmabuf_complete(full, 512, "6.19.0")
    source.check_dmabuf_complete(full, 512, "7.3.4+deb13-amd64")
    source.check_dmabuf_complete(1000, 512, "6.17.2")  # a short first read is the whole list


def test_reading_a_missing_pin_says_who_makes_one(tmp_path: Path) -> None:
    with pytest.raises(source.BpfUnavailable) as caught:
        source.read_pinned(str(tmp_path / "none"))
    assert caught.value.reason == f"no pinned iterator at {tmp_path / 'none'} (root pins one: dmabuf-inspect bpf pin)"


def test_a_saved_copy_of_a_pin_reads_like_the_pin(tmp_path: Path) -> None:
    saved = tmp_path / "iter"
    saved.write_bytes(b"1033\n4096\nframe\nsystem\n1034\n8192\n\nudmabuf\n")
    read = source.read_pinned(str(saved))
    assert [(b.inode, b.name, b.exp_name) for b in read.buffers] == [(1033, "frame", "system"), (1034, None, "udmabuf")]


def test_layout_cache_keeps_a_parse_per_btf(tmp_path: Path) -> None:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("this kernel has no BTF")
    source._layouts.clear()  # what another test loaded: this one parses
    first = source.load_layout(cache_dir=str(tmp_path))
    (cached,) = tmp_path.glob("bpf-layout-*.txt")
    boot = Path(source.BOOT_ID).read_text().strip()
    assert cached.name.startswith(f"bpf-layout-{boot}-")
    source._layouts.clear()
    assert source.load_layout(cache_dir=str(tmp_path)) == first  # read back from the file
    cached.write_text("{not a layout")
    source._layouts.clear()
    assert source.load_layout(cache_dir=str(tmp_path)) == first  # a broken cache is parsed anew


def test_layout_text_reads_back_and_refuses_anything_else() -> None:
    layout = Layout._make([7] * len(Layout._fields))._replace(
        dmabuf_iter_id=None, file_count_is_ref=True, ctx_dmabuf=-8
    )
    text = source.layout_text(layout)
    assert text.startswith(source.LAYOUT_SCHEMA + "\n")
    assert source.parse_layout_text(text) == layout
    lines = text.splitlines(keepends=True)
    broken = [
        "dmabuf-inspect-bpf-layout/2\n" + "".join(lines[1:]),  # another schema
        "".join(lines[:-1]),  # a field missing
        "".join(lines) + lines[-1],  # a field twice
        "".join(lines) + "no_such_field 1\n",
        text.replace(" None\n", " nil\n", 1),
        text.replace(" 7\n", " 7.5\n", 1),
        "",
    ]
    for bad in broken:
        assert source.parse_layout_text(bad) is None, bad


def test_the_c_call_writes_each_pointer_into_attr_and_gives_the_errno() -> None:
    import ctypes
    import struct

    from dmabuf_inspect.kernel import _fdwalk

    log = bytearray(64)
    for pointers, errnos in [((), (errno.EBADF, errno.EPERM)), (((8, log),), (errno.EINVAL, errno.EPERM))]:
        # BPF_ITER_CREATE on a link fd that is not open; with a pointer where ITER_CREATE has no
        # field, which a kernel refuses (a field it does not know must be 0)
        attr = syscall._attr((0, "I", 2**31 - 1))
        with pytest.raises(OSError) as c_error:
            _fdwalk.bpf(syscall.ITER_CREATE, attr, pointers)
        for offset, buf in pointers:
            address = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
            assert struct.unpack_from("<Q", attr, offset)[0] == address
        with pytest.raises(OSError) as ctypes_error:
            syscall._ctypes_bpf(syscall.ITER_CREATE, syscall._attr((0, "I", 2**31 - 1)), pointers)
        assert c_error.value.errno == ctypes_error.value.errno and c_error.value.errno in errnos


@pytest.mark.parametrize(
    ("attr", "pointers", "error"),
    [
        (bytearray(16), ((16, b"x"),), ValueError),  # past the end of attr
        (bytearray(16), ((4, b"x"),), ValueError),  # not where a u64 can be
        (bytearray(16), ((-8, b"x"),), ValueError),
        (bytearray(144), tuple((0, b"x") for _ in range(9)), ValueError),
        (bytearray(16), ((0,),), TypeError),
        (bytearray(16), ((0, "text"),), TypeError),
        (b"\0" * 16, (), TypeError),  # attr must be writable
    ],
)
def test_the_c_call_refuses_what_it_cannot_pass(attr: Any, pointers: Any, error: type[Exception]) -> None:
    from dmabuf_inspect.kernel import _fdwalk

    with pytest.raises(error):
        _fdwalk.bpf(syscall.ITER_CREATE, attr, pointers)


def test_a_missing_btf_is_the_kernels_config(tmp_path: Path) -> None:
    with pytest.raises(source.BpfUnavailable, match="no "):
        source.load_layout(str(tmp_path / "vmlinux"))
