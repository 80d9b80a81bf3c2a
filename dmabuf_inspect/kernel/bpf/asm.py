"""A tiny eBPF assembler: the instructions our iterator programs use, with labels for jumps.

    struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }   (little-endian)

code = operation | source (K: imm, X: src_reg) | class (ALU64, JMP, LDX, ST, STX, LD); loads and
stores add a size (B, H, W, DW) and the MEM mode. A 64-bit immediate (LD_IMM64) takes two slots; a
jump's offset counts slots from the one after it. Sources: include/uapi/linux/bpf.h,
Documentation/bpf/standardization/instruction-set.rst.

    a = Asm()
    a.ldx(DW, R6, R1, 0)          # r6 = *(u64 *)(r1 + 0)
    a.jmp(JEQ, R6, 0, "out")      # if r6 == 0 goto out
    a.label("out").mov(R0, 0).exit()
    a.assemble() -> bytes
"""

from __future__ import annotations

import struct

from dmabuf_inspect.records import NamedTuple

# classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
MEM, IMM = 0x60, 0x00
K, X = 0x00, 0x08
# ALU operations, the high nibble of code
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH = (op << 4 for op in range(13))
# jumps, the high nibble of code
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (op << 4 for op in range(14))
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE = 1, 2  # src_reg of an LD_IMM64 that names a map (fd in imm)

_INSN = struct.Struct("<BBhi")
_S16 = range(-(1 << 15), 1 << 15)
_S32 = range(-(1 << 31), 1 << 31)


class Insn(NamedTuple):
    code: int
    dst: int
    src: int
    off: int
    imm: int

    def encode(self) -> bytes:
        return _INSN.pack(self.code, (self.src << 4) | self.dst, self.off, self.imm)


class AsmError(ValueError):
    """A program this assembler can't encode: a bug in the program's builder, never the kernel's."""


def _reg(r: int) -> int:
    if not 0 <= r <= 10:
        raise AsmError(f"no register r{r}")
    return r


def _imm(v: int) -> int:
    if v not in _S32:
        raise AsmError(f"immediate {v} does not fit in 32 bits (use ld_imm64)")
    return v


def _off(v: int) -> int:
    if v not in _S16:
        raise AsmError(f"offset {v} does not fit in 16 bits")
    return v


class Asm:
    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._labels: dict[str, int] = {}
        self._jumps: list[tuple[int, str]] = []  # slot of a jump, its label

    def __len__(self) -> int:
        return len(self._insns)

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Asm:
        self._insns.append(Insn(code, _reg(dst), src if code == LD | DW | IMM else _reg(src), _off(off), _imm(imm)))
        return self

    def label(self, name: str) -> Asm:
        if name in self._labels:
            raise AsmError(f"label {name} defined twice")
        self._labels[name] = len(self._insns)
        return self

    # --- arithmetic, 64-bit ------------------------------------------------------------------

    def alu(self, op: int, dst: int, imm: int) -> Asm:
        """dst = dst OP imm"""
        return self._emit(ALU64 | op | K, dst, imm=imm)

    def alur(self, op: int, dst: int, src: int) -> Asm:
        """dst = dst OP src"""
        return self._emit(ALU64 | op | X, dst, src)

    def mov(self, dst: int, imm: int) -> Asm:
        return self._emit(ALU64 | MOV | K, dst, imm=imm)

    def movr(self, dst: int, src: int) -> Asm:
        return self._emit(ALU64 | MOV | X, dst, src)

    def add(self, dst: int, imm: int) -> Asm:
        return self._emit(ALU64 | ADD | K, dst, imm=imm)

    def addr(self, dst: int, src: int) -> Asm:
        return self._emit(ALU64 | ADD | X, dst, src)

    # --- memory -------------------------------------------------------------------------------

    def ldx(self, size: int, dst: int, src: int, off: int) -> Asm:
        """dst = *(size *)(src + off)"""
        return self._emit(LDX | MEM | size, dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> Asm:
        """*(size *)(dst + off) = src"""
        return self._emit(STX | MEM | size, dst, src, off)

    def st(self, size: int, dst: int, off: int, imm: int) -> Asm:
        """*(size *)(dst + off) = imm"""
        return self._emit(ST | MEM | size, dst, off=off, imm=imm)

    def ld_imm64(self, dst: int, value: int, src: int = 0) -> Asm:
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFFFFFF, value >> 32
        self._emit(LD | DW | IMM, dst, src, imm=lo - (1 << 32) if lo >> 31 else lo)
        return self._emit(0, imm=hi - (1 << 32) if hi >> 31 else hi)

    def ld_map_value(self, dst: int, map_fd: int, offset: int = 0) -> Asm:
        """dst = the address of byte `offset` of an array map's value 0 (BPF_PSEUDO_MAP_VALUE)."""
        self._emit(LD | DW | IMM, dst, PSEUDO_MAP_VALUE, imm=map_fd)
        return self._emit(0, imm=offset)

    # --- control ------------------------------------------------------------------------------

    def jmp(self, op: int, dst: int, imm: int, label: str) -> Asm:
        """if dst OP imm goto label (64-bit compare)"""
        self._jumps.append((len(self._insns), label))
        return self._emit(JMP | op | K, dst, imm=imm)

    def jmpr(self, op: int, dst: int, src: int, label: str) -> Asm:
        """if dst OP src goto label (64-bit compare)"""
        self._jumps.append((len(self._insns), label))
        return self._emit(JMP | op | X, dst, src)

    def ja(self, label: str) -> Asm:
        self._jumps.append((len(self._insns), label))
        return self._emit(JMP | JA)

    def call(self, helper: int) -> Asm:
        return self._emit(JMP | CALL, imm=helper)

    def exit(self) -> Asm:
        return self._emit(JMP | EXIT)

    # --- output -------------------------------------------------------------------------------

    def insns(self) -> list[Insn]:
        out = list(self._insns)
        for at, label in self._jumps:
            if label not in self._labels:
                raise AsmError(f"jump to undefined label {label}")
            out[at] = out[at]._replace(off=_off(self._labels[label] - at - 1))
        return out

    def assemble(self) -> bytes:
        return b"".join(i.encode() for i in self.insns())
