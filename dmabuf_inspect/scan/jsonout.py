"""The JSON document of a snapshot, schema `dmabuf-inspect/1` (dmabuf-inspect-1.schema.json)."""

from __future__ import annotations

import json
from typing import Any

from dmabuf_inspect.model import Buffer, Fence, Process, Snapshot
from dmabuf_inspect.textsafe import json_name

SCHEMA_ID = "dmabuf-inspect/1"


def _fence(f: Fence) -> dict[str, Any]:
    return {
        "usage": f.usage,
        "driver": f.driver,
        "timeline": f.timeline,
        "seqno": f.seqno,
        "context": f.context,
        "signaled": f.signaled,
    }


def _name_fields(name: str | None) -> dict[str, Any]:
    text, raw_hex = json_name(name)
    out: dict[str, Any] = {"name": text}
    if raw_hex is not None:
        out["name_hex"] = raw_hex  # the exact bytes, when they are not UTF-8
    return out


def buffer_to_dict(b: Buffer) -> dict[str, Any]:
    return {
        "inode": b.inode,
        "size_bytes": b.size_bytes,
        "size_source": b.size_source,
        "exporter": b.exporter,
        "class": b.exporter_class,
        **_name_fields(b.name),
        "count": b.count,
        "holders": [
            {"pid": h.pid, "fds": list(h.fds), "maps": h.maps, "mapped_bytes": h.mapped_bytes} for h in b.holders
        ],
        "attachments": list(b.attachments),
        "fences": [_fence(f) for f in b.fences],
        "kernel_refs": b.kernel_refs,
    }


def process_to_dict(p: Process) -> dict[str, Any]:
    return {
        "pid": p.pid,
        "ppid": p.ppid,
        "comm": json_name(p.comm)[0],
        "cmdline": json_name(p.cmdline)[0],
        "uid": p.uid,
        "user": p.user,
        "buffers": p.buffers,
        "rss_bytes": p.rss_bytes,
        "pss_bytes": p.pss_bytes,
    }


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    t = snap.totals
    return {
        "schema": SCHEMA_ID,
        "kernel": snap.kernel,
        "taken_at": snap.taken_at,
        "sources": dict(snap.sources),
        "buffers": [buffer_to_dict(b) for b in snap.buffers],
        "processes": [process_to_dict(p) for p in snap.processes],
        "totals": {
            "buffers": t.buffers,
            "bytes": t.bytes,
            "userspace_bytes": t.userspace_bytes,
            "kernel_only_bytes": t.kernel_only_bytes,
        },
        "heaps": [{"name": h.name, "dev_path": h.dev_path} for h in snap.heaps],
        "udmabuf": None
        if snap.udmabuf is None
        else {
            "present": snap.udmabuf.present,
            "dev_path": snap.udmabuf.dev_path,
            "size_limit_mb": snap.udmabuf.size_limit_mb,
            "list_limit": snap.udmabuf.list_limit,
        },
        "denied_pids": list(snap.denied_pids),
        "errors": [{"pid": e.pid, "source": e.source, "error": e.error} for e in snap.errors],
    }


def dumps(snap: Snapshot) -> str:
    return json.dumps(snapshot_to_dict(snap), indent=2)


def load_schema() -> dict[str, Any]:
    from dmabuf_inspect import schemas

    return schemas.load(schemas.SNAPSHOT)
