#!/bin/bash
# Fuzzes every parser that meets untrusted bytes (docs/security.md, "Fuzzing"):
# builds the libFuzzer targets of fuzz/ with cargo-fuzz on the stable toolchain,
# runs each for SECONDS (default 60) from its seed corpus (fuzz/corpus/<target>)
# plus what earlier runs found (target/fuzz/corpus/<target>), and prints, per
# target: executions, executions per second, corpus size, coverage, crashes.
#
#   [FUZZ_JOBS=N] scripts/fuzz.sh [SECONDS] [TARGET...]
#
# A crash, a hang (over 1 s on one input) or a memory blow-up (over 2 GiB) is a
# failure: its input is kept in target/fuzz/artifacts/<target>/ and the script
# exits 1 once every target has run. A slow input counts as a hang only if it
# is over 1 s again on each of three replays: on a loaded, shared machine a
# process can stall for seconds on any input (such inputs go to
# target/fuzz/stalls/<target>/ and the table counts them). Reproduce one with
#   target/fuzz/x86_64-unknown-linux-gnu/release/<target> <input file>
# (a fix gets a regression test in the parser's own crate, not only the input
# in the seed corpus).
#
# The build has no sanitizer (the workspace denies unsafe code; a sanitizer
# needs nightly). FUZZ_SANITIZER=address builds with AddressSanitizer through
# RUSTC_BOOTSTRAP=1, set for that build of the fuzz crate alone, never for the
# product's build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token jwk_public jwk_private access_request admin_request goflags ipset_reply nft_reply)
sanitizer=${FUZZ_SANITIZER:-none}
# Its own target dir (one per sanitizer): instrumented crates must not mix with
# the product's build, nor with each other.
work=target/fuzz
[ "$sanitizer" = none ] || work=target/fuzz-$sanitizer

command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz@0.13.2

build=(cargo fuzz build --sanitizer "$sanitizer" --target-dir "../$work")
if [ "$sanitizer" = none ]; then
    (cd fuzz && "${build[@]}")
else
    (cd fuzz && RUSTC_BOOTSTRAP=1 "${build[@]}")
fi

# anyhow captures a backtrace per error when RUST_BACKTRACE is set: milliseconds
# per input on the error paths, which are most of them. Panics keep theirs.
export RUST_LIB_BACKTRACE=0
bin=$work/x86_64-unknown-linux-gnu/release

# Whether libFuzzer's timeout input hangs again: a real hang times out on each
# of three replays; an input that finishes once was a stall of the machine.
hangs() {
    local target=$1 input=$2
    for _ in 1 2 3; do
        "$bin/$target" -timeout=1 -runs=1 "$input" >/dev/null 2>&1 && return 1
    done
    return 0
}

# Runs one target for $seconds; its row of the table goes to
# $work/logs/<target>.row, and <target>.failed exists when it found something.
# libFuzzer's own limit is generous (30 s, wall clock, so that a stalled process
# does not end the run) and it reports every input over 1 s; each is replayed.
# Should a stall still reach 30 s, fuzzing goes on for the rest of the time.
run() {
    local target=$1
    local corpus=$work/corpus/$target artifacts=$work/artifacts/$target log=$work/logs/$target.log
    local stalls=$work/stalls/$target
    mkdir -p "$corpus" "$artifacts" "$stalls" "$(dirname "$log")"
    rm -f "$work/logs/$target.failed"
    : >"$log"
    local args=(-timeout=30 -report_slow_units=1 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
    [ -e "fuzz/dict/$target.dict" ] && args+=(-dict="fuzz/dict/$target.dict")
    # The key files are seeds straight from testdata/ (read only: libFuzzer
    # writes what it finds into the first corpus), never copied into fuzz/.
    local seeds=()
    case $target in jwk_public | jwk_private) seeds=(testdata) ;; esac
    local start=$SECONDS left=$seconds execs=0 stalled=0 status
    # What this run writes is newer than this mark (earlier findings stay).
    local mark=$work/logs/$target.started
    touch "$mark"
    while :; do
        status=0
        "$bin/$target" "$corpus" "fuzz/corpus/$target" "${seeds[@]}" -max_total_time="$left" "${args[@]}" \
            >>"$log" 2>&1 || status=$?
        local ran
        ran=$(stat number_of_executed_units)
        execs=$((execs + ${ran:-0}))
        left=$((seconds - (SECONDS - start)))
        local input
        input=$(sed -n 's/.*Test unit written to \(.*timeout-.*\)$/\1/p' "$log" | tail -1)
        if [ "$status" -eq 70 ] && [ -f "$input" ] && ! hangs "$target" "$input"; then
            mv "$input" "$stalls/"
            stalled=$((stalled + 1))
            [ "$left" -gt 0 ] && continue
            status=0
        fi
        break
    done
    for input in $(find "$artifacts" -type f -newer "$mark" \( -name 'slow-unit-*' -o -name 'timeout-*' \)); do
        if ! hangs "$target" "$input"; then
            mv "$input" "$stalls/"
            stalled=$((stalled + 1))
        fi
    done
    local found last cov corp
    found=$(find "$artifacts" -type f -newer "$mark" | wc -l)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 edges, \2 features/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9a-zA-Z]*\).*/\1 inputs, \2/p' <<<"$last")
    [ "$stalled" -eq 0 ] || found="$found ($stalled stalls set aside)"
    printf '%-15s %12s %9s %-22s %-26s %s\n' "$target" "$execs" \
        "$((execs / (SECONDS - start > 0 ? SECONDS - start : 1)))" "$corp" "$cov" "$found" \
        >"$work/logs/$target.row"
    if [ "$status" -ne 0 ] || [ "${found%% *}" -gt 0 ]; then
        echo "$target (exit $status; $log)" >"$work/logs/$target.failed"
    fi
}

# One of libFuzzer's final statistics (-print_final_stats) from $log: the last run's.
stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }

# FUZZ_JOBS targets at a time (default 1, as in CI; 2 on this 2-core machine
# for the long runs of docs/security.md).
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "${FUZZ_JOBS:-1}" ]; do wait -n || true; done
    run "$target" &
done
wait

printf '%-15s %12s %9s %-22s %-26s %s\n' target executions "exec/s" corpus coverage crashes
failed=0
for target in "${targets[@]}"; do
    cat "$work/logs/$target.row"
    if [ -e "$work/logs/$target.failed" ]; then
        echo "FAILED: $(cat "$work/logs/$target.failed")" >&2
        failed=1
    fi
done
exit "$failed"
