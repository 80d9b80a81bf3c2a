#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests, then the kernel lab (6.12 and 7.3 VMs).
# Installs what it needs (the project with its test extras; qemu, udev, kmod, virtme-ng and the
# kernels through tests/kernel/setup.sh). Needs root for apt-get and the VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e '.[test]'
echo "== ruff";   python3 -m ruff check dmabuf_inspect tests benchmarks fixtures
echo "== mypy";   python3 -m mypy
echo "== unit tests"
python3 -m pytest -q
echo "== kernel lab"
python3 tests/kernel/run_lab.py --keep-going
