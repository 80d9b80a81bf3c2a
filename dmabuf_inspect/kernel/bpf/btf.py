"""The kernel's own type information, `/sys/kernel/btf/vmlinux` (CONFIG_DEBUG_INFO_BTF, 5.4+).

    btf_header (24 bytes)   magic 0xeb9f, version 1, flags, hdr_len, type_off, type_len, str_off, str_len
    types                   type id 1, 2, ...: a 12-byte btf_type (name_off, info, size|type), then
                            what its kind adds: a u32 (INT, VAR, DECL_TAG), a btf_array (ARRAY), or
                            vlen records of 8 bytes (ENUM, FUNC_PROTO) or 12 (STRUCT, UNION,
                            DATASEC, ENUM64)
    strings                 NUL-terminated names; name_off indexes them

What the BPF loader needs from it: the type id of a FUNC (an iterator's `bpf_iter_<target>`, the
attach point of its program), the parameters of that FUNC's prototype (the iterator's context),
and the byte offsets of struct members (`dma_buf.size`, `file.f_inode`, ...), through typedefs,
const/volatile and anonymous structs and unions, as the verifier walks them.

A truncated or foreign blob raises BtfError, one line. A kind added after this parser (20+) raises
it too: the records' sizes are unknown, so nothing after them can be found.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from itertools import compress, count
from operator import itemgetter

from dmabuf_inspect.errors import DmabufInspectError
from dmabuf_inspect.kernel.reader import Tree
from dmabuf_inspect.records import NamedTuple

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F
HEADER_BYTES = 24

# include/uapi/linux/btf.h
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
KIND_NAMES = (
    "UNKN",
    "INT",
    "PTR",
    "ARRAY",
    "STRUCT",
    "UNION",
    "ENUM",
    "FWD",
    "TYPEDEF",
    "VOLATILE",
    "CONST",
    "RESTRICT",
    "FUNC",
    "FUNC_PROTO",
    "VAR",
    "DATASEC",
    "FLOAT",
    "DECL_TAG",
    "TYPE_TAG",
    "ENUM64",
)
_MODIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
# u32 words after the 12-byte btf_type, fixed and per vlen record, by kind
_FIXED_WORDS = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_VLEN_WORDS = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)


class BtfError(DmabufInspectError, ValueError):
    """BTF that can't be read or lacks what was asked for; one line."""


class Member(NamedTuple):
    name: str  # "" for an anonymous struct or union
    type_id: int
    bit_offset: int
    bitfield_bits: int  # 0: not a bitfield


class Field(NamedTuple):
    """A member found by path: where it is in the outer struct, and its type."""

    offset_bytes: int
    type_id: int  # modifiers skipped
    size_bytes: int


class Btf:
    """One parsed BTF blob (split BTF of modules is not read)."""

    def __init__(self, data: bytes, source: str = "BTF") -> None:
        self.source = source
        if len(data) < HEADER_BYTES:
            raise BtfError(f"{source}: {len(data)} bytes, shorter than a BTF header")
        magic = int.from_bytes(data[:2], "little")
        if magic == MAGIC:
            order = "little"
        elif int.from_bytes(data[:2], "big") == MAGIC:
            order = "big"
        else:
            raise BtfError(f"{source}: not BTF (magic {data[:2].hex()}, expected 9feb)")
        if data[2] != 1:
            raise BtfError(f"{source}: BTF version {data[2]}, only version 1 is known")
        hdr_len, type_off, type_len, str_off, str_len = (
            int.from_bytes(data[k : k + 4], order)  # type: ignore[arg-type]
            for k in range(4, 24, 4)
        )
        if hdr_len < HEADER_BYTES or hdr_len > len(data):
            raise BtfError(f"{source}: header length {hdr_len} out of range")
        types_at, strings_at = hdr_len + type_off, hdr_len + str_off
        if types_at + type_len > len(data) or strings_at + str_len > len(data):
            raise BtfError(f"{source}: truncated ({len(data)} bytes, its header says {strings_at + str_len})")
        if type_len % 4 or types_at % 4:
            raise BtfError(f"{source}: type section not aligned to 4 bytes")
        from array import array  # only when BTF is parsed: a scan reads the layout from its cache

        self._words = array("I")
        self._words.frombytes(data[types_at : types_at + type_len])
        if (order == "little") != (sys.byteorder == "little"):
            self._words.byteswap()
        self._strings = bytes(data[strings_at : strings_at + str_len])
        if self._strings[:1] != b"\0":
            raise BtfError(f"{source}: string section does not start with an empty string")
        self._starts = self._walk()
        self._names: tuple[int, ...] | None = None
        self._offsets_of: dict[str, list[int]] = {}  # a name's offsets in the string section
        self._ids_of: dict[int, list[int]] = {}  # the types named at an offset

    @classmethod
    def load(cls, path: str = VMLINUX) -> Btf:
        head, name = os.path.split(os.path.abspath(path))
        try:
            data = Tree(head, live=True).read(name, 1 << 28)
        except FileNotFoundError:
            raise BtfError(f"no {path} (a kernel without CONFIG_DEBUG_INFO_BTF)") from None
        except OSError as exc:
            raise BtfError(f"{path}: {exc.strerror}") from None
        return cls(data, path)

    def _walk(self) -> list[int]:
        """The word index of each type, by type id (id 0, void, has none: -1)."""
        words, fixed, per = self._words, _FIXED_WORDS, _VLEN_WORDS
        starts = [-1]
        append = starts.append
        i, n = 0, len(words)
        while i + 3 <= n:
            append(i)
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            if kind == 0 or kind >= len(fixed):
                raise BtfError(
                    f"{self.source}: type id {len(starts) - 1} has kind {kind}, "
                    f"unknown to this parser (kinds 1-{len(fixed) - 1})"
                )
            i += 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
        if i != n:
            raise BtfError(f"{self.source}: type section truncated in type id {len(starts) - 1}")
        return starts

    # --- one type ---------------------------------------------------------------------------

    @property
    def type_count(self) -> int:
        return len(self._starts) - 1

    def _at(self, type_id: int) -> int:
        if not 0 < type_id < len(self._starts):
            raise BtfError(f"{self.source}: no type id {type_id}")
        return self._starts[type_id]

    def kind(self, type_id: int) -> int:
        return (self._words[self._at(type_id) + 1] >> 24) & 0x1F

    def vlen(self, type_id: int) -> int:
        return self._words[self._at(type_id) + 1] & 0xFFFF

    def kind_flag(self, type_id: int) -> bool:
        return bool(self._words[self._at(type_id) + 1] >> 31)

    def name(self, type_id: int) -> str:
        return self._string(self._words[self._at(type_id)])

    def _string(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise BtfError(f"{self.source}: name offset {offset} outside the string section")
        return self._strings[offset:end].decode("utf-8", "replace")

    def size_or_type(self, type_id: int) -> int:
        """btf_type.size (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT) or .type (the rest)."""
        return self._words[self._at(type_id) + 2]

    def resolve(self, type_id: int) -> int:
        """Skip typedef, const, volatile, restrict and type tags."""
        for _ in range(64):
            if type_id == 0 or self.kind(type_id) not in _MODIFIERS:
                return type_id
            type_id = self.size_or_type(type_id)
        raise BtfError(f"{self.source}: a loop of type modifiers at type id {type_id}")

    def sizeof(self, type_id: int) -> int:
        type_id = self.resolve(type_id)
        kind = self.kind(type_id)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return self.size_or_type(type_id)
        if kind == PTR:
            return 8
        if kind == ARRAY:
            at = self._at(type_id) + 3
            return self._words[at + 2] * self.sizeof(self._words[at])
        raise BtfError(f"{self.source}: type id {type_id} ({KIND_NAMES[kind]}) has no size")

    def members(self, type_id: int) -> list[Member]:
        kind = self.kind(type_id)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"{self.source}: type id {type_id} is a {KIND_NAMES[kind]}, not a struct or union")
        at, bitfields = self._at(type_id) + 3, self.kind_flag(type_id)
        words = self._words
        out = []
        for k in range(self.vlen(type_id)):
            name_off, member_type, offset = words[at + 3 * k : at + 3 * k + 3]
            bits = offset >> 24 if bitfields else 0
            out.append(Member(self._string(name_off), member_type, offset & 0xFFFFFF if bitfields else offset, bits))
        return out

    def params(self, func_id: int) -> list[tuple[str, int]]:
        """A FUNC's (or FUNC_PROTO's) parameters: (name, type id)."""
        if self.kind(func_id) == FUNC:
            func_id = self.size_or_type(func_id)
        if self.kind(func_id) != FUNC_PROTO:
            raise BtfError(f"{self.source}: type id {func_id} is not a function")
        at = self._at(func_id) + 3
        words = self._words
        return [(self._string(words[at + 2 * k]), words[at + 2 * k + 1]) for k in range(self.vlen(func_id))]

    def enumerators(self, type_id: int) -> dict[str, int]:
        kind = self.kind(type_id)
        at, words = self._at(type_id) + 3, self._words
        if kind == ENUM:
            signed = self.kind_flag(type_id)
            out = {}
            for k in range(self.vlen(type_id)):
                value = words[at + 2 * k + 1]
                out[self._string(words[at + 2 * k])] = value - (1 << 32) if signed and value >> 31 else value
            return out
        if kind == ENUM64:
            return {
                self._string(words[at + 3 * k]): words[at + 3 * k + 1] | words[at + 3 * k + 2] << 32
                for k in range(self.vlen(type_id))
            }
        raise BtfError(f"{self.source}: type id {type_id} is a {KIND_NAMES[kind]}, not an enum")

    # --- by name ----------------------------------------------------------------------------

    def prefetch(self, names: Iterable[str]) -> None:
        """Look `names` up together: one pass over the strings and one over the types for all of
        them, where looking each up alone would take a pass each (a struct's member names too)."""
        wanted = sorted({n.encode() for n in names if n} - {n.encode() for n in self._offsets_of}, key=len)
        if not wanted:
            return
        pattern = re.compile(rb"(?<=\0)(?:" + b"|".join(map(re.escape, reversed(wanted))) + rb")(?=\0)")
        found: dict[str, list[int]] = {n.decode(): [] for n in wanted}
        for m in pattern.finditer(self._strings):
            found[m.group().decode()].append(m.start())
        self._offsets_of.update(found)
        offsets = {off for offs in found.values() for off in offs} - self._ids_of.keys()
        if offsets:
            ids: dict[int, list[int]] = {off: [] for off in offsets}
            for type_id in compress(count(), map(offsets.__contains__, self._type_names())):
                ids[self._type_names()[type_id]].append(type_id)
            self._ids_of.update(ids)

    def _type_names(self) -> tuple[int, ...]:
        """Each type's name_off, by type id (-1 for void), gathered in C."""
        if self._names is None:
            starts = self._starts[1:]
            if len(starts) == 1:
                self._names = (-1, self._words[starts[0]])
            else:
                self._names = (-1, *itemgetter(*starts)(self._words)) if starts else (-1,)
        return self._names

    def _name_offsets(self, name: str) -> list[int]:
        if name not in self._offsets_of:
            self.prefetch([name])
        return self._offsets_of.get(name, [])

    def ids_named(self, name: str) -> list[int]:
        """Every type id whose name is `name`, ascending."""
        offsets = self._name_offsets(name)
        missing = [off for off in offsets if off not in self._ids_of]
        if missing:  # a name first prefetched as a member's
            names = self._type_names()
            for off in missing:
                self._ids_of[off] = [i for i, n in enumerate(names) if n == off]
        return sorted(t for off in offsets for t in self._ids_of[off])

    def find(self, name: str, kind: int) -> int | None:
        """The first type id named `name` of `kind` (several exist: `struct bpf_iter_dmabuf` and
        FUNC `bpf_iter_dmabuf` share a name), or None."""
        return next((t for t in self.ids_named(name) if self.kind(t) == kind), None)

    def need(self, name: str, kind: int) -> int:
        found = self.find(name, kind)
        if found is None:
            raise BtfError(f"{self.source}: no {KIND_NAMES[kind]} {name}")
        return found

    def struct(self, name: str) -> int:
        """A struct with members (a forward declaration is skipped)."""
        for type_id in self.ids_named(name):
            if self.kind(type_id) == STRUCT:
                return type_id
        raise BtfError(f"{self.source}: no struct {name}")

    def field(self, struct_name: str, path: str) -> Field:
        """`struct_name`'s member at `path` ("f_ref.refcnt.counter"): through nested structs and
        unions (not pointers), anonymous ones searched as the compiler does."""
        type_id, offset_bits = self.struct(struct_name), 0
        for part in path.split("."):
            found = self._member(type_id, part)
            if found is None:
                raise BtfError(f"{self.source}: struct {struct_name} has no member {path}")
            member_bits, member_type = found
            offset_bits += member_bits
            type_id = self.resolve(member_type)
        if offset_bits % 8:
            raise BtfError(f"{self.source}: {struct_name}.{path} is a bitfield")
        return Field(offset_bits // 8, type_id, self.sizeof(type_id))

    def has_field(self, struct_name: str, path: str) -> bool:
        try:
            self.field(struct_name, path)
        except BtfError:
            return False
        return True

    def _member(self, type_id: int, name: str, depth: int = 0) -> tuple[int, int] | None:
        """(bit offset, type id) of `name` in the struct or union `type_id`, anonymous members
        included. Names are compared by their offsets in the string section: a big struct's
        members are not decoded."""
        wanted = set(self._name_offsets(name))
        return self._member_at(type_id, wanted, depth) if wanted else None

    def _member_at(self, type_id: int, wanted: set[int], depth: int) -> tuple[int, int] | None:
        type_id = self.resolve(type_id)
        if self.kind(type_id) not in (STRUCT, UNION) or depth > 16:
            return None
        at, words = self._at(type_id) + 3, self._words
        bitfields = self.kind_flag(type_id)
        for k in range(self.vlen(type_id)):
            name_off, member_type, offset = words[at + 3 * k : at + 3 * k + 3]
            bit_offset = offset & 0xFFFFFF if bitfields else offset
            if name_off in wanted:
                return bit_offset, member_type
            if name_off == 0:
                inner = self._member_at(member_type, wanted, depth + 1)
                if inner is not None:
                    return bit_offset + inner[0], inner[1]
        return None

    def pointee(self, type_id: int) -> int:
        """The type a pointer points to, modifiers skipped; BtfError for a non-pointer."""
        type_id = self.resolve(type_id)
        if self.kind(type_id) != PTR:
            raise BtfError(f"{self.source}: type id {type_id} is not a pointer")
        return self.resolve(self.size_or_type(type_id))

    def enum_value(self, enum_name: str, member: str) -> int:
        for type_id in self.ids_named(enum_name):
            if self.kind(type_id) in (ENUM, ENUM64):
                values = self.enumerators(type_id)
                if member in values:
                    return values[member]
        raise BtfError(f"{self.source}: no enum {enum_name} with {member}")
