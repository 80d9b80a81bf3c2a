"""run_lab.py's boot profiles: which boots run, with which qemu devices, kernel parameters and
tests (the VFIO group in the IOMMU boot only), and that the summary names each boot. No VM starts."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from paths import REPO

K612 = ("6.12", "6.12.117+deb13-amd64", "/boot/vmlinuz-6.12.117+deb13-amd64")
K73 = ("7.3", "7.3.4+deb13-amd64", "/usr/lib/modules/7.3.4+deb13-amd64/vmlinuz")


@pytest.fixture(scope="module")
def lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_lab", REPO / "tests/kernel/run_lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_lab"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _kernels(lab: ModuleType) -> list[object]:
    return [lab.Kernel(*K612), lab.Kernel(*K73)]


def _plan(lab: ModuleType, argv: list[str]) -> list[tuple[str, str]]:
    args = lab.parse_args(argv)
    return [(k.series, p.name) for k, p in lab.plan_boots(_kernels(lab), args)]


def test_no_options_run_every_profile_on_every_kernel(lab: ModuleType) -> None:
    assert _plan(lab, []) == [("6.12", "base"), ("6.12", "iommu"), ("7.3", "base"), ("7.3", "iommu")]
    assert _plan(lab, ["--profile", "iommu"]) == [("6.12", "iommu"), ("7.3", "iommu")]
    assert _plan(lab, ["--capture-fixtures"]) == [("6.12", "base"), ("7.3", "base")]


def test_the_profiles_split_the_kernel_tests(lab: ModuleType) -> None:
    base, iommu = lab.PROFILES
    assert (base.name, base.markexpr, base.qemu_opts, base.kernel_args) == ("base", "kernel and not vfio", (), ())
    assert (iommu.name, iommu.markexpr) == ("iommu", "kernel and vfio")
    command = lab.pytest_command("/tmp/r", ["-x"], iommu)
    assert command[command.index("-m", command.index("pytest")) + 1] == "kernel and vfio" and command[-1] == "-x"


def test_the_iommu_boot_has_the_iommu_and_edu(lab: ModuleType) -> None:
    args = lab.parse_args(["--profile", "iommu"])
    args.vng = "vng"
    _, iommu = lab.PROFILES
    cmd = lab.vng_command(args, lab.Kernel(*K73), iommu, "/tmp/r/guest.sh", "/tmp/r")
    assert "--disable-microvm" in cmd and "--disable-kvm" in cmd  # q35 under TCG: intel-iommu needs it
    assert "--qemu-opts=-cpu max -device intel-iommu,intremap=off -device edu" in cmd
    appended = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--append"]
    assert appended == ["intel_iommu=on", "vfio_iommu_type1.allow_unsafe_interrupts=1"]
    base_cmd = lab.vng_command(args, lab.Kernel(*K73), lab.PROFILES[0], "/tmp/r/guest.sh", "/tmp/r")
    assert "--qemu-opts=-cpu max" in base_cmd and "--append" not in base_cmd


def test_k_boots_only_what_it_selects_as_each_kernel_would(lab: ModuleType) -> None:
    # test_one_range exists on 6.19+ only (the module drops it by os.uname()): collected as each kernel
    assert _plan(lab, ["--profile", "iommu", "-k", "test_one_range"]) == [("7.3", "iommu")]


def test_the_guest_knows_its_profile(lab: ModuleType) -> None:
    script = lab.guest_script(lab.Kernel(*K73), lab.PROFILES[1], "/tmp/r", ["python3", "-m", "pytest"])
    assert "export DMABUF_INSPECT_LAB_PROFILE=iommu\n" in script


def test_the_summary_names_each_boot(lab: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    result = lab.Result(lab.Kernel(*K73), lab.PROFILES[1], booted=True, tests=8, passed=8, seconds=134)
    lab.report(result, with_tail=False)
    assert capsys.readouterr().out == (
        "lab: 7.3.4+deb13-amd64 [iommu]: OK: 8 tests: 8 passed, 0 failed, 0 errors, 0 skipped (134s)\n"
    )
    lab.report(lab.Result(lab.Kernel(*K612), lab.PROFILES[0], booted=True), with_tail=False)
    assert capsys.readouterr().out.startswith("lab: 6.12.117+deb13-amd64: FAILED: 0 tests")
