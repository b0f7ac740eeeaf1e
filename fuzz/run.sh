#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 600), one after another.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain RUSTC_BOOTSTRAP=1 unlocks
# the nightly flags cargo-fuzz passes (-Zsanitizer=address). Each target starts from the committed
# seeds (fuzz/seeds/TARGET, read only) and its own growing corpus (fuzz/corpus/TARGET); crashes go
# to fuzz/artifacts/TARGET/ and fuzzing goes on (libFuzzer's fork mode with -ignore_crashes), so a
# shallow crash does not end a target's run. Memory is bounded as the
# daemon needs it to be: 512 MB resident, no single allocation above 256 MB.
# Prints, per target, the executions libFuzzer reports at the end (stat::number_of_executed_units).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(nflog_batch decode pcap_reader tail_text annotations config)
fi
export RUSTC_BOOTSTRAP=1

# Build once, then run the binaries: `cargo fuzz run` would rebuild whenever src/ changed.
nice -n 19 cargo fuzz build --fuzz-dir "$here" || exit 1
bin=$here/target/x86_64-unknown-linux-gnu/release

declare -A execs status
# Text inputs past a few KiB only slow the search down; NFLOG batches and pcaps need room.
declare -A max_len=([tail_text]=4096 [config]=8192 [annotations]=256 [decode]=4096)
for t in "${targets[@]}"; do
    mkdir -p "$here/corpus/$t" "$here/artifacts/$t" "$here/seeds/$t"
    log=$here/artifacts/$t/run.log
    echo "== $t: ${seconds}s (log: $log)"
    dict=()
    [ -f "$here/dicts/$t.dict" ] && dict=("-dict=$here/dicts/$t.dict")
    nice -n 19 "$bin/$t" "$here/corpus/$t" "$here/seeds/$t" -artifact_prefix="$here/artifacts/$t/" \
        -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=10 \
        -max_len="${max_len[$t]:-65536}" -print_final_stats=1 "${dict[@]}" \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 >"$log" 2>&1
    rc=$?
    # Fork mode's parent counts every child's executions in its "#N: cov: ..." lines.
    execs[$t]=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    crashes=$(grep -o 'oom/timeout/crash: [0-9/]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" -eq 0 ] && [ "${crashes:-0/0/0}" = 0/0/0 ]; then
        status[$t]=ok
    else
        status[$t]="exit $rc, oom/timeout/crash ${crashes:-?}: inputs in $here/artifacts/$t/"
    fi
    grep -E '^#[0-9]+' "$log" | tail -1
    grep -E '^INFO: exiting' "$log" | tail -1
done

echo
printf '%-12s %8s %14s  %s\n' target seconds executions result
for t in "${targets[@]}"; do
    printf '%-12s %8s %14s  %s\n' "$t" "$seconds" "${execs[$t]:-?}" "${status[$t]}"
done
