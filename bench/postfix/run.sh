#!/usr/bin/env bash
# Mail throughput through Postfix with and without smsmilter, measured with
# Postfix's own smtp-source and smtp-sink in one run, interleaved, and
# reported as ratios to Postfix alone (see BenchmarkPostfix in
# e2e/bench_test.go and bench/README.md). Needs root (a private Postfix
# instance in a temporary folder, loopback ports only) and postfix.
#
#   bench/postfix/run.sh [MESSAGES [ROUNDS]]     # default 2000 messages, 3 rounds
#
# Two passes: Postfix's default in_flow_delay (1s), then in_flow_delay = 0s
# (SMS-only mail never returns Postfix's flow tokens; see docs/postfix.md).
# The first pass sends fewer messages in sms mode: it runs at about one
# message per second per session there.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/postfix/run.sh: run as root (it starts a private Postfix)" >&2
  exit 2
fi
export SMSMILTER_BENCH_MESSAGES=${1:-2000} SMSMILTER_BENCH_ROUNDS=${2:-3}
export SMSMILTER_BENCH_SESSIONS=${SMSMILTER_BENCH_SESSIONS:-20} SMSMILTER_BENCH_SIZE=${SMSMILTER_BENCH_SIZE:-1024}
bench() {
  go test -run '^$' -bench '^BenchmarkPostfix$' -benchtime 1x -timeout 60m -v ./e2e/ |
    grep -E 'bench_test.go|^Benchmark|^(ok|FAIL|PASS)|panic|Error'
}
echo "== Postfix defaults (in_flow_delay = 1s)"
SMSMILTER_BENCH_SMS_MESSAGES=${SMSMILTER_BENCH_SMS_MESSAGES:-200} bench
echo
echo "== in_flow_delay = 0s"
SMSMILTER_BENCH_POSTCONF="in_flow_delay = 0s" bench
