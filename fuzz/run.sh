#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 600), one after another.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain RUSTC_BOOTSTRAP=1 unlocks
# the nightly flags cargo-fuzz passes (-Zsanitizer=address). Each target starts from the committed
# seeds (fuzz/seeds/TARGET, read only) and its own growing corpus (fuzz/corpus/TARGET); crashes go
# to fuzz/artifacts/TARGET/ and the run goes on with the next target. Memory is bounded as the
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
        -max_len="${max_len[$t]:-65536}" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
    rc=$?
    execs[$t]=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ -z "${execs[$t]}" ]; then
        # A crash stops libFuzzer before its final stats: take its last status line.
        execs[$t]=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    if [ $rc -eq 0 ]; then
        status[$t]=ok
    else
        status[$t]="FAILED (exit $rc): $(grep -o 'Test unit written to .*' "$log" | tail -1)"
    fi
    grep -E '#[0-9]+ *DONE|stat::number_of_executed_units' "$log" | tail -2
done

echo
printf '%-12s %8s %14s  %s\n' target seconds executions result
for t in "${targets[@]}"; do
    printf '%-12s %8s %14s  %s\n' "$t" "$seconds" "${execs[$t]:-?}" "${status[$t]}"
done
