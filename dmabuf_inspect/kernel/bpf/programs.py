"""Our iterator programs, assembled for the running kernel from the offsets its BTF gives.

    Layout.from_btf(btf)          every offset and type id the programs use (a few dozen ints)
    dmabuf_records(layout)        iter/dmabuf: one binary BUFFER record per buffer (+ device names)
    dmabuf_android(layout, fd)    iter/dmabuf: Android's 4 lines per buffer (bpf_seq_printf)
    task_file_records(layout)     iter/task_file: one FD record per dma-buf fd of a process
    task_records(layout)          iter/task: one TASK record per process (who it is)
    task_vma_records(layout)      iter/task_vma: one VMA record per dma-buf mapping of a process

The programs read kernel memory the way the verifier allows a tracing program to: loads through
the iterator's typed pointers (PTR_TO_BTF_ID: the verifier checks each offset against BTF, and a
fault reads 0), and bpf_probe_read_kernel[_str] where a pointer has no struct type (strings,
`void *private_data`, container_of on a list). Nothing is locked: a buffer's name or attachments
that change during the walk may read half-old, never unsafely.

Task iterators visit every thread: each program keeps only a thread group's leader (pid == tgid),
so each process is reported once, as /proc/PID/fd and /proc/PID/maps show it. The pids are the
kernel's own (the initial pid namespace).
"""

import struct

from dmabuf_inspect.kernel.bpf.asm import (
    DW,
    FP,
    JEQ,
    JGE,
    JLE,
    JNE,
    JSET,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    Asm,
    B,
    H,
    W,
)
from dmabuf_inspect.kernel.bpf.btf import FUNC, PTR, Btf, BtfError
from dmabuf_inspect.kernel.bpf.syscall import (
    FUNC_PROBE_READ_KERNEL,
    FUNC_PROBE_READ_KERNEL_STR,
    FUNC_SEQ_PRINTF,
    FUNC_SEQ_WRITE,
)
from dmabuf_inspect.records import NamedTuple

DMA_BUF_MAGIC = 0x444D4142  # include/uapi/linux/magic.h: the dma-buf filesystem's s_magic
DMA_BUF_NAME_LEN = 32  # include/uapi/linux/dma-buf.h, the NUL included
EXPORTER_BYTES = 64  # exp_name is a driver's string of any length: longer ones are cut
DEVICE_NAME_BYTES = 32
MAX_ATTACHMENTS = 64  # counted; more reads as 64
MAX_DEVICE_NAMES = 8  # named; the rest only counted
MAX_FENCES = 0xFFFF  # counted up to this; more reads as this

# The records are in the machine's byte order, as the programs store them.
# struct { u64 inode, size, file_count; u32 f_flags, f_mode, attachments; u16 device_names, fences;
#          char exp_name[64], name[32]; }
# fences: the length of the buffer's reservation list (dma_resv.fences->num_fences): 0 when
# debugfs bufinfo would print no fence for it (it prints those of that list up to READ usage).
BUFFER = struct.Struct(f"=QQQIIIHH{EXPORTER_BYTES}s{DMA_BUF_NAME_LEN}s")
# After a BUFFER with device names, one or two records of the same size: struct { u64 marker;
# char names[4][32]; }. Every record 136 bytes: the reader splits them all in one C call.
NAMES_PER_RECORD = 4
DEVICES = struct.Struct(f"=Q{NAMES_PER_RECORD * DEVICE_NAME_BYTES}s")
DEVICES_MARKER = (1 << 64) - 1  # where a BUFFER has its inode: no inode is
assert DEVICES.size == BUFFER.size
# struct { u32 pid, fd; u64 inode; }
FD = struct.Struct("=IIQ")
# struct { u32 pid, pad; u64 start, end, pgoff, inode, vm_flags; char name[32]; }
VMA = struct.Struct(f"=IIQQQQQ{DMA_BUF_NAME_LEN}s")
# struct { u32 pid, ppid, uid, pad; u64 start_boottime; char comm[16]; }: what /proc/PID/status and
# stat say of a process (PPid, the real Uid, starttime in ns, comm), for a scan that found it
TASK_COMM_LEN = 16  # include/linux/sched.h
TASK = struct.Struct(f"=IIIIQ{TASK_COMM_LEN}s")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: /proc names a kernel thread otherwise than by comm
ANDROID_FORMAT = b"%lu\n%llu\n%s\n%s\n\0"  # Android's dmabufIter.c and the kernel's selftest

_NEWLINE, _SPACE = 0x0A, 0x20
# Every name Layout.from_btf() looks up, looked up together
_BTF_NAMES = (
    "bpf_iter_dmabuf",
    "bpf_iter_task_file",
    "bpf_iter_task_vma",
    "bpf_iter_meta",
    "seq",
    "dma_buf",
    "size",
    "file",
    "attachments",
    "exp_name",
    "name",
    "dma_buf_attachment",
    "node",
    "dev",
    "device",
    "init_name",
    "kobj",
    "file",
    "f_ref",
    "f_count",
    "f_inode",
    "f_flags",
    "f_mode",
    "private_data",
    "inode",
    "i_ino",
    "i_sb",
    "super_block",
    "s_magic",
    "task_struct",
    "pid",
    "tgid",
    "vm_area_struct",
    "vm_start",
    "vm_end",
    "vm_pgoff",
    "vm_file",
    "vm_flags",
    "resv",
    "dma_resv",
    "fences",
    "dma_resv_list",
    "num_fences",
    "bpf_iter_task",
    "real_parent",
    "real_cred",
    "cred",
    "uid",
    "comm",
    "start_boottime",
    "flags",
)


class Layout(NamedTuple):
    """What our programs need to know of one kernel, all from its BTF. None: the kernel has no
    such iterator."""

    dmabuf_iter_id: int | None  # FUNC bpf_iter_dmabuf (6.16+)
    task_file_iter_id: int | None  # FUNC bpf_iter_task_file (5.8+)
    task_vma_iter_id: int | None  # FUNC bpf_iter_task_vma (5.12+)
    ctx_dmabuf: int  # the context's offsets: 8 x the parameter's index in bpf_iter_<target>()
    ctx_task_file_task: int
    ctx_task_file_fd: int
    ctx_task_file_file: int
    ctx_task_vma_task: int
    ctx_task_vma_vma: int
    meta_seq: int
    dma_buf_size: int
    dma_buf_file: int
    dma_buf_attachments: int
    dma_buf_exp_name: int
    dma_buf_name: int
    attachment_node: int
    attachment_dev: int
    device_init_name: int
    device_kobj_name: int
    file_f_inode: int
    file_f_flags: int
    file_f_mode: int
    file_private_data: int
    file_count: int
    file_count_is_ref: bool  # file_ref_t f_ref (6.13+) holds count - 1; atomic_long_t f_count holds count
    inode_i_ino: int
    inode_i_sb: int
    super_block_s_magic: int
    task_pid: int
    task_tgid: int
    vma_vm_start: int
    vma_vm_end: int
    vma_vm_pgoff: int
    vma_vm_file: int
    vma_vm_flags: int
    # dma_buf.resv, dma_resv.fences, dma_resv_list.num_fences (5.19+); None: fences are not counted
    dma_buf_resv: int | None = None
    dma_resv_fences: int | None = None
    dma_resv_list_num_fences: int | None = None
    # iter/task (5.8+) and what a TASK record reads; None: processes are identified from /proc
    task_iter_id: int | None = None
    ctx_task_task: int = 8
    task_real_parent: int | None = None
    task_real_cred: int | None = None
    cred_uid: int | None = None
    task_comm: int | None = None
    task_start_boottime: int | None = None
    task_flags: int | None = None

    @property
    def counts_fences(self) -> bool:
        return None not in (self.dma_buf_resv, self.dma_resv_fences, self.dma_resv_list_num_fences)

    @property
    def identifies_tasks(self) -> bool:
        return None not in (
            self.task_iter_id,
            self.task_real_parent,
            self.task_real_cred,
            self.cred_uid,
            self.task_comm,
            self.task_start_boottime,
            self.task_flags,
        )

    @classmethod
    def from_btf(cls, btf: Btf) -> "Layout":
        def at(struct_name: str, path: str, size: int = 8) -> int:
            found = btf.field(struct_name, path)
            if found.size_bytes != size:
                raise BtfError(f"{btf.source}: {struct_name}.{path} is {found.size_bytes} bytes, expected {size}")
            return found.offset_bytes

        def ptr(struct_name: str, path: str) -> int:
            found = btf.field(struct_name, path)
            if btf.kind(found.type_id) != PTR:
                raise BtfError(f"{btf.source}: {struct_name}.{path} is no pointer")
            return found.offset_bytes

        def ctx(iter_id: int | None, param: str, default: int) -> int:
            if iter_id is None:
                return default
            names = [name for name, _ in btf.params(iter_id)]
            if param not in names:
                raise BtfError(f"{btf.source}: {btf.name(iter_id)}() has no parameter {param}")
            return 8 * names.index(param)

        btf.prefetch(_BTF_NAMES)
        dmabuf = btf.find("bpf_iter_dmabuf", FUNC)
        task_file = btf.find("bpf_iter_task_file", FUNC)
        task_vma = btf.find("bpf_iter_task_vma", FUNC)
        if btf.has_field("file", "f_ref"):
            count, is_ref = at("file", "f_ref"), True
        else:
            count, is_ref = at("file", "f_count"), False
        resv = fences = num_fences = None
        if all(
            btf.has_field(*f) for f in (("dma_buf", "resv"), ("dma_resv", "fences"), ("dma_resv_list", "num_fences"))
        ):
            resv, fences = ptr("dma_buf", "resv"), ptr("dma_resv", "fences")
            num_fences = at("dma_resv_list", "num_fences", 4)
        task = btf.find("bpf_iter_task", FUNC)
        identity: dict[str, int | None] = {}
        if task is not None and all(
            btf.has_field(*f)
            for f in (
                ("task_struct", "real_parent"),
                ("task_struct", "real_cred"),
                ("cred", "uid"),
                ("task_struct", "comm"),
                ("task_struct", "start_boottime"),  # 5.5+
                ("task_struct", "flags"),
            )
        ):
            identity = {
                "task_iter_id": task,
                "ctx_task_task": ctx(task, "task", 8),
                "task_real_parent": ptr("task_struct", "real_parent"),
                "task_real_cred": ptr("task_struct", "real_cred"),
                "cred_uid": at("cred", "uid", 4),
                "task_comm": at("task_struct", "comm", TASK_COMM_LEN),
                "task_start_boottime": at("task_struct", "start_boottime"),
                "task_flags": at("task_struct", "flags", 4),
            }
        return cls(
            dmabuf_iter_id=dmabuf,
            task_file_iter_id=task_file,
            task_vma_iter_id=task_vma,
            ctx_dmabuf=ctx(dmabuf, "dmabuf", 8),
            ctx_task_file_task=ctx(task_file, "task", 8),
            ctx_task_file_fd=ctx(task_file, "fd", 16),
            ctx_task_file_file=ctx(task_file, "file", 24),
            ctx_task_vma_task=ctx(task_vma, "task", 8),
            ctx_task_vma_vma=ctx(task_vma, "vma", 16),
            meta_seq=ptr("bpf_iter_meta", "seq"),
            dma_buf_size=at("dma_buf", "size"),
            dma_buf_file=ptr("dma_buf", "file"),
            dma_buf_attachments=at("dma_buf", "attachments", 16),
            dma_buf_exp_name=ptr("dma_buf", "exp_name"),
            dma_buf_name=ptr("dma_buf", "name"),
            attachment_node=at("dma_buf_attachment", "node", 16),
            attachment_dev=ptr("dma_buf_attachment", "dev"),
            device_init_name=ptr("device", "init_name"),
            device_kobj_name=ptr("device", "kobj.name"),
            file_f_inode=ptr("file", "f_inode"),
            file_f_flags=at("file", "f_flags", 4),
            file_f_mode=at("file", "f_mode", 4),
            file_private_data=ptr("file", "private_data"),
            file_count=count,
            file_count_is_ref=is_ref,
            inode_i_ino=at("inode", "i_ino"),
            inode_i_sb=ptr("inode", "i_sb"),
            super_block_s_magic=at("super_block", "s_magic"),
            task_pid=at("task_struct", "pid", 4),
            task_tgid=at("task_struct", "tgid", 4),
            vma_vm_start=at("vm_area_struct", "vm_start"),
            vma_vm_end=at("vm_area_struct", "vm_end"),
            vma_vm_pgoff=at("vm_area_struct", "vm_pgoff"),
            vma_vm_file=ptr("vm_area_struct", "vm_file"),
            vma_vm_flags=at("vm_area_struct", "vm_flags"),
            dma_buf_resv=resv,
            dma_resv_fences=fences,
            dma_resv_list_num_fences=num_fences,
            **identity,  # type: ignore[arg-type]
        )


def _zero(a: Asm, start: int, length: int) -> None:
    for off in range(start, start + length, 8):
        a.st(DW, FP, off, 0)


def _dma_buf_check(a: Asm, layout: Layout, file: int, scratch: int, magic: int) -> None:
    """Go to "out" unless `file` is on the filesystem with `magic`; leaves file->f_inode in scratch."""
    a.ldx(DW, scratch, file, layout.file_f_inode)
    a.ldx(DW, R5, scratch, layout.inode_i_sb)
    a.ldx(DW, R5, R5, layout.super_block_s_magic)
    a.jmp(JNE, R5, magic, "out")


def _leader_check(a: Asm, layout: Layout, task: int, tgid_to: int) -> None:
    """Go to "out" unless `task` leads its thread group; leaves the tgid in tgid_to."""
    a.ldx(W, R5, task, layout.task_pid)
    a.ldx(W, tgid_to, task, layout.task_tgid)
    a.jmpr(JNE, R5, tgid_to, "out")


def _out(a: Asm) -> bytes:
    a.label("out").mov(R0, 0).exit()
    return a.assemble()


def task_file_records(layout: Layout, magic: int = DMA_BUF_MAGIC) -> bytes:
    """iter/task_file: FD records, only for files whose superblock has `magic` (tests use another
    filesystem's to check the walk where no dma-buf exists)."""
    a = Asm()
    a.ldx(DW, R6, R1, 0)  # meta
    a.ldx(DW, R7, R1, layout.ctx_task_file_task)
    a.ldx(W, R9, R1, layout.ctx_task_file_fd)
    a.ldx(DW, R8, R1, layout.ctx_task_file_file)
    a.jmp(JEQ, R8, 0, "out").jmp(JEQ, R7, 0, "out")
    _dma_buf_check(a, layout, R8, R2, magic)
    _leader_check(a, layout, R7, R3)
    a.ldx(DW, R2, R2, layout.inode_i_ino)
    a.stx(W, FP, -16, R3).stx(W, FP, -12, R9).stx(DW, FP, -8, R2)
    a.ldx(DW, R1, R6, layout.meta_seq).movr(R2, FP).add(R2, -FD.size).mov(R3, FD.size).call(FUNC_SEQ_WRITE)
    return _out(a)


def task_records(layout: Layout) -> bytes:
    """iter/task: a TASK record per user process (thread group leaders, no kernel thread: stat
    names those by their worker's description, not comm), what /proc/PID/status and stat would say
    of it: PPid (real_parent's tgid), the real Uid (real_cred->uid, as status prints it),
    starttime in ns since boot (start_boottime; stat divides it into clock ticks) and comm."""
    if not layout.identifies_tasks:
        raise ValueError("this kernel's BTF lacks what a TASK record reads")
    assert layout.task_real_parent is not None and layout.task_real_cred is not None and layout.cred_uid is not None
    assert layout.task_comm is not None and layout.task_start_boottime is not None
    assert layout.task_flags is not None
    rec = -TASK.size
    a = Asm()
    a.ldx(DW, R6, R1, 0)  # meta
    a.ldx(DW, R7, R1, layout.ctx_task_task)
    a.jmp(JEQ, R7, 0, "out")
    a.ldx(W, R2, R7, layout.task_flags).jmp(JSET, R2, PF_KTHREAD, "out")
    _leader_check(a, layout, R7, R3)
    _zero(a, rec, TASK.size)
    a.stx(W, FP, rec, R3)
    a.ldx(DW, R2, R7, layout.task_real_parent).jmp(JEQ, R2, 0, "no_parent")
    a.ldx(W, R2, R2, layout.task_tgid).stx(W, FP, rec + 4, R2)
    a.label("no_parent")
    a.st(W, FP, rec + 8, -1)  # INVALID_UID, where no cred is read
    a.ldx(DW, R2, R7, layout.task_real_cred).jmp(JEQ, R2, 0, "no_cred")
    a.ldx(W, R2, R2, layout.cred_uid).stx(W, FP, rec + 8, R2)
    a.label("no_cred")
    a.ldx(DW, R2, R7, layout.task_start_boottime).stx(DW, FP, rec + 16, R2)
    a.movr(R3, R7).add(R3, layout.task_comm)
    a.movr(R1, FP).add(R1, rec + 24).mov(R2, TASK_COMM_LEN).call(FUNC_PROBE_READ_KERNEL)
    a.ldx(DW, R1, R6, layout.meta_seq).movr(R2, FP).add(R2, rec).mov(R3, TASK.size).call(FUNC_SEQ_WRITE)
    return _out(a)


def task_vma_records(layout: Layout, magic: int = DMA_BUF_MAGIC) -> bytes:
    """iter/task_vma: VMA records, only for mappings of files whose superblock has `magic`. The
    name is the dma-buf's (file->private_data is the struct dma_buf), as /proc/PID/maps prints it;
    only read when `magic` is the dma-buf filesystem's."""
    rec = -VMA.size
    a = Asm()
    a.ldx(DW, R6, R1, 0)  # meta
    a.ldx(DW, R7, R1, layout.ctx_task_vma_task)
    a.ldx(DW, R8, R1, layout.ctx_task_vma_vma)
    a.jmp(JEQ, R8, 0, "out").jmp(JEQ, R7, 0, "out")
    a.ldx(DW, R9, R8, layout.vma_vm_file)
    a.jmp(JEQ, R9, 0, "out")
    _dma_buf_check(a, layout, R9, R2, magic)
    _leader_check(a, layout, R7, R3)
    _zero(a, rec, VMA.size)
    a.stx(W, FP, rec, R3)
    a.ldx(DW, R2, R2, layout.inode_i_ino).stx(DW, FP, rec + 32, R2)
    for field_off, rec_off in ((layout.vma_vm_start, 8), (layout.vma_vm_end, 16), (layout.vma_vm_pgoff, 24)):
        a.ldx(DW, R2, R8, field_off).stx(DW, FP, rec + rec_off, R2)
    a.ldx(DW, R2, R8, layout.vma_vm_flags).stx(DW, FP, rec + 40, R2)
    if magic == DMA_BUF_MAGIC:
        # name = ((struct dma_buf *)file->private_data)->name; private_data is a void *: probe reads
        a.ldx(DW, R3, R9, layout.file_private_data).add(R3, layout.dma_buf_name)
        a.movr(R1, FP).add(R1, rec + 48).mov(R2, 8).call(FUNC_PROBE_READ_KERNEL)
        a.ldx(DW, R3, FP, rec + 48).st(DW, FP, rec + 48, 0)
        a.jmp(JEQ, R3, 0, "write")
        a.movr(R1, FP).add(R1, rec + 48).mov(R2, DMA_BUF_NAME_LEN).call(FUNC_PROBE_READ_KERNEL_STR)
    a.label("write")
    a.ldx(DW, R1, R6, layout.meta_seq).movr(R2, FP).add(R2, rec).mov(R3, VMA.size).call(FUNC_SEQ_WRITE)
    return _out(a)


def _probe_read_u64(a: Asm, slot: int) -> None:
    """*(u64 *)(fp + slot) = the kernel's u64 at the address in r3 (0 if it faults)."""
    a.movr(R1, FP).add(R1, slot).mov(R2, 8).call(FUNC_PROBE_READ_KERNEL)


def dmabuf_records(layout: Layout) -> bytes:
    """iter/dmabuf: a BUFFER record per buffer, then DEVICES records with the names of its first
    MAX_DEVICE_NAMES attached devices (dev_name(): init_name, else the kobject's name).

    file_count is read as file_count() does it; the iterator holds one reference of its own
    while the program runs (dma_buf_iter_begin/next, 6.16+), which the reader takes off."""
    groups = MAX_DEVICE_NAMES // NAMES_PER_RECORD
    devices = -groups * DEVICES.size  # the DEVICES records, each marker then 4 names
    rec = devices - BUFFER.size
    node_slot = rec - 8  # the attachment list node being visited, as a plain address
    tmp_slot = rec - 16

    def name_at(k: int) -> int:
        return devices + (k // NAMES_PER_RECORD) * DEVICES.size + 8 + (k % NAMES_PER_RECORD) * DEVICE_NAME_BYTES

    a = Asm()
    a.ldx(DW, R6, R1, 0)  # meta
    a.ldx(DW, R7, R1, layout.ctx_dmabuf)
    a.jmp(JEQ, R7, 0, "out")
    a.ldx(DW, R6, R6, layout.meta_seq)
    _zero(a, rec, BUFFER.size)  # the device names' records only when there are attachments
    a.ldx(DW, R2, R7, layout.dma_buf_size).stx(DW, FP, rec + 8, R2)
    a.ldx(DW, R8, R7, layout.dma_buf_file)
    a.jmp(JEQ, R8, 0, "no_file")
    a.ldx(DW, R2, R8, layout.file_f_inode).ldx(DW, R2, R2, layout.inode_i_ino).stx(DW, FP, rec, R2)
    a.ldx(DW, R2, R8, layout.file_count)
    if layout.file_count_is_ref:
        a.add(R2, 1)  # include/linux/file_ref.h (6.13+): a count of 0 means one reference
    a.stx(DW, FP, rec + 16, R2)
    a.ldx(W, R2, R8, layout.file_f_flags).stx(W, FP, rec + 24, R2)
    a.ldx(W, R2, R8, layout.file_f_mode).stx(W, FP, rec + 28, R2)
    a.label("no_file")
    a.ldx(DW, R3, R7, layout.dma_buf_exp_name)
    a.jmp(JEQ, R3, 0, "no_exporter")
    a.movr(R1, FP).add(R1, rec + 40).mov(R2, EXPORTER_BYTES).call(FUNC_PROBE_READ_KERNEL_STR)
    a.label("no_exporter")
    a.ldx(DW, R3, R7, layout.dma_buf_name)
    a.jmp(JEQ, R3, 0, "no_name")
    a.movr(R1, FP).add(R1, rec + 40 + EXPORTER_BYTES).mov(R2, DMA_BUF_NAME_LEN).call(FUNC_PROBE_READ_KERNEL_STR)
    a.label("no_name")
    # The attachments: dma_buf.attachments is the head of a list of dma_buf_attachment.node. A
    # typed pointer can't go back to the attachment (container_of: a negative offset), so the
    # nodes are plain addresses, read with probe_read and compared with the head's address.
    a.mov(R9, 0)  # attachments counted
    # head->next, through the typed pointer (no helper call for the many buffers with none)
    a.ldx(DW, R8, R7, layout.dma_buf_attachments)
    a.movr(R2, R7).add(R2, layout.dma_buf_attachments)
    a.jmpr(JEQ, R8, R2, "attachments_done")
    _zero(a, tmp_slot, rec - tmp_slot)
    _zero(a, devices, -devices)
    a.ld_imm64(R2, DEVICES_MARKER)
    for g in range(groups):
        a.stx(DW, FP, devices + g * DEVICES.size, R2)
    a.movr(R3, R7).add(R3, layout.dma_buf_attachments)
    _probe_read_u64(a, node_slot)  # head->next again, as a plain address
    a.label("next_attachment")
    a.ldx(DW, R8, FP, node_slot)
    a.jmp(JEQ, R8, 0, "attachments_done")
    a.movr(R2, R7).add(R2, layout.dma_buf_attachments)
    a.jmpr(JEQ, R8, R2, "attachments_done")
    a.jmp(JGE, R9, MAX_ATTACHMENTS, "attachments_done")
    a.add(R9, 1)
    for k in range(MAX_DEVICE_NAMES):  # unrolled: each name goes to a slot of its own
        a.jmp(JNE, R9, k + 1, f"not_device{k}")
        a.movr(R3, R8).add(R3, layout.attachment_dev - layout.attachment_node)
        _probe_read_u64(a, tmp_slot)  # dev
        a.ldx(DW, R8, FP, tmp_slot).movr(R3, R8).add(R3, layout.device_init_name)
        _probe_read_u64(a, tmp_slot)
        a.ldx(DW, R3, FP, tmp_slot)
        a.jmp(JNE, R3, 0, f"named{k}")
        a.movr(R3, R8).add(R3, layout.device_kobj_name)
        _probe_read_u64(a, tmp_slot)
        a.ldx(DW, R3, FP, tmp_slot)
        a.label(f"named{k}")
        a.movr(R1, FP).add(R1, name_at(k)).mov(R2, DEVICE_NAME_BYTES)
        a.call(FUNC_PROBE_READ_KERNEL_STR)
        a.ja("advance")
        a.label(f"not_device{k}")
    a.label("advance")
    a.ldx(DW, R3, FP, node_slot)  # list_head.next is its first member
    _probe_read_u64(a, node_slot)
    a.ja("next_attachment")
    a.label("attachments_done")
    a.stx(W, FP, rec + 32, R9)
    a.movr(R2, R9)
    a.jmp(JGE, R9, MAX_DEVICE_NAMES, "all_named")
    a.ja("count_names")
    a.label("all_named")
    a.mov(R2, MAX_DEVICE_NAMES)
    a.label("count_names")
    a.stx(H, FP, rec + 36, R2)
    if layout.counts_fences:
        # resv->fences->num_fences through typed pointers (a fault reads 0); NULL: no list yet
        assert layout.dma_buf_resv is not None and layout.dma_resv_fences is not None
        assert layout.dma_resv_list_num_fences is not None
        a.ldx(DW, R2, R7, layout.dma_buf_resv)
        a.jmp(JEQ, R2, 0, "fences_done")
        a.ldx(DW, R2, R2, layout.dma_resv_fences)
        a.jmp(JEQ, R2, 0, "fences_done")
        a.ldx(W, R2, R2, layout.dma_resv_list_num_fences)
        a.jmp(JLE, R2, MAX_FENCES, "fences_fit")
        a.mov(R2, MAX_FENCES)
        a.label("fences_fit")
        a.stx(H, FP, rec + 38, R2)
        a.label("fences_done")
    a.movr(R1, R6).movr(R2, FP).add(R2, rec).mov(R3, BUFFER.size).call(FUNC_SEQ_WRITE)
    # the device names: a DEVICES record for each 4 of them, after the BUFFER record
    for g in range(groups):
        a.ldx(H, R3, FP, rec + 36)
        a.jmp(JLE, R3, g * NAMES_PER_RECORD, "out")
        a.movr(R1, R6).movr(R2, FP).add(R2, devices + g * DEVICES.size).mov(R3, DEVICES.size).call(FUNC_SEQ_WRITE)
    return _out(a)


def dmabuf_android(layout: Layout, format_map_fd: int) -> bytes:
    """iter/dmabuf in Android's format: inode, size, name (newlines as spaces; empty when unset),
    exporter, one per line. `format_map_fd`: a frozen read-only array map holding ANDROID_FORMAT."""
    name, data = -DMA_BUF_NAME_LEN, -DMA_BUF_NAME_LEN - 32
    a = Asm()
    a.ldx(DW, R6, R1, 0)  # meta
    a.ldx(DW, R7, R1, layout.ctx_dmabuf)
    a.jmp(JEQ, R7, 0, "out")
    a.ldx(DW, R6, R6, layout.meta_seq)
    _zero(a, data, -data)
    a.ldx(DW, R2, R7, layout.dma_buf_file)
    a.ldx(DW, R2, R2, layout.file_f_inode).ldx(DW, R2, R2, layout.inode_i_ino).stx(DW, FP, data, R2)
    a.ldx(DW, R2, R7, layout.dma_buf_size).stx(DW, FP, data + 8, R2)
    a.ldx(DW, R3, R7, layout.dma_buf_name)
    a.jmp(JEQ, R3, 0, "no_name")
    a.movr(R1, FP).add(R1, name).mov(R2, DMA_BUF_NAME_LEN).call(FUNC_PROBE_READ_KERNEL_STR)
    for k in range(DMA_BUF_NAME_LEN - 1):  # newlines end a field: they become spaces, as Android does
        a.ldx(B, R1, FP, name + k).jmp(JNE, R1, _NEWLINE, f"kept{k}").st(B, FP, name + k, _SPACE).label(f"kept{k}")
    a.label("no_name")
    a.movr(R1, FP).add(R1, name).stx(DW, FP, data + 16, R1)
    a.ldx(DW, R2, R7, layout.dma_buf_exp_name).stx(DW, FP, data + 24, R2)
    a.movr(R1, R6).ld_map_value(R2, format_map_fd).mov(R3, len(ANDROID_FORMAT))
    a.movr(R4, FP).add(R4, data).mov(R5, 32).call(FUNC_SEQ_PRINTF)
    return _out(a)
