#!/usr/bin/env bash
# A long stream through the binary, never stored: BYTES (default 10 GB) of generated mixed
# records (examples/stream_gen.rs) → iis-tagger → examples/strip.rs, with
# sha256(strip(output)) == sha256(input) checked, and the tagger's peak RSS and counters
# reported.
#
#   scripts/ten-gigabytes.sh [BYTES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
bytes="${1:-10000000000}"
seed="${2:-1}"
cargo build --release --quiet --bin iis-tagger --example stream_gen --example strip
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
target/release/examples/stream_gen "$bytes" "$seed" \
  | tee >(sha256sum | cut -d' ' -f1 > "$tmp/in") \
  | /usr/bin/time -f '%M' -o "$tmp/rss" target/release/iis-tagger --stats-format json 2> "$tmp/stats" \
  | target/release/examples/strip | sha256sum | cut -d' ' -f1 > "$tmp/out"
end=$(date +%s)
# The tee's hash is written by a process substitution: wait for it.
for _ in $(seq 100); do [ -s "$tmp/in" ] && break; sleep 0.1; done
echo "bytes: $bytes, seed: $seed, wall: $((end - start)) s"
echo "peak RSS of iis-tagger: $(cat "$tmp/rss") KiB"
python3 - "$tmp/stats" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = s["not_inspected"]
print(f"lines {s['lines']}, bytes {s['bytes']}, candidates {s['candidates']}, parsed {s['parsed']} "
      f"({s['repaired']} repaired), annotated {s['annotated']}; not inspected: {n}")
PY
echo "sha256 in:  $(cat "$tmp/in")"
echo "sha256 out: $(cat "$tmp/out") (annotations stripped)"
[ "$(cat "$tmp/in")" = "$(cat "$tmp/out")" ] && echo "strip(output) == input" || { echo "MISMATCH"; exit 1; }
