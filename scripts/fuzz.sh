#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 300), as many at once as there
# are cores, installing cargo-fuzz first if it is missing. CI runs it with 60. A crash
# prints libFuzzer's report and fails the script; the input that crashed is left in
# fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#   bash scripts/fuzz.sh --install      # only install cargo-fuzz
#   bash scripts/fuzz.sh --build        # install cargo-fuzz and build the targets, no run
#
# cargo-fuzz passes nightly rustc flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. The sanitizer is off: the fuzzed code is safe Rust, so AddressSanitizer would only
# slow the build and every execution.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
[ "${1:-}" = "--install" ] && exit 0

seconds="${1:-300}"
shift || true
targets=("$@")

cd fuzz
if [ "$seconds" = --build ]; then
  exec cargo fuzz build --sanitizer none
fi
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none

# One libFuzzer process per core: the targets are independent and each is single-threaded.
jobs="$(nproc 2>/dev/null || echo 1)"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

fuzz_one() {
  local target="$1" log="$logs/$1.log"
  mkdir -p "corpus/$target"
  # seeds/ are read-only inputs; what libFuzzer finds goes to corpus/ (not committed).
  local seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target crashed (input in fuzz/artifacts/$target/)" >&2
    return 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done [0-9]+ runs)' "$log" |
    sed "s/^/fuzz: $target: /" >&2 || true
}

pids=()
failed=0
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s" >&2
  fuzz_one "$target" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
