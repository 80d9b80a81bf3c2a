"""Test-side VFIO helpers for the lab's IOMMU boot: find qemu's `edu` device and bind it to vfio-pci.

The IOMMU boot (run_lab.py --profile iommu) gives the guest an emulated Intel IOMMU and qemu's
`edu` test device (PCI 1234:11e8; BAR 0 is 1 MiB of MMIO). Import it as `import vfiolab`.

    edu = vfiolab.bind_edu()        # modprobe vfio-pci; driver_override; drivers_probe
    edu.address, edu.group          # '0000:00:03.0', 3: /dev/vfio/3 exists
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass

EDU_VENDOR = "0x1234"
EDU_DEVICE = "0x11e8"
EDU_BAR0_BYTES = 1 << 20
PCI_DEVICES = "/sys/bus/pci/devices"


class VfioLabError(Exception):
    """The IOMMU boot lacks something the vfio group needs; one line."""


@dataclass(frozen=True, slots=True)
class Edu:
    address: str
    group: int

    @property
    def group_path(self) -> str:
        return f"/dev/vfio/{self.group}"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def find_edu() -> str | None:
    for dev in sorted(glob.glob(f"{PCI_DEVICES}/*")):
        try:
            if _read(f"{dev}/vendor") == EDU_VENDOR and _read(f"{dev}/device") == EDU_DEVICE:
                return os.path.basename(dev)
        except OSError:
            continue
    return None


def iommu_groups() -> list[str]:
    try:
        return os.listdir("/sys/kernel/iommu_groups")
    except OSError:
        return []


def problems() -> list[str]:
    """What this machine lacks for the vfio group; empty in the lab's IOMMU boot."""
    found = []
    if not iommu_groups():
        found.append("no IOMMU groups (/sys/kernel/iommu_groups is empty: boot with an IOMMU and intel_iommu=on)")
    if find_edu() is None:
        found.append(f"no qemu edu device (PCI {EDU_VENDOR}:{EDU_DEVICE}; qemu -device edu)")
    return found


def driver_of(address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"{PCI_DEVICES}/{address}/driver"))
    except OSError:
        return None


def group_of(address: str) -> int:
    return int(os.path.basename(os.readlink(f"{PCI_DEVICES}/{address}/iommu_group")))


def bind_edu() -> Edu:
    """Bind the edu device to vfio-pci (idempotent); VfioLabError says what is missing."""
    missing = problems()
    if missing:
        raise VfioLabError("; ".join(missing))
    address = find_edu()
    assert address is not None
    if driver_of(address) != "vfio-pci":
        proc = subprocess.run(["modprobe", "vfio-pci"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise VfioLabError(f"modprobe vfio-pci failed: {proc.stderr.strip()}")
        _write(f"{PCI_DEVICES}/{address}/driver_override", "vfio-pci")
        current = driver_of(address)
        if current is not None:
            _write(f"{PCI_DEVICES}/{address}/driver/unbind", address)
        _write("/sys/bus/pci/drivers_probe", address)
    if driver_of(address) != "vfio-pci":
        raise VfioLabError(f"edu {address} is bound to {driver_of(address)}, not vfio-pci, after drivers_probe")
    edu = Edu(address, group_of(address))
    if not os.path.exists(edu.group_path):
        raise VfioLabError(f"edu {address} is bound to vfio-pci but {edu.group_path} does not exist")
    return edu


def unbind_edu(address: str) -> None:
    """Hand the device back to no driver (for the 'not bound to vfio-pci' test); bind_edu() re-binds."""
    if driver_of(address) is not None:
        _write(f"{PCI_DEVICES}/{address}/driver/unbind", address)
    _write(f"{PCI_DEVICES}/{address}/driver_override", "\n")
