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
PERSIST_DIR=$RUN_DIR/persistence        # the stick's persistence partition, when one is in use
PERSIST_STATE=$RUN_DIR/persistence.state  # on, ram or fresh, then why (/usr/lib/xenlive/persist)
PERSIST_WARNINGS=$RUN_DIR/persistence.warnings  # one warning per line, for XENLIVE-READY
# report and machine print lines boot tests read after XENLIVE-READY; each leaves a file here once
# it has ended (printed_on_exit), and ready ends what a test reads after them.
PRINTED_DIR=$RUN_DIR/printed
MEDIUM=$XENLIVE_ROOT/run/live/medium
XEN_TOOLS_DIR=$XENLIVE_ROOT/usr/lib        # Xen X.Y's own programs are in xen-X.Y/bin there
XEN_RUN_DIR=$XENLIVE_ROOT/run/xen
XENSTORED_DIR=$XENLIVE_ROOT/run/xenstored
PID_DIR=$XENLIVE_ROOT/run                   # xenstore.pid and xenconsoled.pid, as Debian's init script names them
DOM0_QEMU=$XENLIVE_ROOT/usr/libexec/xen-qemu-system-i386  # dom0's device model, if a profile installs it
PROC_XEN=$XENLIVE_ROOT/proc/xen
NETIF_LEASES=$XENLIVE_ROOT/run/systemd/netif/leases  # systemd-networkd's DHCP leases, by ifindex
OOM_SCORE_ADJ=$XENLIVE_ROOT/proc/self/oom_score_adj
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
    cmdline_has xenlive.safe
}

# cmdline_has WORD: whether dom0's kernel command line has WORD (xenlive.safe, xenlive.fresh, ...).
cmdline_has() {
    grep -qwF -- "$1" "$CMDLINE" 2>/dev/null
}

# Under TCG every process dom0 starts costs about 0.1 s, and the services run while the guests start:
# what is read from small files and command output is read with the shell's own `read`.

# first_line FILE: $line becomes FILE's first line, or empty.
first_line() {
    line=""
    { IFS= read -r line || :; } 2>/dev/null < "$1"  # in this order, a missing FILE is not an error on stderr
}

# read_xl_info: `xl info` once (at most 20 s); sets xl_nr_cpus, xl_total_memory, xl_free_memory,
# xl_xen_version, xl_xen_caps and xl_virt_caps (the last two with a space at each end, for
# matching " word "). False when Xen does not answer.
read_xl_info() {
    xl_nr_cpus="" xl_total_memory="" xl_free_memory="" xl_xen_version="" xl_xen_caps=" " xl_virt_caps=" "
    mkdir -p "$RUN_DIR"
    timeout 20 xl info > "$RUN_DIR/xl-info.$$" 2>/dev/null </dev/null || { rm -f "$RUN_DIR/xl-info.$$"; return 1; }
    while IFS= read -r l; do
        key=${l%%:*}
        key=${key%% *}
        value=${l#*:}
        value=${value#"${value%%[! ]*}"}
        case "$key" in
            nr_cpus) xl_nr_cpus=$value ;;
            total_memory) xl_total_memory=$value ;;
            free_memory) xl_free_memory=$value ;;
            xen_version) xl_xen_version=$value ;;
            xen_caps) xl_xen_caps=" $value " ;;
            virt_caps) xl_virt_caps=" $value " ;;
        esac
    done < "$RUN_DIR/xl-info.$$"
    rm -f "$RUN_DIR/xl-info.$$"
    [ -n "$xl_nr_cpus$xl_total_memory$xl_xen_version" ]
}

# The medium's build id (the name of its xenlive/BUILD.id file), or nothing.
build_id() {
    for id in "$MEDIUM"/xenlive/*.id; do
        id=${id##*/}
        id=${id%.id}
        case "$id" in *[!0-9a-f]*|"") continue ;; esac
        echo "$id"
        return
    done
}

# Whether the profile keeps anything on a stick: dom0.persist's directories or a guest with
# persist: true. (The build enables xenlive-persist.service only then: model.persists.)
persistence_wanted() {
    [ -n "$PERSIST_PATHS" ] && return 0
    while read_guest; do
        [ "$persist" = yes ] && return 0
    done < "$GUESTS_TSV"
    return 1
}
NOTHING_KEPT="the profile keeps nothing on a stick"

# Whether the stick's persistence partition is mounted read-write at $PERSIST_DIR for this boot.
persistence_on() {
    [ "$(sed -n 1p "$PERSIST_STATE" 2>/dev/null)" = on ]
}

# persist_warn TEXT: a warning about persistence, on the console and in XENLIVE-READY.
persist_warn() {
    printf '%s\n' "$*" >> "$PERSIST_WARNINGS"
    say "warning: $*"
}

# dom0's IPv4 address on the bridge (ADDRESS/PREFIX), or nothing.
bridge_address() {
    ip -4 -o addr show dev "$BRIDGE" scope global 2>/dev/null | awk '{ print $4; exit }'
}

# wait_bridge_address SECONDS: dom0's address on the bridge once it has one. With DHCP it waits up
# to SECONDS for the network's DHCP server; without, nobody else hands out an address: no wait.
# It looks every 0.5 s for the lease systemd-networkd writes, with the shell alone, and asks `ip`
# (two processes) once there is one, or every 2 s: a poll that ran `ip` every second took a third
# of a CPU under TCG while the guests were starting.
wait_bridge_address() {
    waited=0  # half seconds
    lease=""
    address=""
    while :; do
        if [ -z "$lease" ]; then  # until the bridge exists
            first_line "$SYSFS/class/net/$BRIDGE/ifindex"
            lease=${line:+$NETIF_LEASES/$line}
        fi
        if { [ -n "$lease" ] && [ -e "$lease" ]; } || [ $((waited % 4)) -eq 0 ]; then
            address=$(bridge_address)
        fi
        if [ -n "$address" ] || [ "$DHCP" != yes ] || [ "$waited" -ge $(($1 * 2)) ]; then
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    printf '%s\n' "$address"
}

# printed_on_exit NAME: however the script ends, it leaves $PRINTED_DIR/NAME, so that ready waits
# no longer for what the script prints (NAME is a constant of the script, not a value from outside).
printed_on_exit() {
    trap "mkdir -p \"\$PRINTED_DIR\" && : > \"\$PRINTED_DIR/$1\"" EXIT
    trap 'exit 143' TERM  # systemd's stop at the unit's timeout: the shell runs the EXIT trap only on exit
}

# read_guest: the next guest of guests.tsv (on stdin) into name type memory vcpus autostart order
# write_buffer need minimum persist (MiB; write_buffer 0: no disk; need: what the build's memory
# budget counts; minimum: the least memory the guest starts with, 0 if not known; persist: yes to
# keep the disk's writes on the stick's persistence partition).
# The builder writes the columns in this order (GUEST_COLUMNS in builder/stages/guests.py).
# Usage: while read_guest; do ...; done < "$GUESTS_TSV"
read_guest() {
    while IFS=$TAB read -r name type memory vcpus autostart order write_buffer need minimum persist; do
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

# xl_errors: of xl's output (stdin), the lines that say why a domain was not created, at most six:
# the domain builder's own (xc: ...) first, then libxl's errors, then anything else xl said.
# libxl's lines that only follow from an earlier failure (an xc_dom_* call failed, the half-built
# domain is destroyed, "cannot (re-)build domain") and "Parsing config" come only when nothing else
# does. Source locations (file.c:123:) are dropped: they name Xen's code, not the guest's problem.
# For a PV guest short of memory, xl prints (Xen 4.17):
#   xc: error: panic: xg_dom_core.c:536: xc_dom_chk_alloc_pages: segment kernel too large (...): Out of memory
#   libxl: error: libxl_dom.c:594:libxl__build_dom: xc_dom_build_image failed: No such file or directory
#   libxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain 4:cannot (re-)build domain: -3
#   libxl: error: libxl_domain.c:1183:libxl__destroy_domid: Domain 4:Non-existant domain
#   libxl: error: libxl_domain.c:1137:domain_destroy_callback: Domain 4:Unable to destroy guest
#   libxl: error: libxl_domain.c:1064:domain_destroy_cb: Domain 4:Destruction of domain failed
# and only the first line says why.
XL_CASCADE='xc_dom_[a-z_]+ failed|Destruction of domain failed|[Uu]nable to destroy|cannot [(]re-[)]build domain|domain_destroy|devices_destroy|destroy_domid|Non-existant domain|domcreate_complete'
xl_errors() {
    tr -d '\r' | LC_ALL=C awk -v cascade="$XL_CASCADE" '
        /^Parsing config/ || /^[[:space:]]*$/ { next }
        $0 ~ cascade { follow[nfollow++] = $0; next }
        /^xc: /     { xc[nxc++] = $0; next }
        /^libxl: /  { if ($0 ~ /^libxl: (error|critical)/) lx[nlx++] = $0; next }
                    { other[nother++] = $0 }
        END {
            n = 0
            for (i = 0; i < nxc && n < 6; i++) out[n++] = xc[i]
            for (i = 0; i < nlx && n < 6; i++) out[n++] = lx[i]
            for (i = 0; i < nother && n < 6; i++) out[n++] = other[i]
            if (n == 0) for (i = 0; i < nfollow && n < 6; i++) out[n++] = follow[i]
            for (i = 0; i < n; i++) {
                line = out[i]
                gsub(/[A-Za-z0-9_.-]+\.c:[0-9]+: ?/, "", line)
                print line
            }
        }'
}

# json_lines: stdin's lines as a JSON array of strings.
json_lines() {
    sep=""
    printf '['
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s%s' "$sep" "$(json_string "$line")"
        sep=", "
    done
    printf ']'
}

# console_tail NAME LINES: the last LINES non-empty lines of guest NAME's console log, without the
# carriage returns and the kernel's timestamps.
console_tail() {
    [ -r "$CONSOLE_LOG_DIR/guest-$1.log" ] || return 0
    tr -d '\r' < "$CONSOLE_LOG_DIR/guest-$1.log" \
        | sed -e 's/^\[ *[0-9]*\.[0-9]*\] //' | grep -v '^[[:space:]]*$' | tail -n "$2"
}

# console_cause NAME: the first line of guest NAME's console that says why its kernel or init
# stopped (a panic, the OOM killer, an init that would not run), or nothing.
CONSOLE_CAUSES='Kernel panic|Out of memory|not syncing|BUG: |Oops|Failed to execute|No working init|Run .* as init process.*failed|Killed process|Cannot allocate'
console_cause() {
    [ -r "$CONSOLE_LOG_DIR/guest-$1.log" ] || return 0
    tr -d '\r' < "$CONSOLE_LOG_DIR/guest-$1.log" | sed -e 's/^\[ *[0-9]*\.[0-9]*\] //' \
        | grep -E -m 1 -- "$CONSOLE_CAUSES"
}

# shutdown_cause NAME: how guest NAME's domain ended, from xl's log of it (the shutdown reason code
# of xen/include/public/sched.h), or nothing.
shutdown_cause() {
    code=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' "$XEN_LOG_DIR/xl-$1.log" 2>/dev/null | tail -n 1)
    case "$code" in
        0) echo "powered off" ;;
        1) echo "rebooted" ;;
        2) echo "suspended" ;;
        3) echo "crashed" ;;
        4) echo "was stopped by its watchdog" ;;
        5) echo "asked for a soft reset" ;;
        *) ;;
    esac
}

# xl_log_lines NAME: what xl's log of guest NAME's domain says about its end (how it shut down,
# what xl did then, errors), at most six lines.
xl_log_lines() {
    [ -r "$XEN_LOG_DIR/xl-$1.log" ] || return 0
    tr -d '\r' < "$XEN_LOG_DIR/xl-$1.log" | grep -v '^Waiting for domain' \
        | grep -E -i 'shut down|shutdown reason|error|fail' | tail -n 6
}

# memory_hint: for the guest read_guest read last, what to change when it has less memory than
# the builder computed it needs (guests.tsv's minimum), or nothing.
memory_hint() {
    if [ "${minimum:-0}" -gt 0 ] && [ "$memory" -lt "$minimum" ]; then
        echo "it has $memory MiB, less than the $minimum MiB it needs to start (set memory: ${minimum}M)"
    fi
}
