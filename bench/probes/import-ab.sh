#!/bin/bash
# Interleaved whole-process imports of one export stream, a 2 s pause after each `sync`: each
# strata checkout given (its bin/strata), then `nix-store --import`, ROUNDS times, each into a
# new store under DIR (left there: delete it later, not before another measurement). Behind the
# "by hand" import figures in BENCHMARKS.md. The export: `npx tsx bench/import.ts --keep` leaves
# it in .cache/bench/import/export.bin, with a nix.conf in .cache/bench/import/nixconf.
#   bench/probes/import-ab.sh ROUNDS EXPORT NIX_CONF_DIR DIR CHECKOUT...
set -euo pipefail
rounds=$1 export_file=$2 dir=$4
export NIX_CONF_DIR=$3
shift 4
mkdir -p "$dir"
for i in $(seq 1 "$rounds"); do
  for checkout in "$@"; do
    sync; sleep 2
    /usr/bin/time -f "$checkout %e s %U u %S s" node "$checkout/bin/strata" --store "$dir/s$i-$RANDOM" import <"$export_file" >/dev/null
  done
  sync; sleep 2
  /usr/bin/time -f "nix %e s %U u %S s" nix-store --store "$dir/n$i" --import <"$export_file" >/dev/null
done
