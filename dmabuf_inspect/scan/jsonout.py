"""The JSON document of a snapshot, schema `dmabuf-inspect/1` (dmabuf-inspect-1.schema.json).

`write()` is what `dump` prints: compact JSON, the buffers written by buffers_json() without a
dict per buffer (json.dumps with `indent` falls back to the pure-Python encoder, 20x slower: it is
used only when asked, or on a terminal).
"""

from __future__ import annotations

from _json import encode_basestring_ascii as encode_str  # the json module's own, in C
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat

from dmabuf_inspect.model import Buffer, DeviceMemory, Fence, Process, Snapshot
from dmabuf_inspect.scan.cgroups import cgroup_entry, cgroup_totals
from dmabuf_inspect.scan.views import heap_entries, udmabuf_entry
from dmabuf_inspect.textsafe import json_name

TYPE_CHECKING = False  # mypy reads any name TYPE_CHECKING as True: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, TextIO

SCHEMA_ID = "dmabuf-inspect/1"
_INF = float("inf")


def _fence(f: Fence) -> dict[str, Any]:
    return {
        "usage": f.usage,
        "driver": f.driver,
        "timeline": f.timeline,
        "seqno": f.seqno,
        "context": f.context,
        "signaled": f.signaled,
    }


def buffer_to_dict(b: Buffer) -> dict[str, Any]:
    name = b.name
    name_hex = None
    if name is not None and not name.isascii():  # ASCII is valid UTF-8 as it is
        name, name_hex = json_name(name)
    d: dict[str, Any] = {
        "inode": b.inode,
        "size_bytes": b.size_bytes,
        "size_source": b.size_source,
        "exporter": b.exporter,
        "class": b.exporter_class,
        "name": name,
    }
    if name_hex is not None:
        d["name_hex"] = name_hex  # the exact bytes, when they are not UTF-8
    d["count"] = b.count
    d["holders"] = [{"pid": h.pid, "fds": h.fds, "maps": h.maps, "mapped_bytes": h.mapped_bytes} for h in b.holders]
    d["attachments"] = b.attachments
    d["fences"] = [_fence(f) for f in b.fences] if b.fences else []
    d["kernel_refs"] = b.kernel_refs
    d["holders_known"] = b.holders_known
    return d


def process_to_dict(p: Process) -> dict[str, Any]:
    cgroup, cgroup_hex = (p.cgroup, None) if p.cgroup is None or p.cgroup.isascii() else json_name(p.cgroup)
    d: dict[str, Any] = {
        "pid": p.pid,
        "ppid": p.ppid,
        "start_ticks": p.start_ticks,
        "comm": json_name(p.comm)[0],
        "cmdline": json_name(p.cmdline)[0],
        "uid": p.uid,
        "user": p.user,
        "buffers": p.buffers,
        "rss_bytes": p.rss_bytes,
        "pss_bytes": p.pss_bytes,
        "device_rss_bytes": p.device_rss_bytes,
        "device_pss_bytes": p.device_pss_bytes,
        "unjoined_fds": list(p.unjoined_fds),
        "cgroup": cgroup,
    }
    if cgroup_hex is not None:
        d["cgroup_hex"] = cgroup_hex  # the exact bytes, when the path is not UTF-8
    return d


def _error_to_dict(e: Any) -> dict[str, Any]:
    d = {"pid": e.pid, "source": e.source, "error": e.error}
    kind = getattr(e, "kind", None)
    if kind is not None:
        d["kind"] = kind
    return d


def _head(snap: Snapshot, buffers: Sequence[Any]) -> dict[str, Any]:
    t = snap.totals
    return {
        "schema": SCHEMA_ID,
        "kernel": snap.kernel,
        "taken_at": snap.taken_at,
        "sources": dict(snap.sources),
        "buffers": buffers,
        "processes": [process_to_dict(p) for p in snap.processes],
        **_cgroups(snap),
        "totals": {
            "buffers": t.buffers,
            "bytes": t.bytes,
            "userspace_bytes": t.userspace_bytes,
            "kernel_only_bytes": t.kernel_only_bytes,
            "device_buffers": t.device_buffers,
            "device_bytes": t.device_bytes,
        },
        "heaps": heap_entries(snap.heaps),
        "udmabuf": None if snap.udmabuf is None else udmabuf_entry(snap.udmabuf),
        "mem_accounting": snap.mem_accounting,
        "denied_pids": list(snap.denied_pids),
        "errors": [_error_to_dict(e) for e in snap.errors],
        "device_memory": [_device_memory_to_dict(d) for d in snap.device_memory],
    }


def _cgroups(snap: Snapshot) -> dict[str, Any]:
    """{"cgroups": per-cgroup totals} when the scan read the processes' cgroups, else nothing."""
    if "cgroup" not in snap.sources:
        return {}
    paths = {p.pid: p.cgroup for p in snap.processes}
    return {"cgroups": [cgroup_entry(t) for t in cgroup_totals(snap, paths)]}


def _device_memory_to_dict(d: DeviceMemory) -> dict[str, Any]:
    return {
        "inode": d.inode,
        "pci_address": d.pci_address,
        "region": d.region,
        "why": d.why,
        "device_fds": [
            {"pid": f.pid, "fd": f.fd, "link": f.link, "syspath": f.syspath, "pci_address": f.pci_address}
            for f in d.device_fds
        ],
    }


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    """The whole document as one dict (the TUI export embeds it)."""
    return _head(snap, [buffer_to_dict(b) for b in snap.buffers])


def dumps(snap: Snapshot, indent: int | None = 2) -> str:
    """The document as one string, as json.dumps() writes it: compact with indent=None."""
    import json

    if indent is None:
        return json.dumps(snapshot_to_dict(snap), separators=(",", ":"))
    return json.dumps(snapshot_to_dict(snap), indent=indent)


def compact(value: Any) -> str:
    """`value` (None, bool, int, float, str, list, tuple, dict with str keys) as
    json.dumps(value, separators=(",", ":")) writes it; without the json package, whose import
    (five modules, with the decoder's) costs `dump` more than this does under TCG."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_str(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (_INF, -_INF):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(compact, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode_str(k)}:{compact(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_PLACEHOLDER = "__buffers__"
# One buffer as buffer_to_dict() and json.dumps(separators=(",", ":")) write it, cut where its
# values go (the name's value may be followed by its name_hex key).
_BUFFER = (
    '{"inode":',
    ',"size_bytes":',
    ',"size_source":',
    ',"exporter":',
    ',"class":',
    ',"name":',
    ',"count":',
    ',"holders":[',
    '],"attachments":',
    ',"fences":',
    ',"kernel_refs":',
    ',"holders_known":',
    "},",
)
_HOLDER = ('{"pid":', ',"fds":[', '],"maps":', ',"mapped_bytes":', "}")


_JSON_BOOL = {True: "true", False: "false"}

c_weave_columns: (
    Callable[
        [tuple[str, ...], tuple[Sequence[Any], ...], str, dict[int, tuple[str, ...]], dict[int, dict[Any, str]]], str
    ]
    | None
)
try:
    from dmabuf_inspect.kernel import _fdwalk

    c_weave_columns = _fdwalk.weave_columns
except (ImportError, AttributeError):  # built only where a C compiler was at install time
    c_weave_columns = None
_weave_columns = c_weave_columns  # tests set it to None, for the str.join way
_BUFFER_WOVEN = (*_BUFFER[:-1], "}")
_HOLDERS_COLUMN = _BUFFER.index(',"holders":[')  # value k follows piece k
# The columns (Buffer's fields, in order) written through a table of their distinct values' text.
_SIZE_SOURCE, _EXPORTER, _CLASS, _NAME = 2, 3, 4, 5
_ATTACHMENTS, _FENCES, _KNOWN = 8, 9, 11


def _fences_json(fences: tuple[Fence, ...]) -> str:
    return compact([_fence(f) for f in fences])


def _json_number(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


def _json_name(name: str | None) -> str:
    """The value of "name", and the name_hex key after it when the bytes are not UTF-8."""
    text, raw_hex = (name, None) if name is None or name.isascii() else json_name(name)
    if text is None:
        return "null"
    value = encode_str(text)
    return value if raw_hex is None else f'{value},"name_hex":"{raw_hex}"'


def _by_value(column: Sequence[Any], encode: Callable[[Any], str]) -> Iterator[str]:
    """The column's JSON values, each distinct value encoded once."""
    table = {v: encode(v) for v in set(column)}
    return map(table.__getitem__, column)


def _numbers(column: Sequence[int | None]) -> Iterator[str]:
    return map(_json_number, column) if None in column else map(int.__repr__, column)


def _woven(pieces: Sequence[str], columns: Sequence[Iterable[str]]) -> Iterator[tuple[str, ...]]:
    """Per row i: (pieces[0], columns[0][i], pieces[1], columns[1][i], ..., pieces[-1])."""
    woven: list[Iterable[str]] = []
    for piece, column in zip(pieces, columns, strict=False):
        woven += (repeat(piece), column)
    woven.append(repeat(pieces[-1]))
    return zip(*woven, strict=False)  # stops with the columns


def buffers_json(buffers: Sequence[Buffer]) -> str:
    """The "buffers" array's items, comma-separated, exactly as json.dumps(separators=(",", ":"))
    writes [buffer_to_dict(b) ...]: column by column, every value turned into text by a C call and
    the text joined once, with no dict, no format string and no Python frame per buffer (json.dumps
    on the dicts took 3x as long; with indent, the pure-Python encoder, 10x)."""
    if not buffers:
        return ""
    col = dict(zip(Buffer._fields, zip(*buffers, strict=True), strict=True))
    if _weave_columns is not None:  # the same text, written by C: no str per number, no row, no join
        values = tuple(col[name] for name in Buffer._fields)
        lookups = {
            k: {v: encode(v) for v in set(values[k])}
            for k, encode in (
                (_SIZE_SOURCE, encode_str),
                (_EXPORTER, encode_str),
                (_CLASS, encode_str),
                (_NAME, _json_name),
                (_ATTACHMENTS, compact),
                (_FENCES, _fences_json),
            )
        }
        lookups[_KNOWN] = _JSON_BOOL
        return _weave_columns(_BUFFER_WOVEN, values, ",", {_HOLDERS_COLUMN: _HOLDER}, lookups)
    strings = (
        _by_value(col["size_source"], encode_str),
        _by_value(col["exporter"], encode_str),
        _by_value(col["exporter_class"], encode_str),
        _by_value(col["name"], _json_name),
    )
    tail = (
        _by_value(col["attachments"], compact),
        _by_value(col["fences"], _fences_json),
    )
    holders = col["holders"]
    flat = list(chain.from_iterable(holders))
    holder_text: Iterable[str]
    if flat:
        pids, fds, maps, mapped = zip(*flat, strict=True)
        fd_text = map(",".join, map(map, repeat(int.__repr__), fds))
        numbers = (map(int.__repr__, pids), fd_text, map(int.__repr__, maps), map(int.__repr__, mapped))
        held = map("".join, _woven(_HOLDER, numbers))
        holder_text = map(",".join, map(islice, repeat(held), map(len, holders)))
    else:
        holder_text = repeat("", len(buffers))
    columns = (
        map(int.__repr__, col["inode"]),
        map(int.__repr__, col["size_bytes"]),
        *strings,
        _numbers(col["count"]),
        holder_text,
        *tail,
        _numbers(col["kernel_refs"]),
        map(_JSON_BOOL.__getitem__, col["holders_known"]),
    )
    return "".join(chain.from_iterable(_woven(_BUFFER, columns)))[:-1]  # the last buffer's "," dropped


def write(snap: Snapshot, out: TextIO, *, indent: int | None = None) -> None:
    """The document and a newline to `out`: compact unless `indent` is given (then json.dumps')."""
    if indent is not None:
        out.write(dumps(snap, indent))
        out.write("\n")
        return
    head = compact(_head(snap, _PLACEHOLDER))
    before, after = head.split(f'"buffers":"{_PLACEHOLDER}"', 1)
    out.write(before)
    out.write('"buffers":[')
    out.write(buffers_json(snap.buffers))
    out.write("]")
    out.write(after)
    out.write("\n")


def load_schema() -> dict[str, Any]:
    from dmabuf_inspect import schemas

    return schemas.load(schemas.SNAPSHOT)
