"""Snapshots over time: recording into SQLite, reports of what grew and who made it, diffs, watch.

store.py      the recording file: SQLite schema, transactions, meta
tracker.py    what changed since the last sample, as rows (no SQL)
creators.py   dma_buf trace events matched to the buffers the samples saw
recorder.py   the `record` loop: scan, trace, write; signals
report.py     the `report` document: growth per process, new buffers by creator
docdiff.py    the `diff` document of two dumps or captures
watch.py      the `watch` line
chart.py      totals over time: terminal (plotext), SVG, PNG (Pillow)
timeline.py   a live session's memory for the TUI: sparklines, first seen, creators
"""
