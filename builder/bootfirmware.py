"""Which way a machine's boot firmware starts a medium, and what can run once it has.

One answer for three askers: the firmware-modes check (will this image run on that machine?),
the boot stage (what a target's own boot menu entry starts) and the boot test (what `xenlive test
--firmware F` should see). Keeping it here means the check cannot promise what the menu does not
offer, nor the boot test pass on what the check calls a failure.

What a medium carries: ISOLINUX (media.boot has bios) and GRUB for 64-bit and 32-bit UEFI
(BOOTX64.EFI, BOOTIA32.EFI, in the FAT image that is both the El Torito UEFI image and the ESP).
Only a medium with bios gets the isohybrid MBR and GPT (pycdlib's isohybrid needs ISOLINUX), so
without it a USB stick written with the image has no partition table, and real firmware, which
boots a stick through its partition tables, does not start it. From a CD every loader starts.

What runs: Xen needs a BIOS boot (mboot.c32, Multiboot) or 64-bit UEFI (GRUB's multiboot2 with
EFI boot services). From 32-bit UEFI it cannot start: see XEN_ON_IA32.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from builder.profile.model import Firmware

# Why Xen does not start from 32-bit UEFI, read from xen/arch/x86/boot/head.S (the same in Xen 4.17
# and 4.20) and checked by booting Debian's xen-hypervisor-4.17-amd64 from GRUB i386-efi on ovmf-ia32 with a
# 64-bit CPU: xen.efi is an x86-64 PE image, which 32-bit firmware cannot load; the multiboot2
# entry halts as soon as the boot loader hands it a 32-bit EFI system table (GRUB i386-efi does,
# it cannot use Xen's 64-bit EFI entry), printing the message below; and GRUB's multiboot (v1),
# which exits boot services and enters Xen's legacy BIOS path (with no-real-mode edd=off), left
# Xen silent: not one line on the serial console in 300 s. So there: "Linux without Xen" (Debian's
# amd64 kernel has CONFIG_EFI_MIXED, and boots from GRUB i386-efi).
XEN_ON_IA32 = (
    "Xen cannot start from 32-bit UEFI: its multiboot2 entry stops with"
    ' "ERR: EFI IA-32 platforms are not supported!" and xen.efi is a 64-bit program the firmware cannot load'
)
XEN_STARTS = {Firmware.BIOS: True, Firmware.UEFI: True, Firmware.UEFI_IA32: False}


class Runs(enum.StrEnum):
    XEN = "xen"  # Xen with dom0 and the guests: what the appliance is for
    LINUX = "linux"  # the boot menu's "Linux without Xen": dom0's system, bare, without guests


@dataclass(frozen=True)
class Way:
    """One way a machine starts a medium: the loader its firmware runs, and what that can start."""

    loader: Firmware  # which of the medium's boot loaders the firmware runs
    via_csm: bool  # a UEFI machine running the BIOS loader through its CSM
    stick: bool  # also from a USB stick (the medium has partition tables), not only from a CD

    @property
    def runs(self) -> Runs:
        return Runs.XEN if XEN_STARTS[self.loader] else Runs.LINUX

    def describe(self) -> str:
        """What this way starts and how, e.g. "Xen through the CSM (legacy BIOS boot), from a CD or a USB stick"."""
        what = "Xen" if self.runs is Runs.XEN else '"Linux without Xen" only'
        how = {
            Firmware.BIOS: "through the CSM (legacy BIOS boot)" if self.via_csm else "with ISOLINUX",
            Firmware.UEFI: "with BOOTX64.EFI",
            Firmware.UEFI_IA32: "with BOOTIA32.EFI",
        }[self.loader]
        where = "from a CD or a USB stick" if self.stick else "from a CD only (the medium has no partition table)"
        return f"{what} {how}, {where}"


def medium_set(boot: Iterable[Firmware | str]) -> frozenset[Firmware]:
    return frozenset(Firmware(f) for f in boot)


def ways(medium: Iterable[Firmware | str], firmware: Firmware, csm: bool | None) -> list[Way]:
    """Every way a machine with `firmware` (and a CSM if `csm`) starts a medium carrying loaders for
    `medium`, best first: Xen before Linux only, the native UEFI way before the CSM."""
    carries = medium_set(medium)
    stick = Firmware.BIOS in carries
    found = []
    if firmware in carries:
        found.append(Way(firmware, via_csm=False, stick=stick))
    if firmware.is_uefi and csm and Firmware.BIOS in carries:
        found.append(Way(Firmware.BIOS, via_csm=True, stick=stick))
    return sorted(found, key=lambda w: (w.runs is not Runs.XEN, w.via_csm))


def best_way(medium: Iterable[Firmware | str], firmware: Firmware, csm: bool | None) -> Way | None:
    found = ways(medium, firmware, csm)
    return found[0] if found else None


def firmware_name(firmware: Firmware, csm: bool | None = False) -> str:
    """How messages name a machine's firmware."""
    name = {Firmware.BIOS: "BIOS", Firmware.UEFI: "64-bit UEFI", Firmware.UEFI_IA32: "32-bit UEFI"}[firmware]
    if firmware.is_uefi:
        name += {True: " with a CSM", False: " without a CSM", None: ""}[csm]
    return name
