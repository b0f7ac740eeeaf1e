# Sourced by benches/latency.sh and benches/vs-ulogd.sh: the scratch directory, the network
# namespace with the NFLOG + DROP rule pair, the kernel's NFLOG state, ulogd2's configuration,
# the report header. Before sourcing, set NAME (the messages' prefix), GROUP (the NFLOG group)
# and ULOGD_PLUGINS; the scripts run with `set -euo pipefail`.
# shellcheck shell=bash

die() { echo "$NAME: $*" >&2; exit 1; }

# bench_scratch: WORK, a fresh directory under WORKDIR (default /dev/shm if present, else /tmp).
bench_scratch() {
    if [[ -d /dev/shm && -z ${WORKDIR:-} ]]; then WORKDIR=/dev/shm; fi
    WORKDIR=${WORKDIR:-/tmp}
    WORK=$(mktemp -d "$WORKDIR/$NAME.XXXXXX")
}

# bench_remove_scratch: what cleanup does last: the namespace, and the scratch directory
# unless KEEP=1.
bench_remove_scratch() {
    ip netns del "$NS" 2>/dev/null
    if [[ ${KEEP:-0} == 1 ]]; then echo "scratch kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

nsx() { ip netns exec "$NS" "$@"; }

# bench_netns CHAIN IFOPT PORT PREFIX: the namespace NS (lo up) with the K3s-style rule pair
# "CHAIN IFOPT -p udp --dport PORT -j NFLOG --nflog-group GROUP --nflog-prefix PREFIX", then DROP.
bench_netns() {
    local chain=$1 ifopt=$2 port=$3 prefix=$4
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    # shellcheck disable=SC2086
    nsx iptables -A "$chain" $ifopt -p udp --dport "$port" -j NFLOG --nflog-group "$GROUP" --nflog-prefix "$prefix"
    # shellcheck disable=SC2086
    nsx iptables -A "$chain" $ifopt -p udp --dport "$port" -j DROP
}

# group_bound: whether a process has bound GROUP in the namespace.
group_bound() {
    nsx awk -v g="$GROUP" '$1 == g { found = 1 } END { exit !found }' /proc/net/netfilter/nfnetlink_log 2>/dev/null
}

# rule_counter CHAIN: the packet counter of the NFLOG rule.
rule_counter() {
    nsx iptables -L "$1" -v -x -n | awk '$3 == "NFLOG" { print $1; exit }'
}

# write_ulogd_conf FILE LOGFILE ULOGD_LOG: ulogd2 with Debian's stack, LOGEMU sync=1 (as
# /etc/ulogd.conf ships) and a 64 MiB netlink buffer (at most 128 MiB).
write_ulogd_conf() {
    cat >"$1" <<CONF
[global]
logfile="$3"
loglevel=3
plugin="$ULOGD_PLUGINS/ulogd_inppkt_NFLOG.so"
plugin="$ULOGD_PLUGINS/ulogd_raw2packet_BASE.so"
plugin="$ULOGD_PLUGINS/ulogd_filter_IFINDEX.so"
plugin="$ULOGD_PLUGINS/ulogd_filter_IP2STR.so"
plugin="$ULOGD_PLUGINS/ulogd_filter_PRINTPKT.so"
plugin="$ULOGD_PLUGINS/ulogd_output_LOGEMU.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group=$GROUP
netlink_socket_buffer_size=67108864
netlink_socket_buffer_maxsize=134217728

[emu1]
file="$2"
sync=1
CONF
}

# bench_start_load: LOAD_START, with a warning when the machine is busy.
bench_start_load() {
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    if awk '{ exit !($1 > 0.5) }' /proc/loadavg; then
        echo "$NAME: WARNING: load average $LOAD_START before start; other work will skew the numbers" >&2
    fi
}

# bench_report_host: the report's date, host and load lines.
bench_report_host() {
    echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')  host: nproc=$(nproc) kernel=$(uname -r) cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "# loadavg at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ulogd_version: the version of ULOGD.
ulogd_version() {
    "$ULOGD" -V 2>&1 | awk '/Version/ { print $3; exit }'
}
