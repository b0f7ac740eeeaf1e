#!/usr/bin/env bash
# Latency / idle wake-ups / CPU comparison: netpol-nflogd versus ulogd2 (LOGEMU),
# on one K3s-style rule ("NFLOG group 100, prefix DROP by policy default/deny-db",
# then DROP), in one run.
#
# Run as root (it creates a network namespace; all traffic stays inside it):
#
#   cargo build --release --bins && sudo benches/latency.sh
#   sudo N=50 IDLE=5 CPU=0 benches/latency.sh          # quick look, no CPU run
#
# What it measures, per tool, one after the other on the same rule and schedule:
#
# 1. Latency: benches/latency/probe.c sends one UDP datagram every INTERVAL_MS
#    (± JITTER_MS, fixed pseudo-random schedule, identical for both tools), each
#    from its own source port (its line's SPT= identifies it; the payload carries
#    the send time, CLOCK_REALTIME µs), and follows the tool's output file with
#    inotify. Latency = time from just before sendto() to the wake-up for the
#    write(2) that completed the packet's line, on one clock in one process.
#    Reported: p50, p90, p99, max, mean (nearest rank).
# 2. Idle wake-ups: then, with the tool still bound and no traffic, the sum of
#    voluntary (and non-voluntary) context switches of all its threads
#    (/proc/PID/task/*/status) over IDLE seconds, per second. Each voluntary
#    switch is one sleep, so one wake-up.
# 3. CPU per line at high rate: benches/vs-ulogd.sh with RATES=$CPU_RATES
#    (default flat out) and N=$CPU_N, daemon with its default configuration
#    (10 ms kernel flush timeout) and, with CPU_FLUSH_COMPARE=1, once more with
#    flush_timeout_ms = 100 (the previous default), to show what the short
#    timeout costs under load.
#
# The rule sits on INPUT -i lo by default: the datagram to 127.0.0.1 loops back
# and is dropped on input, where the kernel stamps NFLOG messages with the
# packet's time, so the daemon's own netpol_nflog_write_latency_seconds
# histogram (scraped from /metrics and printed for comparison) covers the time
# the message waited in the kernel. On OUTPUT (CHAIN=OUTPUT) the kernel sends no
# timestamp and that histogram starts at reception; the probe's figure is
# end-to-end either way.
#
# Environment:
#   N             packets per tool                          (default 200)
#   INTERVAL_MS   mean gap between packets                  (default 140)
#   JITTER_MS     uniform jitter of each send time, ±       (default 20)
#   TAIL_WAIT_MS  after the last packet, wait at most this long for lines (default 3000)
#   IDLE          idle window for the wake-up count, s      (default 10)
#   CHAIN         INPUT or OUTPUT                            (default INPUT)
#   TOOLS         tools to run, in order: ulogd, nflogd, and nflogd-100ms (the daemon
#                 with flush_timeout_ms = 100)              (default "ulogd nflogd")
#   CPU           1 = run benches/vs-ulogd.sh afterwards    (default 1)
#   CPU_RATES     its RATES (0 = flat out)                   (default 0)
#   CPU_N         its N                                      (default 1000000)
#   CPU_FLUSH_COMPARE 1 = also run the daemon with flush_timeout_ms = 100 there (default 1)
#   NFLOGD        netpol-nflogd binary (default <repo>/target/release/netpol-nflogd)
#   ULOGD         ulogd binary                               (default /usr/sbin/ulogd)
#   WORKDIR       parent of the scratch directory (default /dev/shm if present, else /tmp)
#   KEEP          1 = keep the scratch directory (per-packet TSVs, logs, metrics)
#
# ulogd2 runs with the same configuration as in vs-ulogd.sh (Debian's stack,
# LOGEMU sync=1, 64 MiB socket buffer); it leaves the kernel's flush timeout at
# its default of 1 s. netpol-nflogd runs with its defaults plus --stdout none,
# --no-rate-limit (the default 10/minute per policy would suppress most of the
# probe's lines) and a tail socket in the scratch directory.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

N=${N:-200}
INTERVAL_MS=${INTERVAL_MS:-140}
JITTER_MS=${JITTER_MS:-20}
TAIL_WAIT_MS=${TAIL_WAIT_MS:-3000}
IDLE=${IDLE:-10}
CHAIN=${CHAIN:-INPUT}
TOOLS=${TOOLS:-"ulogd nflogd"}
CPU=${CPU:-1}
CPU_RATES=${CPU_RATES:-0}
CPU_N=${CPU_N:-1000000}
CPU_FLUSH_COMPARE=${CPU_FLUSH_COMPARE:-1}
NFLOGD=${NFLOGD:-$REPO/target/release/netpol-nflogd}
ULOGD=${ULOGD:-/usr/sbin/ulogd}
KEEP=${KEEP:-0}
GROUP=100
PORT=5432
SPORT_BASE=20000
PREFIX="DROP by policy default/deny-db"
ULOGD_PLUGINS=${ULOGD_PLUGINS:-/usr/lib/x86_64-linux-gnu/ulogd}
METRICS_PORT=9109   # the daemon's default listen address is 0.0.0.0:9109 (inside the namespace)
NAME=latency
# shellcheck source=benches/lib.sh
. "$SCRIPT_DIR/lib.sh"

# --- prerequisites ---------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, iptables)"
need() { # need COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "missing $1: install the Debian package '$2' (apt-get install $2)"
}
need ip iproute2
need iptables iptables
need "$ULOGD" ulogd2
need gcc gcc
need curl curl
[[ $CPU != 1 ]] || need /usr/bin/time time
[[ -d $ULOGD_PLUGINS ]] || die "no ulogd plugins in $ULOGD_PLUGINS: install the Debian package 'ulogd2' (or set ULOGD_PLUGINS)"
[[ -x $NFLOGD ]] || die "$NFLOGD not found: build it with 'cargo build --release --bins' (or set NFLOGD)"
[[ $CHAIN == INPUT || $CHAIN == OUTPUT ]] || die "CHAIN must be INPUT or OUTPUT"
(( SPORT_BASE + N <= 65536 )) || die "N too large (at most $((65536 - SPORT_BASE)))"

bench_scratch
NS="latency-$$"
STARTED=()   # PIDs of processes this script started (loggers, probe, vs-ulogd.sh)

cleanup() {
    local rc=$?
    set +e
    local p i alive
    # TERM first (vs-ulogd.sh then removes its own namespace), KILL what is left.
    for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 1 50); do
        alive=0
        for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    bench_remove_scratch
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the probe ---------------------------------------------------------------------
gcc -O2 -Wall -o "$WORK/probe" "$SCRIPT_DIR/latency/probe.c"

# --- namespace and rule ---------------------------------------------------------------
if [[ $CHAIN == INPUT ]]; then IFOPT="-i lo"; else IFOPT="-o lo"; fi
bench_netns "$CHAIN" "$IFOPT" $PORT "$PREFIX"

# ctxt PID -> "voluntary nonvoluntary threads" summed over all threads
ctxt() {
    awk 'FNR == 1 { t++ } /^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 }
         END { print v + 0, n + 0, t + 0 }' /proc/"$1"/task/*/status 2>/dev/null
}
# cpu_ns PID -> time on CPU of all its threads, in ns (schedstat: finer than the
# 10 ms ticks of utime/stime, which a few hundred packets hardly move)
cpu_ns() {
    awk '{ s += $1 } END { printf "%.0f\n", s }' /proc/"$1"/task/*/schedstat 2>/dev/null
}

# The daemon's defaults with the previous 100 ms kernel flush timeout (every key left
# out of a configuration file keeps its default).
printf '[source]\nflush_timeout_ms = 100\n' >"$WORK/flush100.toml"

label() {
    case $1 in
        ulogd) echo "ulogd2" ;;
        nflogd) echo "netpol-nflogd" ;;
        nflogd-100ms) echo "nflogd(100ms)" ;;
    esac
}

declare -A R   # R[tool.key] = value

run_one() { # TOOL
    local tool=$1
    local out="$WORK/$tool.log" err="$WORK/$tool.stderr" tsv="$WORK/$tool.tsv"
    local -a cmd
    rm -f "$out"
    case $tool in
        ulogd)
            write_ulogd_conf "$WORK/ulogd.conf" "$out" "$WORK/ulogd.own.log"
            cmd=("$ULOGD" -c "$WORK/ulogd.conf")
            ;;
        nflogd | nflogd-100ms)
            cmd=("$NFLOGD" --syslogemu-file "$out" --stdout none --no-rate-limit
                 --tail-socket "$WORK/tail-$tool.sock" --stats-file "$WORK/$tool.stats.json")
            [[ $tool == nflogd-100ms ]] && cmd+=(--config "$WORK/flush100.toml")
            ;;
        *) die "unknown tool $tool (ulogd, nflogd, nflogd-100ms)" ;;
    esac
    # ip netns exec execs the command: $! is the logger itself.
    ip netns exec "$NS" "${cmd[@]}" >"$err" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    local i ok=0
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; die "$tool exited before binding (see above)"; }
        if group_bound && [[ -e $out ]]; then
            if [[ $tool == ulogd ]] || grep -q "bound NFLOG group" "$err"; then ok=1; break; fi
        fi
        sleep 0.05
    done
    [[ $ok == 1 ]] || { cat "$err" >&2; die "$tool did not bind group $GROUP (or create $out) within 10 s"; }
    sleep 0.5
    nsx iptables -Z "$CHAIN"

    local t0
    t0=$(cpu_ns "$pid")
    echo "latency: $(label "$tool"): $N packets, one every ${INTERVAL_MS}±${JITTER_MS} ms ..." >&2
    ip netns exec "$NS" "$WORK/probe" "$out" 127.0.0.1 $PORT "$N" "$INTERVAL_MS" "$JITTER_MS" \
        $SPORT_BASE "$TAIL_WAIT_MS" "$tsv" >"$WORK/$tool.probe" &
    local ppid=$!
    STARTED+=("$ppid")
    wait "$ppid" || die "probe failed for $tool"
    R[$tool.probe]=$(cat "$WORK/$tool.probe")
    R[$tool.cpu_ms]=$(awk -v a="$t0" -v b="$(cpu_ns "$pid")" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
    R[$tool.counter]=$(rule_counter "$CHAIN")
    echo "latency:   ${R[$tool.probe]} rule_counter=${R[$tool.counter]}" >&2

    if [[ $tool == nflogd* ]]; then
        nsx curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/$tool.metrics" || true
    fi

    # Idle: no traffic from here on. Every line is in, but give timers armed by the
    # last packet (the daemon's correlation window, anything periodic) 1.5 s to
    # expire, then count.
    sleep 1.5
    local v0 n0 th v1 n1 t_a t_b
    read -r v0 n0 th < <(ctxt "$pid")
    t_a=$(date +%s.%N)
    local c0
    c0=$(cpu_ns "$pid")
    echo "latency:   idle for ${IDLE}s (wake-ups of $th threads) ..." >&2
    sleep "$IDLE" &
    local spid=$!
    STARTED+=("$spid")
    wait "$spid"
    read -r v1 n1 th < <(ctxt "$pid")
    t_b=$(date +%s.%N)
    R[$tool.idle_cpu]=$(awk -v a="$c0" -v b="$(cpu_ns "$pid")" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    R[$tool.idle]=$(awk -v a="$v0" -v b="$v1" -v c="$n0" -v d="$n1" -v s="$t_a" -v e="$t_b" -v th="$th" \
        'BEGIN { printf "%.2f %.2f %d", (b - a) / (e - s), (d - c) / (e - s), th }')
    echo "latency:   idle wake-ups/s (voluntary, non-voluntary, threads): ${R[$tool.idle]}" >&2

    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && { echo "latency: $tool did not exit 10 s after SIGTERM; killing it" >&2; kill -KILL "$pid"; }
    wait "$pid" 2>/dev/null || true
    R[$tool.lines]=$(wc -l <"$out")
}

kv() { # kv KEY "k=v k=v ..." -> v
    local w
    for w in $2; do [[ ${w%%=*} == "$1" ]] && { echo "${w#*=}"; return; }; done
    echo "-"
}

# hist_summary FILE -> "count mean_ms p50<=ms p99<=ms" of netpol_nflog_write_latency_seconds (first sink)
hist_summary() {
    awk '
        /^netpol_nflog_write_latency_seconds_bucket/ {
            if (sink == "") { match($0, /sink="[^"]*"/); sink = substr($0, RSTART, RLENGTH) }
            if (index($0, sink) == 0) next
            match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            nb++; les[nb] = le; cum[nb] = $NF
        }
        /^netpol_nflog_write_latency_seconds_sum/ && sum == "" { sum = $NF }
        /^netpol_nflog_write_latency_seconds_count/ && cnt == "" { cnt = $NF }
        function q(f,   i) { for (i = 1; i <= nb; i++) if (cum[i] >= f * cnt) return les[i] == "+Inf" ? "inf" : sprintf("%g", les[i] * 1000); return "-" }
        END {
            if (cnt == "" || cnt == 0) { print "- - - -"; exit }
            printf "%d %.2f %s %s\n", cnt, sum / cnt * 1000, q(0.5), q(0.99)
        }' "$1"
}

bench_start_load
echo "latency: N=$N every ${INTERVAL_MS}±${JITTER_MS} ms on $CHAIN, idle ${IDLE}s, tools: $TOOLS; scratch $WORK; loadavg $LOAD_START" >&2
for t in $TOOLS; do run_one "$t"; done

# --- CPU per line at high rate (benches/vs-ulogd.sh) ------------------------------------
CPU_OUT=() # lines "label rate tool us/line lost% lines"
run_vs() { # LABEL TOOLS [NFLOGD_ARGS]
    local lbl=$1 tools=$2 args=${3:-}
    echo "latency: benches/vs-ulogd.sh RATES=\"$CPU_RATES\" N=$CPU_N TOOLS=\"$tools\" ${args:+NFLOGD_ARGS=\"$args\"} ..." >&2
    RATES="$CPU_RATES" N="$CPU_N" TOOLS="$tools" NFLOGD="$NFLOGD" ULOGD="$ULOGD" NFLOGD_ARGS="$args" \
        WORKDIR="$WORK" "$SCRIPT_DIR/vs-ulogd.sh" >"$WORK/vs-$lbl.out" &
    local vpid=$!
    STARTED+=("$vpid")
    wait "$vpid" || die "benches/vs-ulogd.sh failed (see above)"
    # table rows: rate tool sent/s counter lines lost% cpu_s us/line notes
    local rate tool sr counter lines lost cpu usl rest
    while read -r rate tool sr counter lines lost cpu usl rest; do
        [[ $tool == ulogd || $tool == nflogd ]] || continue
        [[ $rate =~ ^[0-9]+$ ]] || continue
        [[ $lbl == flush100 ]] && tool=nflogd-100ms
        CPU_OUT+=("$rate $tool $usl $lost $lines $cpu $sr")
    done <"$WORK/vs-$lbl.out"
}
if [[ $CPU == 1 ]]; then
    run_vs default "ulogd nflogd"
    if [[ $CPU_FLUSH_COMPARE == 1 ]]; then
        run_vs flush100 "nflogd" "--config $WORK/flush100.toml"
    fi
fi

# --- report ---------------------------------------------------------------------------
echo
echo "# netpol-nflogd vs ulogd2 $(ulogd_version): latency, idle wake-ups, CPU — NFLOG group $GROUP \"$PREFIX\" + DROP on $CHAIN, UDP on lo"
bench_report_host
echo "# latency: send -> line in the file, N=$N, one packet every ${INTERVAL_MS}±${JITTER_MS} ms; idle: ${IDLE}s without traffic after the run, all threads"
echo "# cpu_ms = CPU time of all its threads during the latency run; idle_wake/s = voluntary context switches/s"
echo "# (sleeps, i.e. wake-ups), idle_invol/s = preemptions/s, idle_cpu_ms = CPU time over the idle window, thr = threads"
printf '%-14s %5s %5s %8s %8s %8s %8s %8s %8s %12s %12s %11s %4s\n' \
    tool sent seen p50_ms p90_ms p99_ms max_ms mean_ms cpu_ms idle_wake/s idle_invol/s idle_cpu_ms thr
for t in $TOOLS; do
    p=${R[$t.probe]}
    read -r iv in th <<<"${R[$t.idle]}"
    printf '%-14s %5s %5s %8s %8s %8s %8s %8s %8s %12s %12s %11s %4s\n' "$(label "$t")" \
        "$(kv sent "$p")" "$(kv seen "$p")" "$(kv p50_ms "$p")" "$(kv p90_ms "$p")" "$(kv p99_ms "$p")" \
        "$(kv max_ms "$p")" "$(kv mean_ms "$p")" "${R[$t.cpu_ms]}" "$iv" "$in" "${R[$t.idle_cpu]}" "$th"
    if [[ $(kv missing "$p") != 0 ]]; then
        echo "  ! $(label "$t"): $(kv missing "$p") of $(kv sent "$p") lines not seen within ${TAIL_WAIT_MS} ms (rule counter ${R[$t.counter]}, lines in file ${R[$t.lines]})"
    fi
done
if [[ " $TOOLS " == *" ulogd "* && " $TOOLS " == *" nflogd "* ]]; then
    awk -v u="${R[ulogd.probe]}" -v o="${R[nflogd.probe]}" 'function g(s, k,   a, n, i) {
            n = split(s, a, " "); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
        BEGIN {
            printf "latency ratio ulogd2 / netpol-nflogd:"
            split("p50_ms p99_ms max_ms", ks, " ")
            for (i = 1; i <= 3; i++) { x = g(u, ks[i]); y = g(o, ks[i]);
                printf " %s x%s", substr(ks[i], 1, 3), (y + 0 > 0 ? sprintf("%.1f", x / y) : "-") }
            printf "\n" }'
fi
for t in $TOOLS; do
    [[ $t == nflogd* && -s $WORK/$t.metrics ]] || continue
    read -r hc hm h50 h99 <<<"$(hist_summary "$WORK/$t.metrics")"
    echo "$(label "$t") own histogram netpol_nflog_write_latency_seconds: count=$hc mean=${hm}ms p50<=${h50}ms p99<=${h99}ms (bucket bounds; $( [[ $CHAIN == INPUT ]] && echo "from the kernel's packet timestamp" || echo "from reception: no kernel timestamp on OUTPUT"))"
done
if [[ ${#CPU_OUT[@]} -gt 0 ]]; then
    echo
    echo "# CPU per line at high rate: benches/vs-ulogd.sh RATES=\"$CPU_RATES\" N=$CPU_N (rate 0 = flat out); nflogd(100ms) = flush_timeout_ms 100"
    printf '%-8s %-14s %9s %10s %8s %8s %10s\n' rate tool sent/s lines lost% cpu_s us/line
    for r in "${CPU_OUT[@]}"; do
        read -r rate tool usl lost lines cpu sr <<<"$r"
        printf '%-8s %-14s %9s %10s %8s %8s %10s\n' "$rate" "$(label "$tool")" "$sr" "$lines" "$lost" "$cpu" "$usl"
    done
    for rate in $CPU_RATES; do
        u="" o="" h=""
        for r in "${CPU_OUT[@]}"; do
            read -r rr tool usl _ <<<"$r"
            [[ $rr == "$rate" ]] || continue
            case $tool in ulogd) u=$usl ;; nflogd) o=$usl ;; nflogd-100ms) h=$usl ;; esac
        done
        awk -v rate="$rate" -v u="$u" -v o="$o" -v h="$h" 'BEGIN {
            printf "rate %s: CPU/line netpol-nflogd / ulogd2 = %s", rate, (u + 0 > 0 && o != "") ? sprintf("%.3f", o / u) : "-"
            if (h + 0 > 0 && o != "") printf "; 10 ms / 100 ms flush timeout = %.3f", o / h
            printf "\n" }'
    done
fi
