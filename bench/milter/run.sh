#!/bin/sh
# Milter throughput over loopback: see README.md. Usage:
#   bench/milter/run.sh [MESSAGES [CONNECTIONS]]
# from anywhere in the checkout. Prints the Go benchmark lines, then a
# summary with the ratios against the baselines of the same run.
set -eu
cd "$(dirname "$0")/../.."
n=${1:-20000}
conns=${2:-64}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== milter (child process), $n messages per scenario, $conns connections"
SMSMILTER_BENCH_CONNS=$conns go test -run '^$' -bench '^BenchmarkMilter$' -benchtime "${n}x" ./milter/ | tee -a "$out"
echo "== baseline: the sqlite store's raw enqueue rate, 64 goroutines, group commit"
go test -run '^$' -bench '^BenchmarkEnqueueParallel$/^group$' -benchtime "${n}x" ./internal/store/sqlite/ | tee -a "$out"

# Each metric is "value unit"; pick them by unit.
awk '
function metric(line, unit,   i, f, k) {
	k = split(line, f, /[ \t]+/)
	for (i = 2; i <= k; i++) if (f[i] == unit) return f[i-1]
	return ""
}
/^BenchmarkMilter\/pass/ { pass = metric($0, "msg/s"); pp50 = metric($0, "p50-ms"); pp99 = metric($0, "p99-ms"); prss = metric($0, "peak-RSS-MiB"); pcpu = metric($0, "milter-CPU-µs/msg") }
/^BenchmarkMilter\/sms/  { sms = metric($0, "msg/s");  sp50 = metric($0, "p50-ms"); sp99 = metric($0, "p99-ms"); srss = metric($0, "peak-RSS-MiB"); scpu = metric($0, "milter-CPU-µs/msg") }
/^BenchmarkEnqueueParallel\/group/ { raw = metric($0, "msg/s") }
END {
	printf "\n%-28s %10s %9s %9s %10s %14s\n", "scenario", "msg/s", "p50 ms", "p99 ms", "RSS MiB", "milter CPU µs"
	printf "%-28s %10.0f %9.2f %9.2f %10.1f %14.0f   (target >= 5000 msg/s)\n", "(a) no SMS recipient", pass, pp50, pp99, prss, pcpu
	printf "%-28s %10.0f %9.2f %9.2f %10.1f %14.0f   (target >= 1000 msg/s)\n", "(b) one SMS, durable", sms, sp50, sp99, srss, scpu
	if (pass > 0) printf "ratio (b)/(a): %.3f\n", sms / pass
	if (raw > 0) printf "ratio (b)/raw store enqueue (%.0f msg/s): %.3f\n", raw, sms / raw
}' "$out"
