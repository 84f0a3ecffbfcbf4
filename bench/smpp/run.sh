#!/usr/bin/env bash
# Benchmark of the smpp transport against the node-smpp test peer, with
# its two baselines measured in the same run (see BenchmarkSend in
# transports/smpp/bench_test.go): a raw node-smpp client (blast.js) and a
# bare gosmpp session. Figures are meant to be read as ratios:
# x-baseline and x-raw-gosmpp, our submit/s over theirs.
#
#   bench/smpp/run.sh [COUNT]     # COUNT repetitions (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d transports/smpp/testdata/peer/node_modules/smpp ] ||
  npm ci --silent --no-audit --no-fund --prefix transports/smpp/testdata/peer
exec go test -run '^$' -bench BenchmarkSend -benchtime 20000x -count "${1:-3}" ./transports/smpp/
