#!/bin/sh
# Installs the profile's extra dom0 packages over dom0's base, into an overlayfs upper directory:
# the package layer (builder/stages/pkglayer.py). It runs inside `unshare --mount --pid --fork`, so
# every mount made here goes when it ends, and so does any daemon a maintainer script starts.
#
#   install.sh OVERLAY-OPTIONS MERGED LISTS ARCHIVES UPDATE KEYBOARD -- APT-OPTION... -- PACKAGE...
#
# OVERLAY-OPTIONS names the base (lowerdir), the layer (upperdir) and overlayfs's work directory;
# LISTS and ARCHIVES are apt's package lists and downloads, shared between builds and kept out of the
# layer; UPDATE is "yes" when LISTS has no lists yet; KEYBOARD, when not empty, is the profile's
# /etc/default/keyboard, which console-setup (one of the packages) compiles into its cached keymap
# here, so dom0 does not compile it at every boot. Package names come from the profile and were
# checked against Debian's pattern; they follow apt-get's own `--`.
set -eu
set -f  # no pathname expansion: the dpkg options hold patterns (path-exclude=/usr/share/man/*)

options=$1 merged=$2 lists=$3 archives=$4 update=$5 keyboard=$6
shift 6
[ "$1" = -- ] && shift
apt_options=""
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    apt_options="$apt_options $1"  # xenlive's own options (stages/pkglayer.py), no spaces in them
    shift
done
[ "$#" -gt 0 ] && shift

mount -t overlay -o "$options" -- overlay "$merged"
mount -t proc proc "$merged/proc"
mount --rbind /dev "$merged/dev"
mount --rbind /sys "$merged/sys"
mount --bind "$lists" "$merged/var/lib/apt/lists"
mount --bind "$archives" "$merged/var/cache/apt/archives"
if [ -f /etc/resolv.conf ] && [ -f "$merged/etc/resolv.conf" ] && [ ! -L "$merged/etc/resolv.conf" ]; then
    mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"  # the host's current one, for the mirror's name
fi
# No service starts in the chroot (invoke-rc.d asks policy-rc.d); the file is gone again before the
# layer is captured, and the base never had one, so it leaves nothing behind.
policy="$merged/usr/sbin/policy-rc.d"
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

apt() {
    # shellcheck disable=SC2086  # apt_options: separate words on purpose
    chroot "$merged" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 apt-get $apt_options "$@"
}

status=0
if [ "$update" = yes ]; then
    apt update || status=$?
fi
if [ "$status" -eq 0 ] && ! apt -y install -- "$@"; then
    if [ "$update" = yes ]; then
        status=1
    else
        # The shared lists may be older than the mirror (a point release drops old versions): refresh, once.
        echo "I: refreshing the package lists and trying again"
        apt update && apt -y install -- "$@" || status=$?
    fi
fi
if [ "$status" -eq 0 ] && [ -n "$keyboard" ]; then
    cp -- "$keyboard" "$merged/etc/default/keyboard"
    chroot "$merged" /usr/bin/env LC_ALL=C.UTF-8 setupcon --save-only || status=$?
fi
rm -f "$policy"
exit "$status"
