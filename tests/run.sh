#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests, then the kernel lab (6.12 and 7.3 VMs).
# Installs what it needs (gcc; the project with its test extras; qemu, udev, kmod, virtme-ng and the
# kernels through tests/kernel/setup.sh). Needs root for apt-get and the VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler and Python's headers, for the C walk of fd tables (optional for users, tested here).
if ! command -v gcc >/dev/null || ! python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev >/dev/null
fi
# Prometheus and node_exporter: the real servers tests/unit/test_prometheus_*.py start (on free ports, in temp dirs).
if ! command -v prometheus >/dev/null || ! command -v prometheus-node-exporter >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-node-exporter >/dev/null
    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true; fi  # the packages start their own daemons
fi
python3 -m pip install -q -e '.[test]'
echo "== ruff";   python3 -m ruff check dmabuf_inspect tests benchmarks fixtures
python3 -m ruff format --check dmabuf_inspect tests benchmarks fixtures
echo "== layers"; python3 -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"  # not `lint-imports`: pyenv may not have its shim yet
echo "== mypy";   python3 -m mypy
echo "== unit tests"
python3 -m pytest -q
echo "== kernel lab"
python3 tests/kernel/run_lab.py --keep-going
