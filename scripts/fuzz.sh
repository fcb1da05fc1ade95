#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 300) each, from its seeds, and prints the
# executions and what was found. Findings are left in fuzz/artifacts/<target>/; copy each
# into fuzz/regressions/<target>/ once fixed, and `cargo test` re-checks it for ever.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable toolchain with
# `-s none` (no sanitizer: the crate has no unsafe code; libFuzzer's coverage and the
# checks' assertions do the work).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stream chunking splice normalize differential framing xml embedded bounds evtx)
# The evtx target starts from the real files of ../shared/corpus/evtx (used by path, never
# committed: they are copied into the target's working corpus, which is not in git).
if [ -d ../../shared/corpus/evtx ]; then
  mkdir -p corpus/evtx
  cp -n ../../shared/corpus/evtx/*.evtx corpus/evtx/ 2>/dev/null || true
fi
cargo fuzz build -s none --release >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  set +e
  seeds=("seeds/$t")
  [ -d "seeds/$t" ] || seeds=()
  max_len=65536
  [ "$t" = evtx ] && max_len=1200000
  cargo fuzz run -s none --release "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)
  found=$(ls "artifacts/$t" | grep -vc 'last-run.log' || true)
  echo "$t: ${execs:-?} executions in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "corpus/$t" | wc -l), findings ${found}, exit ${status}"
done
