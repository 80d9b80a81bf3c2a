"""The eBPF assembler: encodings pinned against what clang/bpftool print for the same instructions,
labels, and the programs it builds staying within what the verifier takes."""

from __future__ import annotations

import struct

import pytest

from dmabuf_inspect.kernel.bpf import asm as A
from dmabuf_inspect.kernel.bpf import programs
from dmabuf_inspect.kernel.bpf.asm import Asm, AsmError


def hexes(a: Asm) -> list[str]:
    code = a.assemble()
    return [code[i : i + 8].hex() for i in range(0, len(code), 8)]


def test_encodings_match_the_instruction_set() -> None:
    a = Asm()
    a.ldx(A.DW, A.R6, A.R1, 0)  # r6 = *(u64 *)(r1 + 0)
    a.ldx(A.W, A.R9, A.R1, 16)  # w9 = *(u32 *)(r1 + 16)
    a.stx(A.DW, A.FP, -8, A.R2)  # *(u64 *)(r10 - 8) = r2
    a.st(A.B, A.FP, -1, 32)  # *(u8 *)(r10 - 1) = 32
    a.mov(A.R0, 0).movr(A.R1, A.R6).add(A.R2, -16)
    a.alur(A.ADD, A.R1, A.FP)
    a.call(127).exit()
    assert hexes(a) == [
        "7916000000000000",
        "6119100000000000",
        "7b2af8ff00000000",
        "720affff20000000",
        "b700000000000000",
        "bf61000000000000",
        "07020000f0ffffff",
        "0fa1000000000000",
        "850000007f000000",
        "9500000000000000",
    ]


def test_jumps_count_slots_after_themselves_and_ld_imm64_takes_two() -> None:
    a = Asm()
    a.jmp(A.JEQ, A.R1, 0, "end")  # 0
    a.ld_imm64(A.R2, 0x1122334455667788)  # 1, 2
    a.jmpr(A.JNE, A.R3, A.R4, "end")  # 3
    a.ja("start_over")  # 4
    a.label("end").mov(A.R0, 0)  # 5
    a.label("start_over").exit()  # 6
    insns = a.insns()
    assert [i.off for i in insns] == [4, 0, 0, 1, 1, 0, 0]
    assert (insns[1].imm, insns[2].imm) == (0x55667788, 0x11223344)
    assert insns[3].code == A.JMP | A.JNE | A.X and (insns[3].dst, insns[3].src) == (3, 4)


def test_map_value_load_names_the_map() -> None:
    a = Asm().ld_map_value(A.R2, 7, 4)
    assert hexes(a) == ["1822000007000000", "0000000004000000"]


def test_negative_ld_imm64_halves_are_signed_imms() -> None:
    a = Asm().ld_imm64(A.R1, -1)
    assert [i.imm for i in a.insns()] == [-1, -1]
    assert struct.unpack("<q", bytes.fromhex(hexes(a)[0])[4:] + bytes.fromhex(hexes(a)[1])[4:])[0] == -1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda a: a.ja("nowhere"), "undefined label nowhere"),
        (lambda a: a.label("x").label("x"), "label x defined twice"),
        (lambda a: a.mov(A.R1, 1 << 31), "does not fit in 32 bits"),
        (lambda a: a.ldx(A.DW, A.R1, A.R2, 1 << 15), "does not fit in 16 bits"),
        (lambda a: a.mov(11, 0), "no register r11"),
    ],
)
def test_what_it_cannot_encode_is_an_asm_error(build: object, message: str) -> None:
    a = Asm()
    with pytest.raises(AsmError, match=message):
        build(a)  # type: ignore[operator]
        a.assemble()


LAYOUT = programs.Layout(
    dmabuf_iter_id=1,
    task_file_iter_id=2,
    task_vma_iter_id=3,
    ctx_dmabuf=8,
    ctx_task_file_task=8,
    ctx_task_file_fd=16,
    ctx_task_file_file=24,
    ctx_task_vma_task=8,
    ctx_task_vma_vma=16,
    meta_seq=0,
    dma_buf_size=0,
    dma_buf_file=8,
    dma_buf_attachments=16,
    dma_buf_exp_name=64,
    dma_buf_name=72,
    attachment_node=16,
    attachment_dev=8,
    device_init_name=80,
    device_kobj_name=0,
    file_f_inode=32,
    file_f_flags=40,
    file_f_mode=4,
    file_private_data=24,
    file_count=168,
    file_count_is_ref=True,
    inode_i_ino=64,
    inode_i_sb=40,
    super_block_s_magic=112,
    task_pid=2872,
    task_tgid=2876,
    vma_vm_start=0,
    vma_vm_end=8,
    vma_vm_pgoff=80,
    vma_vm_file=88,
    vma_vm_flags=32,
    task_iter_id=4,
    ctx_task_task=8,
    task_real_parent=2504,
    task_real_cred=3008,
    cred_uid=8,
    task_comm=3032,
    task_start_boottime=2728,
    task_flags=44,
)


@pytest.mark.parametrize(
    "program",
    [
        programs.dmabuf_records(LAYOUT),
        programs.dmabuf_android(LAYOUT, 3),
        programs.task_file_records(LAYOUT),
        programs.task_vma_records(LAYOUT),
        programs.task_records(LAYOUT),
    ],
)
def test_programs_stay_small_use_the_stack_within_512_bytes_and_end_in_exit(program: bytes) -> None:
    insns = [struct.unpack_from("<BBhi", program, k) for k in range(0, len(program), 8)]
    assert len(insns) < 4096  # BPF_MAXINSNS, the unprivileged limit: far below it
    assert insns[-1][0] == A.JMP | A.EXIT
    frame = [
        off
        for code, regs, off, _ in insns
        if code & 0x07 in (A.LDX, A.ST, A.STX) and (regs & 0xF if code & 0x07 != A.LDX else regs >> 4) == A.FP
    ]
    assert frame and min(frame) >= -512 and max(frame) < 0


def test_the_layout_round_trips_through_the_cache_text() -> None:
    from dmabuf_inspect.kernel.bpf import source

    assert source.parse_layout_text(source.layout_text(LAYOUT)) == LAYOUT


def test_the_record_formats_are_the_sizes_the_programs_write() -> None:
    assert programs.FD.size == 16
    assert programs.VMA.size == 80
    assert programs.BUFFER.size == 136
    assert programs.ANDROID_FORMAT.endswith(b"\0") and programs.ANDROID_FORMAT.count(b"%") == 4


def test_a_task_record_needs_every_field_it_reads() -> None:
    assert LAYOUT.identifies_tasks
    lacking = LAYOUT._replace(task_start_boottime=None)
    assert not lacking.identifies_tasks
    with pytest.raises(ValueError, match="lacks what a TASK record reads"):
        programs.task_records(lacking)
