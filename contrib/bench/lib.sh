# shellcheck shell=bash
# Helpers of contrib/bench/run: tools, processes, the private Postfix
# instance, embargo instances, Go benchmarks, numbers and the report.
# Sourced; it relies on run's variables (root, here, T, keep, ports).

PIDS=()   # every background process we started, killed on exit
ROWS=()   # the table's rows
failed=0

log() { printf '%s run: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---- tools ---------------------------------------------------------------

have_postfix() {
	local t
	for t in smtp-sink smtp-source postfix postconf postqueue; do
		command -v "$t" >/dev/null || return 1
	done
}

# install_postfix installs Debian's postfix package with debconf "No
# configuration": the binaries only; no main.cf, no running system instance.
install_postfix() {
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || ! command -v debconf-set-selections >/dev/null; then
		cat >&2 <<-'EOF'
			run: smtp-sink, smtp-source, postfix, postconf and postqueue are missing.
			     Install Debian's postfix package as root, without configuring it:
			       echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
			       DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
		EOF
		return 1
	fi
	log "installing Debian's postfix package (debconf: No configuration; the system instance stays unconfigured)"
	echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2; then
		apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2 || {
			echo "run: apt-get install postfix failed (see above)" >&2
			return 1
		}
	fi
	have_postfix || { echo "run: postfix installed but its tools are still missing from PATH" >&2; return 1; }
}

need_tools() {
	export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
	local t
	for t in awk sed tr find sort stat df; do
		command -v "$t" >/dev/null || { echo "run: $t not found; it is part of every Linux base system, install it" >&2; return 1; }
	done
	command -v go >/dev/null || { echo "run: go not found: install Go 1.25 or later (https://go.dev/dl/) or put it on PATH" >&2; return 1; }
	[ -r /proc/self/status ] || { echo "run: /proc is needed to read memory use (Linux only)" >&2; return 1; }
	have_postfix || install_postfix || return 1
	PF_DAEMON=$(postconf -h -d daemon_directory 2>/dev/null)
	[ -x "$PF_DAEMON/master" ] || { echo "run: Postfix's master not found in '$PF_DAEMON' (postconf -d daemon_directory)" >&2; return 1; }
}

# ---- processes -----------------------------------------------------------

# spawn OUT CMD...: start CMD in the background, output to OUT; sets $spawned.
spawn() {
	local out=$1
	shift
	"$@" >"$out" 2>&1 &
	spawned=$!
	PIDS+=("$spawned")
}

# stop PID: SIGTERM, then SIGKILL after 20 s; reaps it.
stop() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

cleanup() {
	local rc=$? pid
	for pid in "${PIDS[@]}"; do stop "$pid"; done
	if [ "${reported:-1}" = 0 ]; then
		# Stopped before the end (an error or a signal): what was measured.
		fail_row "the rest" "contrib/bench/run stopped early, exit status $rc"
		print_report
		[ $rc = 0 ] && rc=1
	fi
	if [ "${keep:-0}" = 1 ]; then
		log "kept $T"
	elif [ -n "${T:-}" ] && [ -d "$T" ]; then
		rm -rf "$T"
	fi
	exit $rc
}

# wait_smtp PORT SECONDS: until 127.0.0.1:PORT greets with 220.
wait_smtp() {
	local port=$1 secs=${2:-30} i
	for ((i = 0; i < secs * 10; i++)); do
		if (
			exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
			IFS= read -r -t 5 line <&3 || exit 1
			printf 'QUIT\r\n' >&3
			case $line in 220*) exit 0 ;; esac
			exit 1
		) 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
load1() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.6f", b - a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.6f", a / b; else print "" }'; }

# median X...: the middle figure (the mean of the two middle ones for an
# even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.6f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# num X: a figure with sensible precision.
num() {
	awk -v x="$1" 'BEGIN {
		if (x == "") { print "?"; exit }
		if (x < 0) { s = "-"; x = -x }
		if (x >= 100) printf "%s%.0f", s, x; else if (x >= 10) printf "%s%.1f", s, x; else printf "%s%.2f", s, x }'
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b <= 0) { print "?"; exit }
		r = a / b; if (r >= 0.1) printf "%.2f", r; else printf "%.3f", r }'
}
human() { awk -v n="$1" 'BEGIN { e = 0; m = n; while (m >= 10 && m % 10 == 0) { m /= 10; e++ }
	if (m == 1 && e >= 4) printf "10^%d", e; else printf "%d", n }'; }

# ---- smtp-sink -----------------------------------------------------------

start_sink() {
	local u=()
	[ "$(id -u)" = 0 ] && u=(-u nobody) # smtp-sink refuses to run as root without -u
	spawn "$T/sink.out" smtp-sink -c "${u[@]}" "127.0.0.1:$P_SINK" 1000
	SINK_PID=$spawned
	wait_smtp "$P_SINK" 10 || { log "smtp-sink did not start: $(tr '\r' '\n' <"$T/sink.out" | tail -3)"; return 1; }
}

# sink_counts prints smtp-sink's session and message counters (-c output).
sink_counts() {
	tail -c 600 "$T/sink.out" | awk 'BEGIN { RS = "\r" } /^sess=/ { l = $0 } END { split(l, a, /[ =]/); print a[2] + 0, a[6] + 0 }'
}

# ---- the private Postfix instance -----------------------------------------

# start_postfix and start_embargo run in the script's own shell (never in
# $(...), which would lose the processes they start) and leave the reason of
# a failure in ERR.

# start_postfix writes main.cf and master.cf in $PF/etc, creates the queue
# with "postfix -c DIR check" and starts the master on them. It listens on
# 127.0.0.1:$P_PF; mail to drain.test goes to smtp-sink through the smtp
# transport, which defer_transports holds until postqueue -f; everything else
# is discarded after it was queued (the durable-accept reference).
start_postfix() {
	[ "$(id -u)" = 0 ] || { ERR="a private Postfix instance needs root (its master starts the daemons as user postfix)"; return 1; }
	id postfix >/dev/null 2>&1 || { ERR="no user postfix: the postfix package is not fully installed"; return 1; }
	PF=$T/postfix
	mkdir -p "$PF/etc" "$PF/spool" "$PF/data" || return 1
	chown postfix "$PF/data"
	cat >"$PF/etc/main.cf" <<-EOF
		# A throw-away instance of contrib/bench/run; never the system one.
		compatibility_level = 3.6
		meta_directory = /etc/postfix
		queue_directory = $PF/spool
		data_directory = $PF/data
		mail_owner = postfix
		setgid_group = postdrop
		inet_interfaces = 127.0.0.1
		inet_protocols = ipv4
		myhostname = mx.bench.test
		mydomain = bench.test
		myorigin = bench.test
		mydestination =
		relay_domains =
		mynetworks = 127.0.0.0/8
		alias_maps =
		alias_database =
		biff = no
		smtpd_banner = \$myhostname ESMTP
		maillog_file = $PF/maillog
		maillog_file_prefixes = $PF
		smtp_dns_support_level = disabled
		default_transport = discard
		transport_maps = texthash:$PF/etc/transport
		defer_transports = smtp
	EOF
	echo "drain.test smtp:[127.0.0.1]:$P_SINK" >"$PF/etc/transport"
	cat >"$PF/etc/master.cf" <<-EOF
		127.0.0.1:$P_PF inet n - n - - smtpd
		pickup    unix  n - n 60   1 pickup
		cleanup   unix  n - n -    0 cleanup
		qmgr      unix  n - n 300  1 qmgr
		rewrite   unix  - - n -    - trivial-rewrite
		bounce    unix  - - n -    0 bounce
		defer     unix  - - n -    0 bounce
		trace     unix  - - n -    0 bounce
		verify    unix  - - n -    1 verify
		flush     unix  n - n 1000 0 flush
		proxymap  unix  - - n -    - proxymap
		showq     unix  n - n -    - showq
		smtp      unix  - - n -    - smtp
		relay     unix  - - n -    - smtp
		error     unix  - - n -    - error
		retry     unix  - - n -    - error
		discard   unix  - - n -    - discard
		anvil     unix  - - n -    1 anvil
		scache    unix  - - n -    1 scache
		postlog   unix-dgram n - n - 1 postlogd
	EOF
	chmod 644 "$PF/etc/"*
	# Postfix reports configuration errors only to a terminal or its log.
	if ! postfix -c "$PF/etc" check >"$PF/check.out" 2>&1; then
		ERR="postfix -c $PF/etc check failed: $(tail -3 "$PF/check.out" "$PF/maillog" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	spawn "$PF/master.out" "$PF_DAEMON/master" -c "$PF/etc" -d
	PF_PID=$spawned
	wait_smtp "$P_PF" 20 || {
		ERR="Postfix did not listen on 127.0.0.1:$P_PF: $(tail -3 "$PF/master.out" "$PF/maillog" 2>/dev/null | tr '\n' ' ')"
		return 1
	}
}

# pf_queued DIR...: files in these queue directories of the instance.
pf_queued() {
	local d n=0
	for d in "$@"; do
		[ -d "$PF/spool/$d" ] && n=$((n + $(find "$PF/spool/$d" -type f | wc -l)))
	done
	echo "$n"
}

# ---- embargo ---------------------------------------------------------------

# start_embargo NAME ACKS RELAY [LIMITS [HTTP]]: `embargo init --demo` in
# $T/NAME (list keys, two SRC members and a distributor with key pairs), then
# serve on 127.0.0.1:$P_EMB with that relay, ACKS acknowledgements per sender
# and day, the intake limits on new incidents and the cap on acknowledgements
# as init writes them (LIMITS "on", the default) or off ("off": 0, so that
# every report costs its acknowledgement), and an HTTP listener (/metrics) on
# 127.0.0.1:HTTP when given, else none. Sets EMB_PID and EMB_DIR.
start_embargo() {
	local name=$1 acks=$2 relay=$3 limits=${4:-on} http=${5:-}
	EMB_DIR=$T/$name
	"$BIN/embargo" init "$EMB_DIR" --demo --data "$EMB_DIR/data" >"$EMB_DIR.init" 2>&1 || {
		ERR="embargo init failed: $(tail -3 "$EMB_DIR.init" | tr '\n' ' ')"
		return 1
	}
	awk -v relay="$relay" -v acks="$acks" -v limits="$limits" -v http="$http" '
		/^[ \t]*\[/ { sec = $0; sub(/[ \t]*#.*/, "", sec); print; if (sec == "[relay]") print "url = \"" relay "\""; next }
		sec == "[http]" && /^[ \t]*listen[ \t]*=/ { print "listen = \"" (http == "" ? "" : "127.0.0.1:" http) "\""; next }
		sec == "[relay]" && /^[ \t]*url[ \t]*=/ { next }
		sec == "[intake]" && /^[ \t]*acks_per_sender_per_day[ \t]*=/ { print "acks_per_sender_per_day = " acks; next }
		sec == "[intake]" && limits == "off" && /^[ \t]*(new_incidents_per_(sender|client)_per_hour|acks_per_day)[ \t]*=/ { sub(/=.*/, "= 0"); print; next }
		{ print }' "$EMB_DIR/embargo.toml" >"$EMB_DIR/bench.toml"
	if [ "$limits" = off ] && ! grep -q '^new_incidents_per_client_per_hour = 0' "$EMB_DIR/bench.toml"; then
		ERR="embargo init wrote no [intake] new_incidents_per_client_per_hour to turn off"
		return 1
	fi
	if [ "$limits" = off ] && ! grep -q '^acks_per_day = 0' "$EMB_DIR/bench.toml"; then
		ERR="embargo init wrote no [intake] acks_per_day to turn off"
		return 1
	fi
	"$BIN/embargo" check --config "$EMB_DIR/bench.toml" >"$EMB_DIR.check" 2>&1 || {
		ERR="embargo check refused the benchmark configuration: $(grep -v '^$' "$EMB_DIR.check" | head -5 | tr '\n' ' ')"
		return 1
	}
	spawn "$EMB_DIR.log" "$BIN/embargo" serve --config "$EMB_DIR/bench.toml" --listen "127.0.0.1:$P_EMB"
	EMB_PID=$spawned
	wait_smtp "$P_EMB" 60 || {
		ERR="embargo serve did not listen on 127.0.0.1:$P_EMB: $(tail -3 "$EMB_DIR.log" | tr '\n' ' ')"
		return 1
	}
}

# ---- Go ----------------------------------------------------------------------

declare -A BENCH_DIR BENCH_BIN

# build compiles embargo, the load client and the test binaries holding our
# benchmarks, each found by its name wherever its package lives now.
build() {
	BIN=$T/bin
	log "building embargo, contrib/bench/load and the benchmark binaries"
	(cd "$root" && go build -o "$BIN/embargo" ./cmd/embargo && go build -o "$BIN/load" ./contrib/bench/load) || {
		log "go build failed"
		return 1
	}
	local b file dir
	for b in BenchmarkReleaseOneClick BenchmarkDrain BenchmarkDistributors1000 BenchmarkEncrypt100; do
		file=$(grep -rl --include='*_test.go' "^func $b(b \*testing.B)" "$root" | head -1)
		[ -n "$file" ] || { log "no package holds func $b"; return 1; }
		dir=$(dirname "$file")
		BENCH_DIR[$b]=$dir
		BENCH_BIN[$b]=$BIN/$(echo "${dir#"$root"/}" | tr / _).test
		[ -x "${BENCH_BIN[$b]}" ] && continue
		(cd "$root" && go test -c -o "${BENCH_BIN[$b]}" "./${dir#"$root"/}") || {
			log "go test -c ./${dir#"$root"/} failed"
			return 1
		}
	done
}

# gobench OUT NAME PATTERN [VAR=VALUE...]: runs the test binary that holds
# benchmark NAME, in its package directory, for the benchmarks matching
# PATTERN, one iteration each, BENCH_COUNT times (default 1). The garbage
# collector runs as `embargo serve` sets it (docs/design.md §5: GOGC=400,
# GOMEMLIMIT=256MiB) unless the environment sets GOGC or GOMEMLIMIT, so
# that the benchmarks' memory and speed are the daemon's.
gobench() {
	local out=$1 name=$2 pattern=$3
	shift 3
	(cd "${BENCH_DIR[$name]}" && env TMPDIR="$T/tmp" GOGC="${GOGC:-400}" GOMEMLIMIT="${GOMEMLIMIT:-256MiB}" "$@" "${BENCH_BIN[$name]}" \
		-test.run '^$' -test.bench "$pattern" -test.benchtime 1x -test.count "${BENCH_COUNT:-1}" -test.timeout 6h) >"$out" 2>&1 &&
		grep -q '^PASS' "$out"
}

# metric FILE BENCHMARK UNIT [min]: a figure from `go test -bench` output;
# of several runs (-count), the largest, or the smallest with "min". On a
# shared machine the best run is the one least disturbed.
metric() {
	awk -v b="$2" -v u="$3" -v m="${4:-max}" '/^Benchmark/ { n = $1; sub(/-[0-9]+$/, "", n)
		if (n == b) for (i = 3; i < NF; i++) if ($(i + 1) == u) {
			v = $i + 0
			if (!seen || (m == "min" ? v < best : v > best)) best = v
			seen = 1
		} }
		END { if (seen) print best }' "$1"
}

# why FILE: the last meaningful lines of a failed step.
why() { grep -v '^\s*$' "$1" 2>/dev/null | grep -v '^goos\|^goarch\|^pkg:\|^cpu:' | tail -3 | tr '\n' ' ' | cut -c1-300; }

# ---- the report ---------------------------------------------------------------

# row SCENARIO EMBARGO REFERENCE RATIO LOAD NOTES
row() {
	ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |")
	log "$1: $2 vs $3, ratio $4"
}
fail_row() {
	failed=1
	log "NOT RUN: $1: $2"
	ROWS+=("| $1 | **not run**: $2 | | | | |")
}

print_report() {
	local cpu mem fs commit
	reported=1
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
	fs=$(df -T "$T" | awk 'NR == 2 { print $2 }')
	commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null)
	[ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ] && commit="$commit+changes"
	echo
	echo "embargo vs Postfix, $mode run of contrib/bench/run, $started, commit $commit"
	echo
	echo "Machine: ${cpu:-unknown CPU}, $(nproc) CPUs, $mem, Linux $(uname -r), $fs; $(go version | awk '{ print $3 }'), Postfix $(postconf -h -d mail_version 2>/dev/null)."
	echo "Load average (1, 5, 15 min): $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; the load column is the 1-minute figure when the row began."
	echo
	echo "| scenario | embargo | reference (same run) | ratio | load | also measured |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${ROWS[@]}"
	echo
	echo "Ratio = embargo / reference; every figure is a rate (higher is better), so 1.00 means as fast as the reference."
}
