#!/usr/bin/env bash
# Installs the kernel lab: qemu, udev, kmod, virtme-ng, and Debian's 6.12 and 7.3 kernels.
# Idempotent and cached under $LAB_CACHE (default ~/.cache/dmabuf-inspect-lab).
# Prints, on its last lines, "KERNEL <version> <vmlinuz>" for each kernel it made ready.
set -euo pipefail
LAB_CACHE=${LAB_CACHE:-$HOME/.cache/dmabuf-inspect-lab}
mkdir -p "$LAB_CACHE/apt/lists/partial" "$LAB_CACHE/debs"
export DEBIAN_FRONTEND=noninteractive

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v udevadm >/dev/null || need_pkgs+=(udev)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v busybox >/dev/null || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
# vng may be installed yet not on PATH (pyenv shims): run_lab.py also looks next to python3.
command -v vng >/dev/null || [ -x "$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")/vng" ] || python3 -m pip install -q virtme-ng

# The machine's own Debian mirror, as its sources name it.
mirror=$(cat /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null \
         | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$LAB_CACHE/sources.list" <<SRC
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror trixie-backports main
SRC
apt_opts=(-o "Dir::Etc::SourceList=$LAB_CACHE/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$LAB_CACHE/apt/lists" -o "Dir::Cache=$LAB_CACHE/apt"
          -o "APT::Architecture=amd64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")

stamp="$LAB_CACHE/lists.stamp"
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
    apt-get "${apt_opts[@]}" update -qq
    touch "$stamp"
fi

newest() {  # newest package name matching a regex, from the lab's lists
    apt-cache "${apt_opts[@]}" pkgnames | grep -E "$1" | sort -V | tail -n1
}
k612=$(newest '^linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned$')
ver73=$(apt-cache "${apt_opts[@]}" pkgnames | grep -oE '^linux-binary-7\.3\.[0-9]+\+deb13-amd64$' | sort -V | tail -n1 | sed 's/^linux-binary-//')
[ -n "$k612" ] || { echo "setup: no 6.12 kernel package in trixie" >&2; exit 1; }
[ -n "$ver73" ] || { echo "setup: no 7.3 kernel package in trixie-backports" >&2; exit 1; }

fetch() {  # apt-get download into the cache, then dpkg -x to /
    local pkg
    for pkg in "$@"; do
        if ! ls "$LAB_CACHE/debs/${pkg}_"*.deb >/dev/null 2>&1; then
            (cd "$LAB_CACHE/debs" && apt-get "${apt_opts[@]}" download -qq "$pkg")
        fi
        dpkg -x "$LAB_CACHE"/debs/"${pkg}"_*.deb /
    done
}
fetch "$k612"
fetch "linux-binary-$ver73"
# linux-binary-7.3.* holds only vmlinuz; the modules (9p, virtio, vgem...) are a package of their own.
# Match its name as a fixed string: the version has a "+", which a regex reads as a quantifier.
mods73=$(apt-cache "${apt_opts[@]}" pkgnames | grep -Fx "linux-modules-$ver73" | head -n1 || true)
[ -n "$mods73" ] || { echo "setup: no linux-modules-$ver73 package in trixie-backports" >&2; exit 1; }
fetch "$mods73"

v612=${k612#linux-image-}; v612=${v612%-unsigned}
for v in "$v612" "$ver73"; do
    [ -d "/usr/lib/modules/$v" ] || [ -d "/lib/modules/$v" ] || { echo "setup: modules for $v missing" >&2; exit 1; }
    depmod "$v"
    for m in 9p vgem; do  # virtme-ng mounts the root over 9p; the tests need vgem (udmabuf is built in)
        modinfo -k "$v" "$m" >/dev/null 2>&1 || { echo "setup: kernel $v has no module $m" >&2; exit 1; }
    done
done
vm612=/boot/vmlinuz-$v612
[ -f "$vm612" ] || vm612=/usr/lib/modules/$v612/vmlinuz
vm73=/usr/lib/modules/$ver73/vmlinuz
[ -f "$vm73" ] || vm73=/boot/vmlinuz-$ver73
for f in "$vm612" "$vm73"; do [ -f "$f" ] || { echo "setup: $f missing" >&2; exit 1; }; done
echo "KERNEL $v612 $vm612"
echo "KERNEL $ver73 $vm73"
