"""The offline Vagrant box: a Debian 12 VM image built here from Debian packages, nothing fetched at `up`.

`ipsec-lab box build` (and the Vagrant backend's `up`, when the box is missing) runs the recipe:
mmdebstrap makes the root tree from the machine's own Debian sources, `mkfs.ext4 -d` turns it into
a file system image without mounting anything, GRUB's boot.img and core.img are placed by hand (no
udev here, so grub-install cannot find the drive; see shared/notes/vm-field-notes.md), and qemu-img
makes the qcow2 a libvirt box carries. No loop device and no mount are used, so a build that is
killed leaves only its work directory, which the next build removes.

The box is cached under ~/.cache/ipsec-lab/boxes/ with the recipe's hash in its name: a changed
package list, hook or source rebuilds it; an unchanged one never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..lab.errors import LabError, UsageError

BOX_NAME = "ipsec-lab/debian12"
SUITE = "bookworm"
DISK_GB = 4
ROOT_LABEL = "vmroot"

# What a node needs, offline: the kernel with ESP and XFRM interfaces (the cloud kernel has esp4,
# xfrm_interface and aesni), systemd and sshd for Vagrant, strongSwan with the plugins the rendered
# strongswan.conf loads and the starter (the seed's `ipsec` command and /run/charon.pid), the CNI
# plugins, the tools the checks run (tcpdump, curl, ping, iperf3), and python3 for the pod server;
# python3-venv so that scripts/setup.sh runs offline inside a VM (the netns backend on the box's
# kernel, tests/test_netns_in_vm.py): it installs every LAB_PACKAGES entry that is missing.
PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "kmod", "openssh-server", "sudo",
    "iproute2", "iptables", "procps", "iputils-ping", "netbase", "ca-certificates", "less", "rsync",
    "strongswan-charon", "strongswan-swanctl", "strongswan-starter", "libstrongswan-standard-plugins",
    "libcharon-extra-plugins", "containernetworking-plugins",
    "python3", "python3-venv", "curl", "tcpdump", "iperf3",
    # the rest of setup.sh's LAB_PACKAGES: strongSwan's pki (`up --auth x509`), the web view's font
    "strongswan-pki", "fonts-dejavu-core",
)

SSH_KEYGEN_DROPIN = (
    "[Service]\nExecStartPre=\n"
    "ExecStartPre=/bin/sh -c 'test -e /etc/ssh/ssh_host_ed25519_key || "
    "exec /usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\n"
    "ExecStartPre=/usr/sbin/sshd -t\n"
)

# mmdebstrap --customize-hook scripts ("$1" is the root tree). Vagrant's conventions: a `vagrant`
# user with passwordless sudo and Vagrant's insecure key (replaced by Vagrant at the first `up`).
HOOKS: tuple[str, ...] = (
    'echo vmbox >"$1/etc/hostname"; printf "127.0.0.1 localhost\\n127.0.1.1 vmbox\\n" >"$1/etc/hosts"',
    f'echo "LABEL={ROOT_LABEL} / ext4 defaults 0 1" >"$1/etc/fstab"',
    # DHCP on every NIC; Vagrant's own network file for the private network wins over this one.
    'mkdir -p "$1/etc/systemd/network"; '
    'printf "[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=ipv4\\n" >"$1/etc/systemd/network/99-dhcp.network"; '
    'chroot "$1" systemctl enable systemd-networkd; '
    # network-online.target (the boot unit waits for it) once one link is online: the underlay's
    # static address is, at once; waiting for the management NIC's DHCP too took 13 s of a reboot.
    'mkdir -p "$1/etc/systemd/system/systemd-networkd-wait-online.service.d"; '
    'printf "[Service]\\nExecStart=\\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\\n" '
    '>"$1/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"',
    'chroot "$1" useradd -m -s /bin/bash -G sudo vagrant; echo vagrant:vagrant | chroot "$1" chpasswd',
    'echo "vagrant ALL=(ALL) NOPASSWD:ALL" >"$1/etc/sudoers.d/vagrant"; chmod 440 "$1/etc/sudoers.d/vagrant"',
    'install -d -m700 "$1/home/vagrant/.ssh"; install -m600 "$IPSEC_LAB_VAGRANT_PUB" "$1/home/vagrant/.ssh/authorized_keys"; '
    'chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh',
    # Host keys are made at first boot (every VM its own), and the machine id too. One Ed25519 key
    # only: `ssh-keygen -A` (RSA 3072, ECDSA, Ed25519) took 30 s of a first boot under emulation.
    'rm -f "$1"/etc/ssh/ssh_host_*; : >"$1/etc/machine-id"; mkdir -p "$1/etc/systemd/system/ssh.service.d"; '
    f'printf %s {shlex.quote(SSH_KEYGEN_DROPIN)} >"$1/etc/systemd/system/ssh.service.d/keygen.conf"; '
    'echo "HostKey /etc/ssh/ssh_host_ed25519_key" >"$1/etc/ssh/sshd_config.d/ipsec-lab-hostkey.conf"',
)

GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label", "serial", "terminal", "echo")
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
TOOLS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "sfdisk": "fdisk", "grub-mkimage": "grub2-common",
         "qemu-img": "qemu-utils"}

Line = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def vagrant_insecure_key() -> Path:
    """Vagrant's insecure public key, from the installed Vagrant (Debian's package or HashiCorp's)."""
    for pattern in ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
                    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
                    "/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[-1]
    raise UsageError("Vagrant's insecure key (keys/vagrant.pub) is not here: install Vagrant (scripts/setup.sh --vm)")


def debian_sources(path: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The machine's enabled Debian stanzas (deb822): the box comes from the same mirror as the host."""
    try:
        text = path.read_text()
    except OSError:
        raise UsageError(f"cannot read {path}: the box is built from the machine's Debian sources (deb822)") from None
    stanzas = [s for s in text.split("\n\n") if "debian.org" in s and "Enabled: no" not in s]
    if not stanzas:
        raise UsageError(f"{path} names no enabled Debian mirror to build the box from")
    return "\n\n".join(s.strip() for s in stanzas) + "\n"


@dataclass(frozen=True)
class Recipe:
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    hooks: tuple[str, ...] = HOOKS
    sources: str = field(default_factory=debian_sources)
    disk_gb: int = DISK_GB

    def digest(self) -> str:
        doc = json.dumps({"suite": self.suite, "packages": self.packages, "hooks": self.hooks, "sources": self.sources,
                          "disk_gb": self.disk_gb, "grub": GRUB_MODULES, "format": 1}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipsec-lab" / "boxes"


def box_file(recipe: Recipe) -> Path:
    return cache_dir() / f"ipsec-lab-debian12-{recipe.digest()}.box"


def kernel_file(recipe: Recipe) -> Path:
    """The box's kernel, beside it: what the KVM probe boots (hypervisor.probe_accel)."""
    return cache_dir() / f"ipsec-lab-debian12-{recipe.digest()}.vmlinuz"


def vagrant_name(recipe: Recipe) -> str:
    """The name `vagrant box add` gives it: one per recipe, so a changed recipe never boots an old box."""
    return f"{BOX_NAME}-{recipe.digest()}"


def cached(recipe: Recipe | None = None) -> Path | None:
    recipe = recipe or Recipe()
    path = box_file(recipe)
    return path if path.is_file() and kernel_file(recipe).is_file() else None


@dataclass
class BuildReport:
    box: Path
    seconds: dict[str, float]
    built: bool


def _run(argv: Sequence[str], on_line: Line, *, timeout: float, what: str, env: dict[str, str] | None = None,
         input: bytes | None = None) -> None:
    """Run one build step, its output streamed line by line; one clear line when it fails."""
    on_line("$ " + " ".join(argv))
    p = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert p.stdout is not None
    if input is not None:
        assert p.stdin is not None
        p.stdin.write(input)
        p.stdin.close()
    deadline = time.monotonic() + timeout
    last = ""
    for raw in p.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line:
            last = line
            on_line(line)
        if time.monotonic() > deadline:
            p.kill()
    if p.wait() != 0:
        raise LabError(f"box build: {what} failed (exit {p.returncode}): {last or 'no output'}")


def check_tools() -> None:
    """One line (UsageError) when a tool the build runs is missing."""
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is missing, and the box build needs it: install the Debian package {pkg} "
                             "(scripts/setup.sh --vm)")
    if not (GRUB_DIR / "boot.img").exists():
        raise UsageError(f"{GRUB_DIR}/boot.img is missing: install the Debian package grub-pc-bin (scripts/setup.sh --vm)")


def _sweep_stale_work_dirs(parent: Path) -> None:
    """Work directories of builds that were killed (nothing is mounted in them: see the module doc)."""
    for d in parent.glob("build-*"):
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)


def build(recipe: Recipe | None = None, on_line: Line = _quiet, *, force: bool = False) -> BuildReport:
    """Build the box (or find it cached). Needs root: mmdebstrap's root mode and chroot hooks."""
    recipe = recipe or Recipe()
    target = box_file(recipe)
    if target.is_file() and kernel_file(recipe).is_file() and not force:
        return BuildReport(target, {}, built=False)
    if os.geteuid() != 0:
        raise UsageError("building the box needs root (mmdebstrap and chroot): run it as root")
    check_tools()
    key = vagrant_insecure_key()
    parent = cache_dir()
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_work_dirs(parent)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=parent))
    times: dict[str, float] = {}
    try:
        times.update(_build_in(work, recipe, key, on_line))
        t0 = time.monotonic()
        tmp = work / "out.box"
        _run(["tar", "-C", str(work / "box"), "-cf", str(tmp), "metadata.json", "Vagrantfile", "box.img"], on_line,
             timeout=300, what="packing the box")
        os.replace(work / "vmlinuz", kernel_file(recipe))
        os.replace(tmp, target)
        times["pack_s"] = time.monotonic() - t0
        for old in parent.glob("ipsec-lab-debian12-*"):  # boxes (and kernels) of earlier recipes
            if old not in (target, kernel_file(recipe)) and old.is_file():
                old.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildReport(target, times, built=True)


def _build_in(work: Path, recipe: Recipe, key: Path, on_line: Line) -> dict[str, float]:
    times: dict[str, float] = {}
    rootfs, boxdir = work / "rootfs", work / "box"
    boxdir.mkdir()
    sources = work / "debian.sources"
    sources.write_text(recipe.sources)

    t0 = time.monotonic()
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--include=" + ",".join(recipe.packages)]
    apt_conf = Path("/etc/apt/apt.conf.d/99artifact-registry")  # a snapshot mirror: no Valid-Until checks
    if apt_conf.exists():
        argv.append(f"--aptopt={apt_conf}")
    argv += [f"--customize-hook={h}" for h in recipe.hooks]
    argv += [recipe.suite, str(rootfs), str(sources)]
    env = dict(os.environ, IPSEC_LAB_VAGRANT_PUB=str(key))
    _run(argv, on_line, timeout=1800, what="mmdebstrap (the root tree)", env=env)
    times["rootfs_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabError("box build: the root tree has no kernel in /boot")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[-1], work / "vmlinuz")  # kept beside the box: the KVM probe boots it
    grub = rootfs / "boot" / "grub"
    shutil.copytree(GRUB_DIR, grub / "i386-pc", dirs_exist_ok=True)
    (grub / "grub.cfg").write_text(grub_cfg(version))
    part, disk = work / "part.img", work / "disk.raw"
    size_mb = recipe.disk_gb * 1024
    with open(part, "wb") as f:
        f.truncate((size_mb - 1) * 1024 * 1024)  # the partition starts at 1 MiB
    _run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-d", str(rootfs), str(part)], on_line, timeout=600,
         what="mkfs.ext4 -d (the root file system)")
    shutil.rmtree(rootfs)
    with open(disk, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    _run(["sfdisk", "-q", str(disk)], on_line, timeout=60, what="sfdisk (the partition table)",
         input=b"label: dos\nstart=2048, type=83, bootable\n")
    _run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"], on_line,
         timeout=600, what="copying the file system into the disk")
    part.unlink()
    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES], on_line,
         timeout=120, what="grub-mkimage")
    if core.stat().st_size > 2047 * 512:
        raise LabError("box build: GRUB's core.img does not fit before the partition")
    # boot.img's first 440 bytes (the partition table after them stays), core.img from sector 1.
    _run(["dd", f"if={GRUB_DIR / 'boot.img'}", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none"],
         on_line, timeout=60, what="writing GRUB's boot sector")
    _run(["dd", f"if={core}", f"of={disk}", "bs=512", "seek=1", "conv=notrunc", "status=none"], on_line, timeout=60,
         what="writing GRUB's core image")
    times["disk_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    _run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(boxdir / "box.img")], on_line, timeout=600,
         what="qemu-img convert")
    disk.unlink()
    (boxdir / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                      "virtual_size": recipe.disk_gb}))
    (boxdir / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    times["qcow2_s"] = time.monotonic() - t0
    return times


def grub_cfg(kernel_version: str) -> str:
    return (
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
        "set timeout=0\nmenuentry debian {\n"
        f"  search --no-floppy --label {ROOT_LABEL} --set=root\n"
        f"  linux /boot/vmlinuz-{kernel_version} root=LABEL={ROOT_LABEL} ro quiet console=tty0 console=ttyS0,115200n8 "
        "net.ifnames=0 biosdevname=0\n"
        f"  initrd /boot/initrd.img-{kernel_version}\n}}\n"
    )


# The box's own Vagrantfile: defaults a lab's Vagrantfile may override.
BOX_VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
    lv.graphics_type = "none"
    lv.video_type = "none"
  end
end
"""
