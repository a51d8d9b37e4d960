#!/usr/bin/env bash
# Accepted reports per second through the whole daemon (strict SMTP, MIME
# parsing, one synced bbolt commit per message with its 3 outbound rows, the
# delivery worker draining to a local relay), from 10 parallel clients, next
# to a bare go-smtp server with a discarding backend measured in the same run.
# Usage: contrib/bench/intake.sh [N reports, default 1000] [runs, default 3]
# (contrib/bench/run runs this pair too, next to Postfix; this is the quick loop.)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
runs=${2:-3}
go test -run '^$' -bench 'BenchmarkIntake$|BenchmarkReferenceGoSMTP$' -benchtime "${n}x" -count "$runs" ./cmd/embargo/... |
  awk '/^Benchmark/ { name=$1; sub(/-[0-9]+$/, "", name); for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") { v[name]=v[name] " " $i; s[name]+=$i; c[name]++ } }
       END { for (k in v) printf "%-28s msgs/s:%s (mean %.0f)\n", k, v[k], s[k]/c[k];
             if (c["BenchmarkIntake"] && c["BenchmarkReferenceGoSMTP"])
               printf "ratio intake/reference: %.3f\n", (s["BenchmarkIntake"]/c["BenchmarkIntake"])/(s["BenchmarkReferenceGoSMTP"]/c["BenchmarkReferenceGoSMTP"]) }'
