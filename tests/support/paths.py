"""Where the tests find the checkout's files, wherever the test module sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
BENCHMARKS = REPO / "benchmarks"
