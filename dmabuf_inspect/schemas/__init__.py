"""The JSON Schemas of every document the tool writes, shipped in the package.

dmabuf-inspect-1.schema.json    `dump` (schema "dmabuf-inspect/1")
bench-1.schema.json             `bench --json` (schema "dmabuf-inspect-bench/1")
report-1.schema.json            `report --json` (schema "dmabuf-inspect-report/1")
diff-1.schema.json              `diff --json` (schema "dmabuf-inspect-diff/1")
"""

from __future__ import annotations

import json
import os
from typing import Any

SNAPSHOT = "dmabuf-inspect-1.schema.json"
BENCH = "bench-1.schema.json"
REPORT = "report-1.schema.json"
DIFF = "diff-1.schema.json"


def path(name: str) -> str:
    return os.path.join(os.path.dirname(__file__), name)


def load(name: str) -> dict[str, Any]:
    with open(path(name)) as f:
        schema: dict[str, Any] = json.load(f)
    return schema
