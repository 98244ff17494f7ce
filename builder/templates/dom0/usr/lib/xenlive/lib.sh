# Sourced by every xenlive service in dom0 (/usr/lib/xenlive/*), after it sets TAG, the word its
# console lines start with. dom0 has no Python, so the services are POSIX sh; what they share is
# written here once.
#
# The services learn what the builder knows from the files it writes, never from xl configs:
#   /etc/xenlive/xenlive.conf      PROFILE, BRIDGE, DHCP and the fallback network (sourced below)
#   /etc/xenlive/guests.tsv        one line per guest in start order (read_guest)
#   /etc/xenlive/guests/NAME.ready a guest's ready timeout and pattern (ready)
#   /etc/xenlive/owners            ownership the squashed top layer cannot carry (setup)
#
# Every path hangs off $XENLIVE_ROOT, empty in dom0: the tests point it at a fake tree and run the
# services for real, with fake commands (xl, ip, losetup, ...) on PATH.

XENLIVE_ROOT=${XENLIVE_ROOT:-}
CONF=$XENLIVE_ROOT/etc/xenlive/xenlive.conf
GUESTS_TSV=$XENLIVE_ROOT/etc/xenlive/guests.tsv
READY_DIR=$XENLIVE_ROOT/etc/xenlive/guests
OWNERS=$XENLIVE_ROOT/etc/xenlive/owners
DEFAULTS_DIR=$XENLIVE_ROOT/etc/default
AUTO_DIR=$XENLIVE_ROOT/etc/xen/auto
RUN_DIR=$XENLIVE_ROOT/run/xenlive
GUESTS_DIR=$RUN_DIR/guests
HWCHECK_DIR=$RUN_DIR/hwcheck
MEDIUM=$XENLIVE_ROOT/run/live/medium
XEN_LOG_DIR=$XENLIVE_ROOT/var/log/xen
CONSOLE_LOG_DIR=$XEN_LOG_DIR/console
CONSOLE=$XENLIVE_ROOT/dev/console
TTY1=$XENLIVE_ROOT/dev/tty1
CMDLINE=$XENLIVE_ROOT/proc/cmdline
SYSFS=$XENLIVE_ROOT/sys
TAB=$(printf '\t')

if [ -r "$CONF" ]; then
    . "$CONF"
fi

# say WORDS...: one line starting with $TAG, to stdout (the journal) and to dom0's console. A
# console that cannot be written to is not the service's failure.
say() {
    printf '%s %s\n' "$TAG" "$*"
    printf '%s %s\n' "$TAG" "$*" 2>/dev/null >> "$CONSOLE" || :
}

# say_line WORDS...: a service's one machine-read line (XENLIVE-READY, XENLIVE-SETTINGS). As say,
# but on the console after a line break: it must start a line even if the kernel was mid-line.
say_line() {
    printf '%s %s\n' "$TAG" "$*"
    printf '\n%s %s\n' "$TAG" "$*" 2>/dev/null >> "$CONSOLE" || :
}

# json_string TEXT: TEXT as a JSON string, quotes and all. Backslashes and quotes are escaped and
# control characters written as \n, \t, \r or \u00XX, so the line stays one line and parses.
# Bytes from 0x80 pass through (UTF-8 text stays as it is). The "." keeps a final newline from
# being lost between printf and awk, and is dropped again at the end.
json_string() {
    printf '%s.' "$1" | LC_ALL=C awk '
        BEGIN {
            for (i = 1; i < 32; i++) escaped[sprintf("%c", i)] = sprintf("\\u%04x", i)
            escaped["\n"] = "\\n"; escaped["\t"] = "\\t"; escaped["\r"] = "\\r"
            escaped["\\"] = "\\\\"; escaped["\""] = "\\\""
        }
        {
            if (NR > 1) out = out "\\n"
            for (i = 1; i <= length($0); i++) {
                c = substr($0, i, 1)
                out = out ((c in escaped) ? escaped[c] : c)
            }
        }
        END { printf "\"%s\"", substr(out, 1, length(out) - 1) }'
}

# Whether dom0 booted in safe mode (the boot menu's "Xen safe mode": xenlive.safe on dom0's
# command line), which starts no guest.
safe_mode() {
    grep -qwF -- xenlive.safe "$CMDLINE" 2>/dev/null
}

# dom0's IPv4 address on the bridge (ADDRESS/PREFIX), or nothing.
bridge_address() {
    ip -4 -o addr show dev "$BRIDGE" scope global 2>/dev/null | awk '{ print $4; exit }'
}

# wait_bridge_address SECONDS: dom0's address on the bridge once it has one. With DHCP it waits up
# to SECONDS for the network's DHCP server; without, nobody else hands out an address: no wait.
wait_bridge_address() {
    waited=0
    while :; do
        address=$(bridge_address)
        if [ -n "$address" ] || [ "$DHCP" != yes ] || [ "$waited" -ge "$1" ]; then
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    printf '%s\n' "$address"
}

# read_guest: the next guest of guests.tsv (on stdin) into name type memory vcpus autostart order
# write_buffer need (MiB; write_buffer 0: no disk; need: what the build's memory budget counts).
# The builder writes the columns in this order (GUEST_COLUMNS in builder/stages/guests.py).
# Usage: while read_guest; do ...; done < "$GUESTS_TSV"
read_guest() {
    while IFS=$TAB read -r name type memory vcpus autostart order write_buffer need; do
        case "$name" in
            ''|'#'*) ;;
            *) return 0 ;;
        esac
    done
    return 1
}

# The names of the guests dom0 starts at boot, in start order, one per line.
autostart_guests() {
    while read_guest; do
        if [ "$autostart" = yes ]; then printf '%s\n' "$name"; fi
    done < "$GUESTS_TSV"
}
