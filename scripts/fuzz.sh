#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails on any
# crash (a panic, an abort, a timeout or an out-of-memory of a target).
#
#   scripts/fuzz.sh                    # each target for 30 s (the test command)
#   FUZZ_SECONDS=600 scripts/fuzz.sh   # longer
#   FUZZ_TARGETS=envelope scripts/fuzz.sh
#
# cargo-fuzz needs nightly-only compiler flags (-Z sanitizer, coverage
# instrumentation). Only stable Rust is installed here, so the flags are
# unlocked with RUSTC_BOOTSTRAP=1 — the same compiler, nothing downloaded.
#
# Inputs: fuzz/seeds/<target> (kept in git) and fuzz/regressions/<target>
# (every input that ever crashed, kept in git and replayed by
# `cargo test --test wire fuzz_regressions::`); new coverage goes to
# fuzz/corpus/<target> (not kept). A crashing input is copied into
# fuzz/regressions/<target>/ so that, once fixed, it stays a test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-"envelope request frames deflate"}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# Release with debug assertions and overflow checks, AddressSanitizer (the
# cargo-fuzz defaults); 16 codegen units: the build (all of axum, tokio,
# redis, rustls) takes minutes instead of tens of minutes on two cores.
flags=(--codegen-units 16)

echo "==> building the fuzz targets"
cargo fuzz build "${flags[@]}"

failed=()
for target in $targets; do
  corpus=fuzz/corpus/$target
  artifacts=fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$target"
  before=$(ls "$artifacts" | wc -l)
  log=$(mktemp)
  # The compressor's buffers only fill up mid-message past 64 KiB (its
  # block size): let `deflate` inputs grow that far.
  extra=()
  if [ "$target" = deflate ]; then extra=(-max_len=140000); fi
  echo "==> fuzzing $target for ${seconds}s"
  if cargo fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" "fuzz/regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" \
      >"$log" 2>&1; then
    # "Done 1234567 runs in 60 second(s)", and the corpus it reached.
    grep -E '^Done [0-9]+ runs' "$log" || true
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    echo "$target: corpus $(ls "$corpus" | wc -l) inputs, no crash"
  else
    tail -n 60 "$log"
    failed+=("$target")
    # Keep what crashed as a regression input.
    for crash in "$artifacts"/*; do
      [ -f "$crash" ] || continue
      cp -n "$crash" "fuzz/regressions/$target/" || true
    done
    echo "$target: CRASH ($(( $(ls "$artifacts" | wc -l) - before )) new artifacts), kept in fuzz/regressions/$target/"
  fi
  rm -f "$log"
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  echo "replay one: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/regressions/<target>/<file>" >&2
  exit 1
fi
echo "==> fuzzing: no crash in ${seconds}s per target"
