#!/usr/bin/env bash
# Records the seed corpora of nflog_batch and pcap_reader from real kernel traffic.
#
#   sudo fuzz/capture-seeds.sh
#
# Builds the conformance test's topology (tests/it/conformance.rs: router, peer and far network
# namespaces, the same iptables/ip6tables NFLOG rules on group 100, plus nft rules whose prefixes
# hold control bytes) and runs its deterministic packet mix (tests/traffic/conformance.py) twice:
#   1. with examples/capture_nflog.rs (the daemon's NflogSocket) bound to group 100, which writes
#      every recv() buffer to fuzz/seeds/nflog_batch/batch-NNNN.bin;
#   2. with `tcpdump -i nflog:100 -w fuzz/seeds/pcap_reader/conformance.pcap`.
# Needs root, ip, iptables-restore, ip6tables-restore, nft, tcpdump and /usr/bin/python3 with
# python3-scapy (as the conformance test). Deletes its namespaces and stops what it started.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seeds=$here/seeds
tag=fzs-$$
R=$tag-r P=$tag-p F=$tag-f
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "$R" "$P" "$F"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

cargo build --quiet --manifest-path "$here/Cargo.toml" --example capture_nflog
capture=${CARGO_TARGET_DIR:-$here/target}/debug/examples/capture_nflog

for ns in "$R" "$P" "$F"; do ip netns add "$ns"; done
ip link add a0 netns "$R" address 02:77:00:00:01:01 type veth peer name a1 netns "$P" address 02:77:00:00:01:02
ip link add b0 netns "$R" address 02:77:00:00:02:01 type veth peer name b1 netns "$F" address 02:77:00:00:02:02
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv6.auto_flowlabels=0 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
ip -n "$R" -batch - <<EOF
link set lo up
addr add 10.77.1.1/24 dev a0
addr add fd00:77:1::1/64 dev a0 nodad
addr add 10.77.2.1/24 dev b0
addr add fd00:77:2::1/64 dev b0 nodad
link set a0 up
link set b0 up
neigh replace 10.77.1.2 lladdr 02:77:00:00:01:02 dev a0 nud permanent
neigh replace fd00:77:1::2 lladdr 02:77:00:00:01:02 dev a0 nud permanent
neigh replace 10.77.2.2 lladdr 02:77:00:00:02:02 dev b0 nud permanent
neigh replace fd00:77:2::2 lladdr 02:77:00:00:02:02 dev b0 nud permanent
EOF
for spec in "$P a1 1 01" "$F b1 2 02"; do
    read -r ns dev net mac <<<"$spec"
    ip -n "$ns" -batch - <<EOF
link set lo up
addr add 10.77.$net.2/24 dev $dev
addr add fd00:77:$net::2/64 dev $dev nodad
link set $dev up
route add default via 10.77.$net.1
route add default via fd00:77:$net::1
neigh replace 10.77.$net.1 lladdr 02:77:00:00:$mac:01 dev $dev nud permanent
neigh replace fd00:77:$net::1 lladdr 02:77:00:00:$mac:01 dev $dev nud permanent
EOF
    for restore in iptables-restore ip6tables-restore; do
        printf '*raw\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n-A PREROUTING -j DROP\nCOMMIT\n' |
            ip netns exec "$ns" "$restore"
    done
done

long="DROP by policy kube-system/a-very-long-network-policy-name-cut-"
rules() { # restore net icmp trunc
    local log="-j NFLOG --nflog-group 100"
    cat <<EOF
*mangle
:PREROUTING ACCEPT
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
-A OUTPUT -d $2 -p udp --dport 7042 -j MARK --set-mark 0x2a
COMMIT
*filter
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
-A OUTPUT -d $2 -p udp --dport 7020 $log --nflog-prefix TRUNC20 --nflog-size 20
-A OUTPUT -d $2 -p tcp --dport 7024 $log --nflog-prefix TRUNC$4 --nflog-size $4
-A OUTPUT -d $2 $3 $log --nflog-prefix TRUNC$4 --nflog-size $4
-A OUTPUT -d $2 -p udp --dport 6666 $log
-A OUTPUT -d $2 -p udp --dport 7777 $log --nflog-prefix "spaced prefix: "
-A OUTPUT -d $2 $log --nflog-prefix "DROP by policy default/deny-all"
-A OUTPUT -o lo -p udp --dport 9004 $log --nflog-prefix "$(printf 'ipt\033]0;title\007')"
-A INPUT -s $2 $log
-A INPUT -s $2 -j DROP
-A FORWARD -s $2 $log --nflog-prefix "$long"
COMMIT
EOF
}
rules iptables-restore 10.77.0.0/16 "-p icmp --icmp-type 17" 24 | ip netns exec "$R" iptables-restore
rules ip6tables-restore fd00:77::/32 "-p ipv6-icmp --icmpv6-type 200" 44 | ip netns exec "$R" ip6tables-restore
nft_file=$(mktemp)
printf 'table inet hostile {\n\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tudp dport 9001 log group 100 prefix "a\nb"\n\t\tudp dport 9002 log group 100 prefix "esc\033[31mred"\n\t\tudp dport 9003 log group 100 prefix "cr\rx\007\177"\n\t}\n}\n' >"$nft_file"
ip netns exec "$R" nft -f "$nft_file"
rm -f "$nft_file"

traffic() {
    ip netns exec "$R" /usr/bin/python3 "$root/tests/traffic/conformance.py" --peer "$P"
    ip netns exec "$R" /usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (9001, 9002, 9003, 9004):
    s.sendto(b"x", ("127.0.0.1", port))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for port in (9001, 9002, 9003):
    s6.sendto(b"x", ("::1", port))
'
}

# 1. recv() buffers through NflogSocket.
mkdir -p "$seeds/nflog_batch" "$seeds/pcap_reader"
fifo=$(mktemp -u)
mkfifo "$fifo"
ip netns exec "$R" "$capture" "$seeds/nflog_batch" 3 100 >"$fifo" &
pids+=($!)
read -r bound <"$fifo"
rm -f "$fifo"
[ "$bound" = bound ] || { echo "capture_nflog did not bind: $bound" >&2; exit 1; }
traffic
wait "${pids[-1]}"

# 2. The same traffic as tcpdump records it.
ip netns exec "$R" tcpdump -q -i nflog:100 -w "$seeds/pcap_reader/conformance.pcap" 2>"$seeds/.tcpdump.err" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$seeds/.tcpdump.err" && break; sleep 0.1; done
traffic
sleep 1
kill -INT "${pids[-1]}"
wait "${pids[-1]}" || true
rm -f "$seeds/.tcpdump.err"
echo "nflog_batch: $(ls "$seeds/nflog_batch" | wc -l) buffers; pcap_reader: $(stat -c %s "$seeds/pcap_reader/conformance.pcap") bytes"
