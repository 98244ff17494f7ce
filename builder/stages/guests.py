"""Guest domains: their files on the medium, their xl configs and start list in dom0.

Guest files live on the medium under /guests/NAME/ and are read from there in dom0, so they are
not copied into the squashfs layers. Each kind makes its files in its own way:

- busybox: dom0's kernel and an initramfs of dom0's static busybox (plus an optional overlay);
  the guest lives in RAM and has no disk.
- debian: mmdebstrap writes a tarball of a small Debian system, `mkfs.ext4 -d` turns it into the
  guest's disk (no loop mounts), and the kernel is taken from that same tree. Its initramfs is
  xenlive's own: dom0's static busybox, the few modules that reach the root file system (taken
  from the guest's tree, in the order builder/kmod.py works out) and an /init that mounts it and
  hands over to systemd. initramfs-tools' own took 15-22 s of a guest's boot under TCG.
- image: the profile's own kernel, initrd, disk or cdrom, checked against their sha256 at load.

Built artifacts are cache entries keyed by a hash of the guest's own inputs (builder/cache.py), so
changing one guest rebuilds that guest only.

Writable disks on a read-only medium: dom0's xenlive-guests service puts a device-mapper snapshot
over the read-only image on the medium, with its copy-on-write store in a tmpfs of
`write_buffer` MiB. Writes cost dom0 RAM as they happen, up to that size (the memory-budget check
counts it); when the buffer is full the snapshot becomes invalid and the guest sees I/O errors.
Nothing is ever written to the medium.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import tarfile
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from builder import cache, cpio, kmod, medium, mmdebstrap
from builder.checks.facts import gather
from builder.checks.rules import guest_need_mib
from builder.context import BuildContext
from builder.errors import CommandError, XenliveError
from builder.fsutil import sha256_file
from builder.guestmem import GuestMemory, guest_minimum
from builder.introspect import MAX_MODULE_BYTES, compression_of, inflate, vmlinux_of
from builder.log import VERBOSE, step
from builder.profile import Guest, GuestKind, GuestType, Profile, to_data
from builder.run import run
from builder.stages.customize import dom0_path, masked_units
from builder.stages.rootfs import boot_file
from builder.templating import render

log = logging.getLogger(__name__)

REQUIRED_TOOLS = ["mmdebstrap", "mkfs.ext4"]  # only when a profile has a debian guest
STAGE_VERSION = 3  # bump when the way guest artifacts are made changes
BUSYBOX = "bin/busybox"
DOM0_ADDRESS = "@DOM0_ADDRESS@"  # replaced by xenlive-guests at boot with dom0's address on the bridge
HVM_DOM0_PACKAGES = ("qemu-system-xen",)  # the device model an hvm guest needs in dom0
CONSOLE_LOG = "/var/log/xen/console/guest-{name}.log"  # where xenconsoled --log=guest writes
# dom0's hotplug script for a guest's network interface (templates/dom0/usr/lib/xenlive/vif-bridge).
VIF_SCRIPT = "/usr/lib/xenlive/vif-bridge"
# ... and for its writable disk, a device-mapper snapshot (templates/dom0/usr/lib/xenlive/block).
BLOCK_SCRIPT = "/usr/lib/xenlive/block"
# /etc/xenlive/guests.tsv, one line per guest: what dom0's services read (lib.sh's read_guest).
GUEST_COLUMNS = (
    "name",
    "type",
    "memory_mib",
    "vcpus",
    "autostart",
    "order",
    "write_buffer_mib",
    "need_mib",
    "minimum_mib",
    "persist",
)

# A Debian guest stays small: the kernel, systemd with networkd, and the tools its network proof uses.
# xenstore-utils: xenstore-read, for dom0's address (usr/local/sbin/xenlive-guest-net).
DEBIAN_PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "iproute2",
    "iputils-ping",
    "xenstore-utils",
)
DEBIAN_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
# What its initramfs loads: an ext4 root on a Xen block device, and the network device. The guest's
# own initrd on its disk (initramfs-tools, MODULES=list) has the same, for whoever boots the disk elsewhere.
DEBIAN_INITRD_MODULES = ("xen-blkfront", "xen-netfront", "ext4")
INITRD_MODULES = "initrd-modules"  # in a Debian guest's cache entry: the modules, inflated, and their order
MODULE_ORDER = "order"  # one line per module, "NAME required" or "NAME optional", in load order
KERNEL_OPTIONS = "kernel-options"  # in a Debian guest's cache entry: what xenlive adds to its command line
# Debian's kernels start the BPF LSM (CONFIG_LSM ends in bpf), and systemd then loads its
# RestrictFileSystems= program at every boot: 3.6 s of a Debian guest's boot under nested TCG, though
# no unit of Debian 13's systemd asks for that restriction. The guest's kernel gets its own built-in
# list without bpf (lsm=); a guest's cmdline can name its own.
LSM_DROPPED = "bpf"
LSM_LIST = re.compile(r"[a-z0-9_]+(,[a-z0-9_]+)*")
# A PV guest sees Xen's virtual devices only: kernel/drivers keeps these, the rest (about 300 MB) goes.
DEBIAN_KEEP_DRIVERS = ("xen", "block", "md", "char")
# Units that only slow a guest's boot down (data/masked-units.txt, `guests`).
GUEST_MASKED = masked_units("guests")
DISK_SLACK = 1.25  # free room on an automatically sized guest disk
DISK_EXTRA_MIB = 32  # ext4 metadata and journal


def guest_dom0_packages(profile: Profile) -> tuple[str, ...]:
    """Packages dom0 needs for the profile's guests: qemu-system-xen only when an hvm guest exists,
    so profiles without one do not carry the device model's ~40 MB."""
    if any(g.type == GuestType.HVM for g in profile.guests):
        return HVM_DOM0_PACKAGES
    return ()


def required_tools(profile: Profile) -> list[str]:
    return list(REQUIRED_TOOLS) if any(g.kind == GuestKind.DEBIAN for g in profile.guests) else []


def start_order(profile: Profile) -> list[Guest]:
    """Guests in the order dom0 starts them: `order`, then name (as xendomains would)."""
    return sorted(profile.guests, key=lambda g: (g.order, g.name))


def build_guests(ctx: BuildContext) -> None:
    guest_dir = ctx.top / "etc/xen/guests"
    auto_dir = ctx.top / "etc/xen/auto"
    conf_dir = ctx.top / "etc/xenlive/guests"
    for directory in (guest_dir, auto_dir, conf_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for i, guest in enumerate(ctx.profile.guests, 1):
        medium_dir = ctx.staging / "guests" / guest.name
        medium_dir.mkdir(parents=True, exist_ok=True)
        options = ""
        with step(f"guest {i}/{len(ctx.profile.guests)}: {guest.name} ({guest.kind})"):
            if guest.kind == GuestKind.BUSYBOX:
                place_busybox(ctx, guest, medium_dir)
            elif guest.kind == GuestKind.DEBIAN:
                options = place_debian(ctx, guest, medium_dir)
            else:
                place_image(ctx, guest, medium_dir)
        (guest_dir / f"{guest.name}.cfg").write_text(xl_config(ctx.profile, guest, options))
        if guest.autostart:
            (auto_dir / f"{guest.name}.cfg").symlink_to(f"../guests/{guest.name}.cfg")
        if guest.ready:
            (conf_dir / f"{guest.name}.ready").write_text(render("guest.ready.j2", guest=guest))
        if guest.persist:
            # What the disk's saved writes on a stick belong to (usr/lib/xenlive/guests, writable_disk).
            (conf_dir / f"{guest.name}.disk").write_text(sha256_file(medium_dir / "disk.img") + "\n")
    facts = gather(ctx.profile, ctx.require_rootfs(), staging=ctx.staging, cache_dir=ctx.cache_dir)
    minimums = {}
    for guest in ctx.profile.guests:
        found = guest_minimum(guest, facts)
        minimums[guest.name] = found.minimum if isinstance(found, GuestMemory) else 0
    (ctx.top / "etc/xenlive/guests.tsv").write_text(guest_table(ctx.profile, facts.ramdisk_bytes, minimums))


def guest_table(profile: Profile, ramdisk_bytes: Mapping[str, int], minimums: Mapping[str, int] | None = None) -> str:
    """/etc/xenlive/guests.tsv: what dom0's services know of the guests, so none of them parses xl
    configs. One line per guest in start order; need_mib is what the memory-budget check counts for
    it (guest_need_mib), here with the RAM disk as it is on the medium; minimum_mib is the memory the
    guest-kernels check requires (builder/guestmem.py), 0 where it is not known. read_guest in
    /usr/lib/xenlive/lib.sh reads GUEST_COLUMNS in this order."""
    minimums = minimums or {}
    rows = [
        (g.name, g.type, g.memory, g.vcpus, "yes" if g.autostart else "no", g.order,
         g.write_buffer if g.has_disk else 0, guest_need_mib(g, ramdisk_bytes.get(g.name, 0)),
         minimums.get(g.name, 0), "yes" if g.persist else "no")
        for g in start_order(profile)
    ]  # fmt: skip
    return render("guests.tsv.j2", columns=GUEST_COLUMNS, rows=rows)


def mac_address(profile: Profile, guest: Guest) -> str:
    """A stable MAC in Xen's 00:16:3e range, so a guest keeps its DHCP lease from boot to boot."""
    digest = hashlib.sha256(f"{profile.name}/{guest.name}".encode()).digest()
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in (digest[0] & 0x7F, digest[1], digest[2]))


def disk_specs(guest: Guest) -> list[str]:
    """xl disk specs: the writable snapshot xenlive-guests makes, and a read-only cdrom."""
    base = medium.in_dom0(f"{medium.GUESTS}/{guest.name}")
    hvm = guest.type == GuestType.HVM
    specs = []
    if guest.has_disk:
        vdev = "hda" if hvm else "xvda"
        specs.append(
            f"format=raw, vdev={vdev}, access=rw, script={BLOCK_SCRIPT}, target=/dev/mapper/xenlive-{guest.name}"
        )
    if guest.cdrom is not None:
        specs.append(f"format=raw, vdev=hdc, access=ro, devtype=cdrom, target={base}/cdrom.iso")
    return specs


def kernel_cmdline(guest: Guest, options: str = "") -> str:
    """The guest kernel's command line: for a Debian guest, its root and the options of its cache
    entry (KERNEL_OPTIONS) before the profile's cmdline, whose own lsm= and root= then win."""
    if guest.kind == GuestKind.DEBIAN:
        return " ".join(part for part in ("root=/dev/xvda rw", options, guest.cmdline) if part)
    return guest.cmdline


def xl_config(profile: Profile, guest: Guest, kernel_options: str = "") -> str:
    base = medium.in_dom0(f"{medium.GUESTS}/{guest.name}")
    # hvm guests boot from their disk or cdrom, unless they name a kernel (xl's direct kernel boot).
    direct_boot = guest.type != GuestType.HVM or guest.kind == GuestKind.BUSYBOX or isinstance(guest.kernel, Path)
    has_initrd = guest.kind != GuestKind.IMAGE or isinstance(guest.initrd, Path)
    bridge = profile.dom0.network.bridge
    return render(
        "guest.cfg.j2",
        profile=profile,
        guest=guest,
        kernel=f"{base}/vmlinuz" if direct_boot else "",
        ramdisk=f"{base}/initrd.img" if direct_boot and has_initrd else "",
        extra=kernel_cmdline(guest, kernel_options),
        disks=disk_specs(guest),
        vif=f"mac={mac_address(profile, guest)}, bridge={bridge}, script={VIF_SCRIPT}"
        if guest.network and bridge
        else "",
        boot="d" if guest.cdrom is not None else "c",
        console_log=CONSOLE_LOG.format(name=guest.name),
    )


def _place(src: Path, dest: Path) -> None:
    """A hard link when the cache and the workspace share a file system (a 300 MB disk costs
    nothing), a copy otherwise."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def place_kernel(ctx: BuildContext, guest: Guest, src: Path, dest: Path) -> None:
    """A Debian kernel (dom0's, or a Debian guest's own) for a pv guest as the ELF inside it (its
    bzImage's payload, inflated here), for other types as it is. libxc inflates a bzImage in dom0
    at every `xl create`: 2.2 of the 3.3 s it took for a Debian kernel under TCG with nothing else
    running; an hvm guest boots it through QEMU, which wants the bzImage. Kernels with the same
    bytes inflate once per build, and the medium keeps one copy (stages/iso.py). A kernel the
    profile names is the user's file, with its own sha256: it goes on the medium as it is."""
    if guest.type != GuestType.PV:
        _place(src, dest)
        return
    inflated = ctx.workdir / "kernels" / sha256_file(src)
    if not inflated.exists():
        inflated.parent.mkdir(exist_ok=True)
        tmp = inflated.with_suffix(".tmp")
        tmp.write_bytes(vmlinux_of(src.read_bytes()))
        tmp.replace(inflated)
    _place(inflated, dest)


# --- busybox --------------------------------------------------------------------------------------


def place_busybox(ctx: BuildContext, guest: Guest, medium_dir: Path) -> None:
    tree = ctx.require_rootfs()
    entries = busybox_initrd(tree, guest, ctx.profile.base_dir)
    key = cache.input_hash({"stage": STAGE_VERSION, "kind": "busybox", "initrd": _entries_digest(entries)})

    def make(tmp: Path) -> list[str]:
        cpio.write_gzip(entries, tmp / "initrd.img")
        return ["initrd.img"]

    if isinstance(guest.kernel, Path):
        _place(ctx.profile.base_dir / guest.kernel, medium_dir / "vmlinuz")
    else:
        place_kernel(ctx, guest, boot_file(tree, "kernel"), medium_dir / "vmlinuz")
    if isinstance(guest.initrd, Path):
        _place(ctx.profile.base_dir / guest.initrd, medium_dir / "initrd.img")
        return
    entry, cached = ctx.holds.enter_context(cache.use(ctx.cache_dir, "guest", key, make))
    ctx.cache_hits[f"guest:{guest.name}"] = cached
    _place(entry / "initrd.img", medium_dir / "initrd.img")


def _entries_digest(entries: list[cpio.Entry]) -> str:
    return hashlib.sha256(cpio.archive(entries)).hexdigest()


def _busybox_base(tree: Path, guest: Guest, init: str) -> list[cpio.Entry]:
    """What every initramfs xenlive makes has: dom0's static busybox, the console, /init."""
    busybox = tree / BUSYBOX
    if not busybox.is_file():
        raise XenliveError(
            f"dom0 tree has no /{BUSYBOX} for guest {guest.name!r}",
            hint="keep busybox-static in dom0's packages",
        )
    return [
        cpio.directory("bin"),
        cpio.regular("bin/busybox", busybox.read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("dev"),
        cpio.chardev("dev/console", 5, 1),
        cpio.directory("proc"),
        cpio.directory("sys"),
        cpio.directory("tmp", 0o1777),
        cpio.directory("root", 0o700),
        cpio.regular("init", init.encode(), 0o755),
    ]


def busybox_initrd(tree: Path, guest: Guest, base_dir: Path | None = None) -> list[cpio.Entry]:
    """A minimal initramfs: dom0's static busybox, an /init that prints a ready marker, the overlay."""
    entries = _busybox_base(tree, guest, render("busybox-init.j2", guest=guest))
    if guest.overlay is not None:
        entries += overlay_entries((base_dir or Path.cwd()) / guest.overlay)
    return entries


def debian_initrd(tree: Path, guest: Guest, modules: Path) -> list[cpio.Entry]:
    """A Debian guest's initramfs: busybox, the modules of its cache entry (`modules`, with their
    order) and an /init that loads them, mounts the root named by root= and switches to it."""
    entries = _busybox_base(tree, guest, render("debian-init.j2", guest=guest))
    entries.append(cpio.directory("lib"))
    entries.append(cpio.directory("lib/modules"))
    order = (modules / MODULE_ORDER).read_text()
    entries.append(cpio.regular(f"lib/modules/{MODULE_ORDER}", order.encode()))
    for line in order.splitlines():
        name = line.split()[0]
        entries.append(cpio.regular(f"lib/modules/{name}.ko", (modules / f"{name}.ko").read_bytes()))
    return entries


def kernel_modules(tree: Path) -> Path:
    """The newest /lib/modules/VERSION of a Debian guest's tree that has a modules.dep.

    The tree's links are followed as the guest would follow them (dom0_path), never to the host's
    files: the tree comes from packages of a mirror the profile names."""
    modules = dom0_path(tree, None, "lib/modules", follow_last=True)
    versions = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    bases = [dom0_path(tree, None, f"lib/modules/{v}", follow_last=True) for v in versions]
    bases = [b for b in bases if (b / "modules.dep").is_file()]
    if not bases:
        raise XenliveError(
            "the Debian guest tree has no /lib/modules/*/modules.dep", hint="is linux-image-amd64 installed?"
        )
    return bases[-1]


def kernel_options(tree: Path) -> str:
    """What xenlive adds to a Debian guest kernel's command line: lsm= with the kernel's built-in
    list (CONFIG_LSM of its /boot/config-VERSION) less LSM_DROPPED; nothing when the list cannot
    be read or has no LSM_DROPPED."""
    version = kernel_modules(tree).name
    data = kmod.read_regular(dom0_path(tree, None, f"boot/config-{version}"), MAX_MODULE_BYTES)
    for line in (data or b"").decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        value = value.strip('"')
        if key == "CONFIG_LSM" and LSM_LIST.fullmatch(value):
            names = value.split(",")
            if LSM_DROPPED in names:
                return "lsm=" + ",".join(n for n in names if n != LSM_DROPPED)
    return ""


def initrd_modules(tree: Path, dest: Path) -> list[str]:
    """Inflate the modules a Debian guest's initramfs loads out of its tree into `dest`, with the
    order file; return their paths relative to dest's parent (what the cache entry seals)."""
    base = kernel_modules(tree)
    dest.mkdir()
    order = kmod.load_order(base, DEBIAN_INITRD_MODULES)
    sealed = [f"{dest.name}/{MODULE_ORDER}"]
    for load in order:
        rel = f"{base.relative_to(tree).as_posix()}/{load.path}"
        data = kmod.read_regular(dom0_path(tree, None, rel), MAX_MODULE_BYTES)
        if data is None:
            raise XenliveError(f"the Debian guest tree has no /{rel}, which its modules.dep names")
        if compression_of(data) is not None:
            data = inflate(data, MAX_MODULE_BYTES, load.path)
        (dest / f"{load.name}.ko").write_bytes(data)
        sealed.append(f"{dest.name}/{load.name}.ko")
    text = "".join(f"{load.name} {'required' if load.required else 'optional'}\n" for load in order)
    (dest / MODULE_ORDER).write_text(text)
    return sealed


def overlay_entries(root: Path) -> list[cpio.Entry]:
    """An overlay directory as cpio entries, in a stable order; later entries win in the kernel's
    unpacker, so an overlay file replaces one of the same name."""
    entries: list[cpio.Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            item = here / name
            rel = item.relative_to(root).as_posix()
            mode = item.lstat().st_mode & 0o7777
            if item.is_symlink():
                entries.append(cpio.symlink(rel, os.readlink(item)))
            elif item.is_dir():
                entries.append(cpio.directory(rel, mode))
            elif item.is_file():
                entries.append(cpio.regular(rel, item.read_bytes(), mode))
    return entries


# --- debian ---------------------------------------------------------------------------------------


def debian_overlay(guest: Guest) -> dict[str, tuple[str, int]]:
    """The guest's own files (hostname, network, the network proof service), rendered: path -> (text, mode)."""
    files: dict[str, tuple[str, int]] = {}
    root = resources.files("builder").joinpath("templates/guest-debian")
    context = {"guest": guest, "hostname": guest.debian.hostname or guest.name.lower().replace("_", "-")}
    _collect(root, "guest-debian", "", files, context)
    return files


def _collect(node: Traversable, template_dir: str, rel: str, files: dict[str, tuple[str, int]],
             context: dict[str, Any]) -> None:  # fmt: skip
    for item in sorted(node.iterdir(), key=lambda i: i.name):
        sub = f"{rel}/{item.name}" if rel else item.name
        if item.is_dir():
            _collect(item, f"{template_dir}/{item.name}", sub, files, context)
        elif item.name.endswith(".j2"):
            mode = 0o755 if "/sbin/" in f"/{sub}" else 0o644
            files[sub.removesuffix(".j2")] = (render(f"{template_dir}/{item.name}", **context), mode)
        else:
            mode = 0o755 if "/sbin/" in f"/{sub}" else 0o644
            files[sub] = (item.read_text(), mode)


def debian_key(guest: Guest) -> str:
    return cache.input_hash(
        {
            "stage": STAGE_VERSION,
            "kind": "debian",
            "name": guest.name,
            "debian": to_data(guest.debian),
            "packages": list(DEBIAN_PACKAGES),
            "dpkg": list(DEBIAN_DPKG_OPTIONS),
            "modules": list(DEBIAN_INITRD_MODULES),
            "drivers": list(DEBIAN_KEEP_DRIVERS),
            "overlay": {k: [v[0], v[1]] for k, v in debian_overlay(guest).items()},
            # what the hooks run, as rendered from their templates (the overlay's place is the build's own)
            "hooks": debian_hooks(guest, Path("overlay")),
        }
    )


def debian_hooks(guest: Guest, overlay_dir: Path) -> list[str]:
    """mmdebstrap hooks: the initrd settings before the kernel is installed, then the guest's files,
    accounts and services, and the trimmed kernel modules. All run inside mmdebstrap, so the
    build needs no mounts of its own. Each is a template in templates/mmdebstrap/ that renders one
    argument; values from the profile are shell-quoted here, before they reach a template."""
    accounts = []
    for user in guest.debian.users:
        password = shlex.quote(user.password)
        if user.name == "root":
            accounts.append(mmdebstrap.hook("account", root=True, password=password))
            continue
        args = ["-m", "-s", shlex.quote(user.shell), "-p", password]
        if user.uid is not None:
            args += ["-u", str(user.uid)]
        if user.comment:
            args += ["-c", shlex.quote(user.comment)]
        if user.groups:
            args += ["-G", shlex.quote(",".join(user.groups))]
        accounts.append(mmdebstrap.hook("account", root=False, args=args, user=shlex.quote(user.name)))
    return [
        mmdebstrap.hook("initramfs", modules=DEBIAN_INITRD_MODULES),
        mmdebstrap.hook("sync-in", overlay_dir=shlex.quote(os.fspath(overlay_dir))),
        mmdebstrap.hook(
            "services",
            dirs=sorted({shlex.quote(n.rpartition("/")[0]) for n in GUEST_MASKED}),
            masked=[shlex.quote(n) for n in GUEST_MASKED],
        ),
        mmdebstrap.hook("modules", keep=DEBIAN_KEEP_DRIVERS),
        *accounts,
    ]


def mmdebstrap_command(guest: Guest, overlay_dir: Path, target: Path) -> list[str]:
    debian = guest.debian
    packages = [*DEBIAN_PACKAGES, *[p for p in debian.packages if p not in DEBIAN_PACKAGES]]
    return mmdebstrap.mmdebstrap_command(suite=debian.suite, mirror=debian.mirror, target=target, packages=packages,
                                         dpkg_options=DEBIAN_DPKG_OPTIONS,
                                         options=["--format=tar", *debian_hooks(guest, overlay_dir)])  # fmt: skip


def disk_size_mib(guest: Guest, tree_bytes: int, inodes: int) -> int:
    """The guest's disk: as the profile says, else the tree plus DISK_SLACK room and ext4 metadata."""
    if guest.debian.disk_size:
        return guest.debian.disk_size
    used = tree_bytes + inodes * 4096  # small files round up to a block each
    return int(used * DISK_SLACK) // (1 << 20) + DISK_EXTRA_MIB


def mkfs_command(guest: Guest, source: Path, image: Path, size_mib: int, key: str) -> list[str]:
    uuid = f"{key[:8]}-{key[8:12]}-4{key[13:16]}-8{key[17:20]}-{key[:12]}"
    return [
        "mkfs.ext4", "-q", "-F",
        "-L", guest.name[:16],
        "-U", uuid,
        "-E", f"hash_seed={uuid}",
        "-d", os.fspath(source),
        os.fspath(image), f"{size_mib}M",
    ]  # fmt: skip


def place_debian(ctx: BuildContext, guest: Guest, medium_dir: Path) -> str:
    """Place a Debian guest's kernel, disk and initramfs; return its KERNEL_OPTIONS."""
    key = debian_key(guest)

    def make(tmp: Path) -> list[str]:
        overlay = tmp / "overlay"
        for rel, (text, mode) in debian_overlay(guest).items():
            path = overlay / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            os.chmod(path, mode)
        tarball = tmp / "root.tar"
        log.log(VERBOSE, "    mmdebstrap %s guest %s", guest.debian.suite, guest.name)
        try:
            run(mmdebstrap_command(guest, overlay, tarball), env={"SOURCE_DATE_EPOCH": str(ctx.epoch)},
                output=mmdebstrap.AptProgress(f"guest {guest.name}"))  # fmt: skip
        except CommandError as e:
            i = ctx.profile.guests.index(guest)
            at = f"guests[{i}].debian.suite"
            d = guest.debian
            bad = mmdebstrap.explain(e, suite=d.suite, mirror=d.mirror, where=ctx.profile.where(at), key=at)
            if bad is None:
                raise
            raise bad from e
        tree_bytes, inodes = extract_boot(tarball, tmp)
        size = disk_size_mib(guest, tree_bytes, inodes)
        log.log(VERBOSE, "    mkfs.ext4 -d: %d MiB disk for guest %s", size, guest.name)
        # mkfs.ext4 reads a tarball itself only from e2fsprogs 1.47.1 on (Debian 12 has 1.47.0).
        tree = tmp / "tree"
        tree.mkdir()
        run(["tar", "-xpf", os.fspath(tarball), "-C", os.fspath(tree), "--numeric-owner", "--xattrs",
             "--xattrs-include=*"])  # fmt: skip
        tarball.unlink()
        run(mkfs_command(guest, tree, tmp / "disk.img", size, key), env={"E2FSPROGS_FAKE_TIME": str(ctx.epoch)})
        modules = initrd_modules(tree, tmp / INITRD_MODULES)
        (tmp / KERNEL_OPTIONS).write_text(kernel_options(tree) + "\n")
        shutil.rmtree(tree)
        shutil.rmtree(overlay)
        return ["vmlinuz", "disk.img", KERNEL_OPTIONS, *modules]

    entry, cached = ctx.holds.enter_context(cache.use(ctx.cache_dir, "guest", key, make))
    ctx.cache_hits[f"guest:{guest.name}"] = cached
    if cached:
        log.log(VERBOSE, "    reusing cached guest %s (%s)", guest.name, key)
    place_kernel(ctx, guest, entry / "vmlinuz", medium_dir / "vmlinuz")
    _place(entry / "disk.img", medium_dir / "disk.img")
    cpio.write_gzip(debian_initrd(ctx.require_rootfs(), guest, entry / INITRD_MODULES), medium_dir / "initrd.img")
    return (entry / KERNEL_OPTIONS).read_text().strip()


def extract_boot(tarball: Path, dest: Path) -> tuple[int, int]:
    """Copy the newest /boot/vmlinuz-* out of the guest's tarball to dest/vmlinuz; return the tree's
    byte and inode counts (to size its disk)."""
    kernel: tarfile.TarInfo | None = None
    total = inodes = 0
    with tarfile.open(tarball) as tar:
        for member in tar:
            inodes += 1
            total += member.size if member.isfile() else 0
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith("boot/vmlinuz-") and (kernel is None or member.name > kernel.name):
                kernel = member
        if kernel is None:
            raise XenliveError("the Debian guest tree has no /boot/vmlinuz-*", hint="is linux-image-amd64 installed?")
        source = tar.extractfile(kernel)
        assert source is not None
        with source, (dest / "vmlinuz").open("wb") as f:
            shutil.copyfileobj(source, f)
    return total, inodes


# --- image ----------------------------------------------------------------------------------------


def place_image(ctx: BuildContext, guest: Guest, medium_dir: Path) -> None:
    """The profile's own files, already checked against their sha256 when the profile was loaded."""
    base = ctx.profile.base_dir
    if isinstance(guest.kernel, Path):
        _place(base / guest.kernel, medium_dir / "vmlinuz")
        if isinstance(guest.initrd, Path):
            _place(base / guest.initrd, medium_dir / "initrd.img")
    if guest.disk is not None:
        _place(base / guest.disk, medium_dir / "disk.img")
    if guest.cdrom is not None:
        _place(base / guest.cdrom, medium_dir / "cdrom.iso")
