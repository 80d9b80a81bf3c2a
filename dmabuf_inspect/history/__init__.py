"""Snapshots over time: recording into SQLite, reports of what grew and who made it, diffs, watch."""
