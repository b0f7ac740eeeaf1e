#!/usr/bin/env bash
# Throughput / loss / CPU comparison: netpol-nflogd versus ulogd2 (LOGEMU), on
# the K3s-style rule "NFLOG group 100 then DROP" in OUTPUT (or INPUT).
#
# Run as root (it creates a network namespace; all traffic stays inside it):
#
#   cargo build --release && sudo benches/vs-ulogd.sh
#   sudo RATES="50000 0" N=500000 benches/vs-ulogd.sh
#   sudo CHAIN=INPUT SENDERS=2 RATES=0 benches/vs-ulogd.sh   # past the OUTPUT sender's ceiling
#
# Environment:
#   RATES       target send rates in packets/s, 0 = flat out   (default "100000 200000 300000 0")
#   N           packets per run                                 (default 1000000)
#   CHAIN       OUTPUT or INPUT: where the rule pair sits       (default OUTPUT)
#               On OUTPUT the DROP fails each send with EPERM, which ends flood.c's
#               sendmmsg call: one system call per packet, about 200k packets/s on one
#               core. On INPUT (-i lo: the datagram loops back first) a call sends a
#               whole batch, so the offered load can go well past that.
#   SENDERS     flood.c sender processes, each with its own socket (default 1)
#   BATCH       packets per sendmmsg call                       (default 256)
#   NFLOGD      netpol-nflogd binary   (default <repo>/target/release/netpol-nflogd;
#               if it does not exist, only ulogd is measured)
#   NFLOGD_ARGS extra arguments for netpol-nflogd, split on blanks (default none),
#               e.g. "--config my.toml"
#   ULOGD       ulogd binary                                    (default /usr/sbin/ulogd)
#   TOOLS       which tools to run, in order                    (default "ulogd nflogd")
#   FLUSH_WAIT  seconds to wait after the flood for the kernel's NFLOG flush (default 2)
#   SETTLE      1 = after FLUSH_WAIT, also wait until the output file stops growing
#               (the logger has worked off its socket backlog; at most SETTLE_MAX=120 s)
#               before stopping it, so that lost% counts drops only. 0 = stop right
#               after FLUSH_WAIT: lost% then includes the backlog ulogd discards at exit.
#   WORKDIR     parent of the scratch directory (default /dev/shm if present, else /tmp)
#   KEEP        1 = keep the scratch directory (log files, configs, stats)
#
# For each rate and tool: start the logger in the namespace, wait until it has
# bound group 100, zero the counters, flood N packets with benches/flood/flood.c,
# wait FLUSH_WAIT s, stop the logger (SIGTERM, by PID), then read the NFLOG rule's
# packet counter (= packets the kernel logged), count the lines written, and take
# the logger's CPU time (user+sys, from /usr/bin/time, i.e. getrusage of the
# reaped process — this includes netpol-nflogd's drain after SIGTERM).
#
# ulogd2 runs with the Debian stack and sync=1 (as /etc/ulogd.conf ships), plus a
# generous netlink buffer: netlink_socket_buffer_size=64 MiB, maxsize=128 MiB.
# netpol-nflogd runs with --no-rate-limit --stdout none --tail-socket "" (syslogemu only, the work
# ulogd2 LOGEMU does: no JSON, no tail ring) and its defaults otherwise.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

RATES=${RATES:-"100000 200000 300000 0"}
N=${N:-1000000}
CHAIN=${CHAIN:-OUTPUT}
SENDERS=${SENDERS:-1}
BATCH=${BATCH:-256}
NFLOGD=${NFLOGD:-$REPO/target/release/netpol-nflogd}
ULOGD=${ULOGD:-/usr/sbin/ulogd}
TOOLS=${TOOLS:-"ulogd nflogd"}
FLUSH_WAIT=${FLUSH_WAIT:-2}
SETTLE=${SETTLE:-1}
SETTLE_MAX=${SETTLE_MAX:-120}
KEEP=${KEEP:-0}
GROUP=100
PORT=9999
PREFIX="DROP by policy default/bench"
ULOGD_PLUGINS=${ULOGD_PLUGINS:-/usr/lib/x86_64-linux-gnu/ulogd}
NAME=vs-ulogd
# shellcheck source=benches/lib.sh
. "$SCRIPT_DIR/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"
for c in gcc ip iptables /usr/bin/time "$ULOGD"; do
    command -v "$c" >/dev/null || die "missing $c"
done
bench_scratch
NS="vsulogd-$$"
STARTED=()   # PIDs of processes this script started and that may still run

cleanup() {
    local rc=$?
    set +e
    for p in "${STARTED[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    bench_remove_scratch
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build the sender --------------------------------------------------------
gcc -O2 -Wall -o "$WORK/flood" "$SCRIPT_DIR/flood/flood.c"

# --- namespace and rules -----------------------------------------------------
case $CHAIN in
    OUTPUT) bench_netns OUTPUT "-o lo" $PORT "$PREFIX" ;;
    INPUT) bench_netns INPUT "-i lo" $PORT "$PREFIX" ;;
    *) die "CHAIN must be OUTPUT or INPUT" ;;
esac

# child_of PID: the single child of a /usr/bin/time wrapper (ip netns exec execs
# the logger, so this is the logger itself).
child_of() {
    local i c
    for i in $(seq 1 100); do
        c=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
        c=${c%% *}
        if [[ -n $c ]]; then echo "$c"; return 0; fi
        sleep 0.05
    done
    return 1
}
json_num() { # json_num FILE KEY -> first "KEY":N in the file
    grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" | head -n1 | grep -o '[0-9]*$' || true
}

RESULTS=()   # "rate tool counter lines lost_pct cpu_s us_per_line sent_rate extra"

run_one() { # TOOL RATE
    local tool=$1 rate=$2 tag="$1-$2"
    local out="$WORK/$tag.log" err="$WORK/$tag.stderr" tfile="$WORK/$tag.time"
    local stats="$WORK/$tag.stats.json" extra=""
    rm -f "$out" "$err" "$tfile" "$stats"
    local -a cmd
    case $tool in
        ulogd)
            write_ulogd_conf "$WORK/ulogd.conf" "$out" "$WORK/$tag.ulogd.log"
            cmd=("$ULOGD" -c "$WORK/ulogd.conf")
            ;;
        nflogd)
            cmd=("$NFLOGD" --syslogemu-file "$out" --stdout none --tail-socket "" --no-rate-limit --stats-file "$stats")
            local -a nflogd_args=()
            read -r -a nflogd_args <<<"${NFLOGD_ARGS:-}"
            cmd+=("${nflogd_args[@]}")
            ;;
        *) die "unknown tool $tool" ;;
    esac
    /usr/bin/time -f "%U %S" -o "$tfile" ip netns exec "$NS" "${cmd[@]}" >"$err" 2>&1 &
    local tpid=$!
    STARTED+=("$tpid")
    local pid
    pid=$(child_of "$tpid") || die "$tool did not start (see $err)"
    STARTED+=("$pid")

    # Wait until the group is bound (and, for netpol-nflogd, until it says so).
    local i ok=0
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; die "$tool exited before binding"; }
        if group_bound; then
            if [[ $tool != nflogd ]] || grep -q "bound NFLOG group" "$err"; then ok=1; break; fi
        fi
        sleep 0.05
    done
    [[ $ok == 1 ]] || { cat "$err" >&2; die "$tool did not bind group $GROUP within 10 s"; }
    sleep 0.2

    nsx iptables -Z "$CHAIN"
    local fl
    # In the background + wait, so that a SIGINT/SIGTERM to this script is
    # handled at once (bash runs traps only between foreground commands).
    ip netns exec "$NS" "$WORK/flood" 127.0.0.1 $PORT "$N" "$rate" "$BATCH" "$SENDERS" >"$WORK/flood.out" &
    local fpid=$!
    STARTED+=("$fpid")
    wait "$fpid" || die "flood failed"
    fl=$(cat "$WORK/flood.out")
    local t_end
    t_end=$(date +%s.%N)
    sleep "$FLUSH_WAIT"
    # With SETTLE=1, also wait until the logger has caught up with its socket
    # backlog (output size unchanged over 0.5 s, at most SETTLE_MAX s), so that
    # "lost" means dropped, not "still queued when stopped".
    local catchup="-"
    if [[ $SETTLE == 1 ]]; then
        local prev=-1 cur
        for i in $(seq 1 $((SETTLE_MAX * 2))); do
            cur=$(stat -c %s "$out" 2>/dev/null || echo 0)
            [[ $cur == "$prev" ]] && break
            prev=$cur
            sleep 0.5
        done
        # time from the end of the flood until the output stopped growing (minus the 0.5 s
        # stability check; <= FLUSH_WAIT means it kept up)
        catchup=$(awk -v a="$t_end" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a - 0.5 }')
    fi

    kill -TERM "$pid"
    local rc=0
    for i in $(seq 1 600); do  # up to 30 s for the drain
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$tpid" 2>/dev/null; then
        echo "vs-ulogd: $tool did not exit 30 s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        extra+="KILLED "
    fi
    wait "$tpid" || rc=$?
    if [[ $rc != 0 ]]; then
        extra+="exit=$rc "
        [[ $tool == nflogd ]] && { echo "--- $tool stderr (last 20 lines):" >&2; tail -n 20 "$err" >&2; }
    fi

    local counter lines cpu
    counter=$(rule_counter "$CHAIN")
    lines=$(wc -l <"$out" 2>/dev/null || echo 0)
    cpu=$(tail -n1 "$tfile" | awk '{ printf "%.2f", $1 + $2 }')
    local sent_rate
    sent_rate=$(sed -n 's/.*rate_pps=\([0-9]*\).*/\1/p' <<<"$fl")
    if [[ $tool == nflogd ]]; then
        if [[ -s $stats ]]; then
            local rcv lost wr
            rcv=$(json_num "$stats" received); lost=$(json_num "$stats" lost)
            wr=$(json_num "$stats" syslogemu-file)
            # per-sink naming "written":{"file:<path>":N} as an alternative to the documented key
            [[ -n $wr ]] || wr=$(grep -o '"written"[[:space:]]*:[[:space:]]*{[^}]*}' "$stats" \
                | grep -o '"file:[^"]*"[[:space:]]*:[[:space:]]*[0-9]*' | head -n1 | grep -o '[0-9]*$' || true)
            extra+="received=$rcv lost=$lost written=$wr"
            if [[ -n $lost ]] && (( lines + lost != counter )); then
                extra+=" MISMATCH(lines+lost=$((lines + lost)))"
            fi
            if [[ -n $wr ]] && (( wr != lines )); then
                extra+=" MISMATCH(written!=lines)"
            fi
        else
            extra+="no-stats-file"
        fi
    else
        local n
        n=$(grep -c "losing events" "$WORK/$tag.ulogd.log" 2>/dev/null || true)
        extra+="enobufs_notices=${n:-0}"
    fi
    local lost_pct us_line
    lost_pct=$(awk -v c="$counter" -v l="$lines" 'BEGIN { printf "%.2f", (c > 0 ? 100 * (c - l) / c : 0) }')
    us_line=$(awk -v s="$cpu" -v l="$lines" 'BEGIN { if (l > 0) printf "%.2f", s * 1e6 / l; else print "-" }')
    extra="catchup=${catchup}s $extra"
    RESULTS+=("$rate $tool $counter $lines $lost_pct $cpu $us_line ${sent_rate:-?} $extra")
    printf '  %-7s rate=%-7s %s | counter=%s lines=%s lost=%s%% cpu=%ss %sus/line %s\n' \
        "$tool" "$rate" "$fl" "$counter" "$lines" "$lost_pct" "$cpu" "$us_line" "$extra" >&2
    rm -f "$out"   # keep tmpfs usage bounded
}

TOOLS_RUN=()
for t in $TOOLS; do
    if [[ $t == nflogd && ! -x $NFLOGD ]]; then
        echo "vs-ulogd: $NFLOGD not found; measuring ulogd only (build with cargo build --release)" >&2
        continue
    fi
    TOOLS_RUN+=("$t")
done

bench_start_load
echo "vs-ulogd: N=$N RATES=\"$RATES\" tools: ${TOOLS_RUN[*]}; scratch $WORK; loadavg $LOAD_START" >&2
for rate in $RATES; do
    for t in "${TOOLS_RUN[@]}"; do
        run_one "$t" "$rate"
    done
done

# --- report --------------------------------------------------------------------
echo
echo "# netpol-nflogd vs ulogd2 $(ulogd_version) — NFLOG group $GROUP + DROP on $CHAIN, UDP on lo, flood.c: $SENDERS sender(s), batches of $BATCH"
bench_report_host
echo "# N=$N per run, flush wait ${FLUSH_WAIT}s, SETTLE=$SETTLE (catchup = s from end of flood until output stopped growing), ulogd: LOGEMU sync=1 buffer 64M/max 128M; nflogd: $NFLOGD"
echo "# rate 0 = flat out; sent/s is what flood.c achieved; lost% = (counter - lines) / counter"
printf '%-8s %-7s %9s %10s %10s %8s %8s %10s  %s\n' rate tool sent/s counter lines lost% cpu_s us/line notes
for r in "${RESULTS[@]}"; do
    read -r rate tool counter lines lost cpu usl sr extra <<<"$r"
    printf '%-8s %-7s %9s %10s %10s %8s %8s %10s  %s\n' "$rate" "$tool" "$sr" "$counter" "$lines" "$lost" "$cpu" "$usl" "$extra"
done
echo
echo "# ratios ours/ulogd (CPU per line: < 1 means cheaper; loss: lost% ours / lost% ulogd)"
printf '%-8s %14s %14s %14s\n' rate cpu/line loss_ours% loss_ulogd%
for rate in $RATES; do
    u="" o=""
    for r in "${RESULTS[@]}"; do
        read -r rr tool _ _ lost _ usl _ _ <<<"$r"
        [[ $rr == "$rate" ]] || continue
        [[ $tool == ulogd ]] && u="$lost $usl"
        [[ $tool == nflogd ]] && o="$lost $usl"
    done
    [[ -n $u && -n $o ]] || continue
    read -r ul uus <<<"$u"; read -r ol ous <<<"$o"
    awk -v rate="$rate" -v ul="$ul" -v uus="$uus" -v ol="$ol" -v ous="$ous" 'BEGIN {
        cr = (uus + 0 > 0 && ous != "-") ? sprintf("%.3f", ous / uus) : "-";
        lr = (ul + 0 > 0) ? sprintf(" (x%.3f)", ol / ul) : "";
        printf "%-8s %14s %14s %14s%s\n", rate, cr, ol, ul, lr }'
done
