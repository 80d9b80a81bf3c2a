#!/usr/bin/env python3
"""The kernel lab: boot each lab kernel under qemu (virtme-ng) and run the `kernel` tests in it.

    python3 tests/kernel/run_lab.py                  # set-up, then 6.12 and 7.3, every boot profile
    python3 tests/kernel/run_lab.py --skip-setup --kernel 7.3 -k scene -- -x
    python3 tests/kernel/run_lab.py --skip-setup --kernel 7.3 --profile iommu

Each kernel boots once per boot profile (TCG, no KVM needed):

    base    the plain VM: every `kernel` test but the `vfio` group
    iommu   q35 with an emulated Intel IOMMU and qemu's `edu` PCI device, booted with
            intel_iommu=on and vfio_iommu_type1.allow_unsafe_interrupts=1: the `vfio` group
            (VFIO dma-bufs on 7.3; on 6.12, that the kernel is too old for them)

In each boot it checks that the guest runs the kernel it asked for, and runs, as root and with
this interpreter, `pytest -m 'kernel and ...' tests/kernel` from this checkout (read-only in the
guest; PYTHONPATH points at it, installed or not). Results go to a per-boot directory under /tmp,
shared with the guest. With `-k` (or other pytest arguments), a boot none of whose tests is
selected (pytest --collect-only on the host, as that kernel's release) is not booted, and a run
that selects no test at all fails before booting; without them every boot runs.

Exit status 0 only when every boot ran more than zero tests and none failed, errored or skipped
(a skip is not a pass in the lab). The last line reads `N passed, N failed`, summed over boots,
where failed counts failures, errors and skips.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
SETUP = os.path.join(HERE, "setup.sh")
LAB_KERNELS = ("6.12", "7.3")
SHARED_DIR = "/tmp"  # --rwdir: the guest writes its results here
LOCK = "/tmp/dmabuf-inspect-lab.lock"  # one lab VM at a time on this machine
TAIL_LINES = 60


@dataclass(frozen=True, slots=True)
class Profile:
    """One way to boot a lab kernel, and the tests that run in that boot."""

    name: str
    markexpr: str  # pytest -m
    series: tuple[str, ...]  # the kernels that get this boot
    qemu_opts: tuple[str, ...] = ()
    kernel_args: tuple[str, ...] = ()


PROFILES = (
    Profile("base", "kernel and not vfio", LAB_KERNELS),
    # intel-iommu needs the q35 machine, which vng picks with --disable-microvm and no KVM. No
    # interrupt remapping under TCG (intremap=off), so VFIO_SET_IOMMU wants allow_unsafe_interrupts
    # (EPERM without it). 6.12 boots it too: its VFIO path must say the kernel is too old.
    Profile(
        "iommu",
        "kernel and vfio",
        LAB_KERNELS,
        qemu_opts=("-device", "intel-iommu,intremap=off", "-device", "edu"),
        kernel_args=("intel_iommu=on", "vfio_iommu_type1.allow_unsafe_interrupts=1"),
    ),
)
PROFILE_NAMES = tuple(p.name for p in PROFILES)


@dataclass(frozen=True, slots=True)
class Kernel:
    series: str  # "6.12"
    version: str  # "6.12.107+deb13-amd64", what uname -r must say
    vmlinuz: str


@dataclass(slots=True)
class Result:
    kernel: Kernel
    profile: Profile
    booted: bool = False
    problem: str | None = None  # why the kernel's run is a failure beyond test counts
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    pytest_rc: int | None = None
    seconds: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    capture: bool = False  # --capture-fixtures: no tests, only the capture
    figures: dict[str, dict[str, str]] = field(default_factory=dict)  # test -> what it recorded (record_property)

    @property
    def ok(self) -> bool:
        if self.capture:
            return self.problem is None
        return self.problem is None and self.tests > 0 and self.failed == 0 and self.errors == 0 and self.skipped == 0


class LabError(Exception):
    """The lab could not run; one line for the log."""


def series_of(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _vkey(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def run_setup() -> list[Kernel]:
    """Run setup.sh (idempotent, cached) and read its `KERNEL <version> <vmlinuz>` lines."""
    print(f"lab: set-up: bash {SETUP}", flush=True)
    proc = subprocess.run(["bash", SETUP], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kernels = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "KERNEL":
            kernels.append(Kernel(series_of(parts[1]), parts[1], parts[2]))
    if proc.returncode != 0 or not kernels:
        tail = "\n".join(proc.stdout.splitlines()[-TAIL_LINES:])
        raise LabError(f"set-up failed (exit {proc.returncode}); its output ends with:\n{tail}")
    return kernels


def find_vng() -> str | None:
    """vng on PATH, or where pip put it for this interpreter (pyenv's shims may not know it yet)."""
    found = shutil.which("vng")
    if found is None:
        candidate = os.path.join(sysconfig.get_path("scripts"), "vng")
        found = candidate if os.access(candidate, os.X_OK) else None
    return found


def installed_kernels() -> list[Kernel]:
    """The newest installed kernel of each lab series, for --skip-setup."""
    found: dict[str, Kernel] = {}
    for moddir in glob.glob("/usr/lib/modules/*") + glob.glob("/lib/modules/*"):
        version = os.path.basename(moddir)
        series = series_of(version)
        if series not in LAB_KERNELS:
            continue
        for vmlinuz in (f"/boot/vmlinuz-{version}", os.path.join(moddir, "vmlinuz")):
            if os.path.isfile(vmlinuz):
                if series not in found or _vkey(version) > _vkey(found[series].version):
                    found[series] = Kernel(series, version, vmlinuz)
                break
    return [found[s] for s in LAB_KERNELS if s in found]


def pytest_command(results: str, pytest_args: list[str], profile: Profile) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-m",
        profile.markexpr,
        "tests/kernel",
        "-v",
        "-rfEs",
        f"--junitxml={results}/junit.xml",
        *pytest_args,
    ]


# Collects as the guest would: test modules that keep or drop tests by `os.uname().release` see the
# lab kernel's release, not the host's.
_COLLECT = """
import os, sys
real = os.uname()
os.uname = lambda: os.uname_result((real.sysname, real.nodename, sys.argv[1], real.version, real.machine))
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def selected_tests(kernel: Kernel, profile: Profile, pytest_args: list[str]) -> int:
    """How many tests the boot would run: pytest --collect-only on the host (no test runs)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _COLLECT,
            kernel.version,
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-m",
            profile.markexpr,
            "tests/kernel",
            "--collect-only",
            "-q",
            *pytest_args,
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 5:  # no tests collected
        return 0
    found = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", proc.stdout)
    if proc.returncode != 0 or found is None:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-TAIL_LINES:])
        raise LabError(f"pytest --collect-only for profile {profile.name} exited {proc.returncode}:\n{tail}")
    return int(found.group(1))


def capture_command(results: str, kernel: Kernel) -> list[str]:
    return [sys.executable, "tests/kernel/capture_lab.py", f"{results}/lab-{kernel.series}"]


def guest_script(kernel: Kernel, profile: Profile, results: str, command: list[str]) -> str:
    q = shlex.quote
    return f"""#!/bin/bash
# Written by run_lab.py; runs inside the guest as root.
set -u
echo booted > {q(results)}/booted
uname -r > {q(results)}/uname
echo "lab-guest: kernel $(uname -r), uid $(id -u)"
if [ "$(uname -r)" != {q(kernel.version)} ]; then
    echo "lab-guest: ERROR: the guest runs $(uname -r), expected {kernel.version}"
    echo 3 > {q(results)}/pytest.rc; exit 3
fi
if [ ! -f {q(CHECKOUT)}/tests/kernel/run_lab.py ]; then
    echo "lab-guest: ERROR: the checkout {CHECKOUT} is not visible in the guest"
    echo 3 > {q(results)}/pytest.rc; exit 3
fi
cd {q(CHECKOUT)}
export PYTHONPATH={q(CHECKOUT)}${{PYTHONPATH:+:$PYTHONPATH}}
export PYTHONDONTWRITEBYTECODE=1
export DMABUF_INSPECT_LAB=1  # conftest.py: a kernel test that cannot run fails, never skips
export DMABUF_INSPECT_LAB_PROFILE={q(profile.name)}
export LAB_RESULTS={q(results)}
export HOME={q(results)}/home; mkdir -p "$HOME"
# /tmp is the host's, over 9p, where an unlinked open file cannot be truncated (pytest's capture
# files are): temporary files stay in the guest's own tmpfs.
export TMPDIR=/var/tmp
export HYPOTHESIS_STORAGE_DIRECTORY=/var/tmp/hypothesis
package=$({q(sys.executable)} -c 'import dmabuf_inspect, os; print(os.path.dirname(dmabuf_inspect.__file__))')
if [ "$package" != {q(os.path.join(CHECKOUT, "dmabuf_inspect"))} ]; then
    echo "lab-guest: ERROR: {sys.executable} imports dmabuf_inspect from $package, not from this checkout"
    echo 3 > {q(results)}/pytest.rc; exit 3
fi
echo "lab-guest: testing $package"
{" ".join(q(a) for a in command)}
rc=$?
echo $rc > {q(results)}/pytest.rc
echo "lab-guest: {os.path.basename(command[2 if command[1] == "-m" else 1])} exited $rc"
exit $rc
"""


def read_junit(path: str, result: Result) -> None:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        result.tests += int(suite.get("tests", 0))
        result.failed += int(suite.get("failures", 0))
        result.errors += int(suite.get("errors", 0))
        result.skipped += int(suite.get("skipped", 0))
    result.passed = result.tests - result.failed - result.errors - result.skipped
    for case in root.iter("testcase"):
        recorded = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        if recorded:
            result.figures[case.get("name", "")] = recorded


def _stream(proc: subprocess.Popen[str], log: str, tail: deque[str], prefix: str, quiet: bool) -> None:
    assert proc.stdout is not None
    with open(log, "w") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            tail.append(line.rstrip("\n"))
            if not quiet:
                sys.stdout.write(f"{prefix}{line}")
                sys.stdout.flush()


def boot_name(kernel: Kernel, profile: Profile) -> str:
    """'7.3.4+deb13-amd64' for the base boot, '7.3.4+deb13-amd64 [iommu]' for the others."""
    return kernel.version if profile.name == "base" else f"{kernel.version} [{profile.name}]"


def vng_command(args: argparse.Namespace, kernel: Kernel, profile: Profile, script: str, run_dir: str) -> list[str]:
    """The vng command line of one boot: TCG, q35 (--disable-microvm), the profile's devices and
    kernel parameters, /tmp shared read-write, the guest script run as root."""
    kernel_args = [a for arg in profile.kernel_args for a in ("--append", arg)]
    cmd = [
        args.vng,
        "--run",
        kernel.vmlinuz,
        "--disable-kvm",
        "--disable-microvm",
        "--user",
        "root",
        "--qemu-opts=" + shlex.join(["-cpu", "max", *profile.qemu_opts]),
        *kernel_args,
        "--memory",
        args.memory,
        "--cpus",
        str(args.cpus),
        "--rwdir",
        SHARED_DIR,
        "--exec",
        f"bash {shlex.quote(script)}",
    ]
    if not run_dir.startswith(SHARED_DIR + os.sep):
        cmd[-2:-2] = ["--rwdir", run_dir]
    return cmd


def run_kernel(kernel: Kernel, profile: Profile, args: argparse.Namespace, run_dir: str) -> Result:
    result = Result(kernel, profile, capture=args.capture_fixtures)
    results = os.path.join(run_dir, kernel.version if profile.name == "base" else f"{kernel.version}-{profile.name}")
    os.makedirs(results)
    script = os.path.join(results, "guest.sh")
    if args.capture_fixtures:
        command = capture_command(results, kernel)
    else:
        command = pytest_command(results, args.pytest_args, profile)
    with open(script, "w") as f:
        f.write(guest_script(kernel, profile, results, command))
    cmd = vng_command(args, kernel, profile, script, run_dir)
    print(f"lab: === {boot_name(kernel, profile)}: booting {kernel.vmlinuz} (results in {results})", flush=True)
    print(f"lab: $ {shlex.join(cmd)}", flush=True)
    log = os.path.join(results, "vm.log")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
        cwd=CHECKOUT,
    )
    prefix = f"[{kernel.series}]" if profile.name == "base" else f"[{kernel.series} {profile.name}]"
    reader = threading.Thread(target=_stream, args=(proc, log, tail, prefix + " ", args.quiet), daemon=True)
    reader.start()
    try:
        vm_rc: int | None = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        vm_rc = None
    reader.join(timeout=10)
    result.seconds = time.monotonic() - start
    result.log_tail = list(tail)

    result.booted = os.path.exists(os.path.join(results, "booted"))
    rc_file = os.path.join(results, "pytest.rc")
    junit = os.path.join(results, "junit.xml")
    if vm_rc is None:
        where = "after booting" if result.booted else "before the guest started its script"
        result.problem = f"the VM ran past --timeout {args.timeout}s ({where}) and was killed"
    elif not result.booted:
        result.problem = f"the VM did not boot (vng exited {vm_rc} before the guest ran its script)"
    if result.booted:
        with open(os.path.join(results, "uname")) as f:
            guest_uname = f.read().strip()
        if guest_uname != kernel.version:
            result.problem = f"the guest ran kernel {guest_uname!r}, not {kernel.version!r}"
    if os.path.exists(rc_file):
        with open(rc_file) as f:
            result.pytest_rc = int(f.read().strip() or -1)
    if args.capture_fixtures:
        if result.problem is None:
            result.problem = copy_fixture(kernel, results, result.pytest_rc)
        return result
    if os.path.exists(junit):
        read_junit(junit, result)
    elif result.problem is None:
        result.problem = f"pytest wrote no {junit} (pytest exit {result.pytest_rc}, vng exit {vm_rc})"
    if result.problem is None and result.pytest_rc not in (0, 1):
        # 1 is "some tests failed", counted below; anything else is pytest itself failing.
        result.problem = f"pytest exited {result.pytest_rc} (interrupted, usage or internal error)"
    if result.problem is None and result.tests == 0:
        result.problem = "zero tests ran"
    return result


def copy_fixture(kernel: Kernel, results: str, rc: int | None) -> str | None:
    """Put the guest's capture into fixtures/lab-SERIES; the problem, or None."""
    made = os.path.join(results, f"lab-{kernel.series}")
    if rc != 0 or not os.path.isfile(os.path.join(made, "README.md")):
        return f"capture_lab.py exited {rc} and wrote no {made}/README.md"
    dest = os.path.join(CHECKOUT, "fixtures", f"lab-{kernel.series}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(made, dest, symlinks=True)
    print(f"lab: {kernel.version}: capture copied to {dest}", flush=True)
    return None


def report(result: Result, *, with_tail: bool = True) -> None:
    k = result.kernel
    name = boot_name(k, result.profile)
    counts = (
        f"{result.tests} tests: {result.passed} passed, {result.failed} failed, "
        f"{result.errors} errors, {result.skipped} skipped"
    )
    status = "OK" if result.ok else "FAILED"
    if result.capture:
        counts = f"capture into fixtures/lab-{k.series}"
    print(f"lab: {name}: {status}: {counts} ({result.seconds:.0f}s)", flush=True)
    for test, recorded in result.figures.items():
        print(f"lab: {name}: {test}: " + ", ".join(f"{n}={v}" for n, v in recorded.items()), flush=True)
    if result.problem:
        print(f"lab: {name}: LAB FAILURE: {result.problem}", flush=True)
    if result.skipped:
        print(f"lab: {name}: {result.skipped} skipped: a skip is not a pass in the lab", flush=True)
    if with_tail and (result.problem or not result.booted):
        print(f"lab: {name}: last {len(result.log_tail)} lines of the VM's output:", flush=True)
        for line in result.log_tail:
            print(f"lab: | {line}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_lab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kernel", choices=LAB_KERNELS, help="run one kernel only (default: all)")
    parser.add_argument("--skip-setup", action="store_true", help="use the installed kernels as they are")
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        help="run one boot profile only: base (every kernel test but vfio) or iommu (the vfio group); default: all",
    )
    parser.add_argument("--keep-going", action="store_true", help="run later boots after one fails")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, passed to the guest")
    parser.add_argument("--memory", default="4G", help="guest memory (default 4G)")
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per VM boot (default 2400)")
    parser.add_argument("--results", help="results directory (default: a new one under /tmp)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the VM's output")
    parser.add_argument(
        "--capture-fixtures",
        action="store_true",
        help="instead of the tests: build the e2e scene and capture it into fixtures/lab-SERIES (base boot only)",
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.capture_fixtures and args.profile not in (None, "base"):
        parser.error("--capture-fixtures runs in the base boot only")
    if args.keyword:
        args.pytest_args = ["-k", args.keyword, *args.pytest_args]
    return args


def plan_boots(kernels: list[Kernel], args: argparse.Namespace) -> list[tuple[Kernel, Profile]]:
    """(kernel, profile) for each VM to boot, kernel by kernel. Every profile boots unless
    --profile names one, --capture-fixtures (base only), or pytest arguments (-k ...) select no
    test of it for that kernel (collected on the host as that kernel would); selecting no test
    at all is a lab failure, before any boot."""
    profiles = [p for p in PROFILES if args.profile in (None, p.name)]
    if args.capture_fixtures:
        profiles = [p for p in profiles if p.name == "base"]
    boots = [(k, p) for k in kernels for p in profiles if k.series in p.series]
    if args.capture_fixtures or not args.pytest_args:
        return boots
    chosen = [(k, p) for k, p in boots if selected_tests(k, p, args.pytest_args)]
    if not chosen:
        raise LabError(f"no kernel test is selected by {shlex.join(args.pytest_args)} (pytest --collect-only)")
    for k, p in boots:
        if (k, p) not in chosen:
            print(f"lab: {boot_name(k, p)}: none of its tests is selected; not booted", flush=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if os.geteuid() != 0:
            raise LabError("run the lab as root (qemu, dpkg -x and depmod need it)")
        probe = subprocess.run([sys.executable, "-c", "import pytest, psutil"], capture_output=True)
        if probe.returncode != 0:
            raise LabError(f"{sys.executable} cannot import pytest and psutil: pip install -e '.[test]'")
        # setup.sh installs vng: look for it only after it ran (a fresh machine has none before).
        kernels = installed_kernels() if args.skip_setup else run_setup()
        args.vng = find_vng()
        if args.vng is None:
            hint = "run without --skip-setup to install it" if args.skip_setup else "setup.sh did not install it"
            raise LabError(f"vng (virtme-ng) not found on PATH nor in {sysconfig.get_path('scripts')}; {hint}")
        wanted = [args.kernel] if args.kernel else list(LAB_KERNELS)
        missing = [s for s in wanted if s not in {k.series for k in kernels}]
        if missing:
            hint = " (drop --skip-setup to install it)" if args.skip_setup else ""
            raise LabError(f"no {', '.join(missing)} kernel found{hint}")
        kernels = [k for k in kernels if k.series in wanted]
        boots = plan_boots(kernels, args)
        if args.results:
            os.makedirs(args.results, exist_ok=True)
            run_dir = os.path.abspath(args.results)
        else:
            run_dir = tempfile.mkdtemp(prefix="dmabuf-inspect-lab-", dir=SHARED_DIR)
    except LabError as exc:
        print(f"lab: LAB FAILURE: {exc}", flush=True)
        print("0 passed, 0 failed", flush=True)
        return 1

    lock = open(LOCK, "w")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"lab: another lab run holds {LOCK}; waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)

    results: list[Result] = []
    for kernel, profile in boots:
        result = run_kernel(kernel, profile, args, run_dir)
        report(result)
        results.append(result)
        if not result.ok and not args.keep_going:
            break

    print("lab: ===== summary", flush=True)
    for result in results:
        report(result, with_tail=False)
    for kernel, profile in boots[len(results) :]:
        print(f"lab: {boot_name(kernel, profile)}: NOT RUN (an earlier boot failed; --keep-going runs it)", flush=True)
    passed = sum(r.passed for r in results)
    failed = sum(r.failed + r.errors + r.skipped for r in results)
    all_ok = len(results) == len(boots) and all(r.ok for r in results)
    print(f"lab: {'PASSED' if all_ok else 'FAILED'}; results in {run_dir}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
