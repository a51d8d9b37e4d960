# shellcheck shell=bash
# The scenarios of contrib/bench/run. Each adds its rows with row, or says
# with fail_row why it could not run. Sourced after lib.sh.

# s1_release N: one release to N one-click subscribers, delivered to smtp-sink
# over the fan-out's own connections (BENCH_RELEASE_CONNECTIONS, default 8,
# each carrying many pipelined transactions), against smtp-source sending as
# many messages of the same size to smtp-sink over as many connections, each
# reused for message after message (-d -s CONNECTIONS). BENCH_RELEASE_DKIM=rsa
# or ed25519 signs every copy as production does with [dkim].
s1_release() {
	local n=$1 name out s0 m0 s1 m1 conns sessions msgs rate first rss rssfile size la t0 ref dkim=${BENCH_RELEASE_DKIM:-}
	name="1. Release to $(human "$n") subscribers, one-click copy each${dkim:+, DKIM $dkim per copy}"
	out=$T/release-$n.txt
	log "$name (setup first: $n subscriptions)"
	read -r s0 m0 < <(sink_counts)
	la=$(load1)
	if ! gobench "$out" BenchmarkReleaseOneClick '^BenchmarkReleaseOneClick$' \
		EMBARGO_BENCH_SINK="127.0.0.1:$P_SINK" EMBARGO_BENCH_SUBSCRIBERS="$n" \
		EMBARGO_BENCH_CONNECTIONS="${BENCH_RELEASE_CONNECTIONS:-8}" EMBARGO_BENCH_DKIM="$dkim"; then
		fail_row "$name" "BenchmarkReleaseOneClick failed: $(why "$out")"
		return
	fi
	sleep 1 # smtp-sink counts a session when it ends
	read -r s1 m1 < <(sink_counts)
	sessions=$((s1 - s0)) msgs=$((m1 - m0))
	if [ "$msgs" -ne "$n" ]; then
		fail_row "$name" "smtp-sink received $msgs copies, want $n"
		return
	fi
	rate=$(metric "$out" BenchmarkReleaseOneClick msgs/s)
	first=$(metric "$out" BenchmarkReleaseOneClick first-copy-ms)
	rss=$(metric "$out" BenchmarkReleaseOneClick rss-MB)
	rssfile=$(metric "$out" BenchmarkReleaseOneClick rss-file-MB)
	size=$(metric "$out" BenchmarkReleaseOneClick bytes/copy)
	conns=$(metric "$out" BenchmarkReleaseOneClick connections)
	conns=${conns%.*}
	t0=$(now)
	if ! smtp-source -d -s "$conns" -m "$n" -l "${size%.*}" -f announce+bounces@example.org -t subscriber@example.net \
		"127.0.0.1:$P_SINK" >"$T/src-release.out" 2>&1; then
		fail_row "$name" "reference smtp-source failed: $(why "$T/src-release.out")"
		return
	fi
	ref=$(div "$n" "$(elapsed "$t0")")
	row "$name" "$(num "$rate") msgs/s" "$(num "$ref") msgs/s" "$(ratio "$rate" "$ref")" "$la" \
		"first copy $(num "$first") ms after T; RSS +$(num "$rss") MB over idle ($(num "$rssfile") MB of it the store's pages, mapped); the release took $(num "$(div "$n" "$rate")") s from T; $conns connections ($sessions SMTP sessions seen by smtp-sink) for $n copies of $(num "$size") B, pipelined, a commit per 100 copies per connection. Reference: smtp-source → smtp-sink, $conns sessions each reusing its connection (-d -s $conns), -l $(num "$size")"
}

# smtp_source_rate PORT N OUT: smtp-source -d -s 8 -m N -l 1024 to a list
# address; prints msgs/s, fails if any reply was not positive.
smtp_source_rate() {
	local t0
	t0=$(now)
	smtp-source -d -s 8 -m "$2" -l 1024 -f reporter@example.net -t security@example.org "127.0.0.1:$1" >"$3" 2>&1 || return 1
	div "$2" "$(elapsed "$t0")"
}

s2_intake() {
	local name emb pf sink la la_pf out gi gr
	name="2. Intake: reports/s, smtp-source -d -s 8 -l 1024, $intake_n messages"
	log "$name"
	local err=""
	emb=""
	if start_embargo intake 1000000 "smtp://127.0.0.1:$P_SINK" off; then
		la=$(load1)
		emb=$(smtp_source_rate "$P_EMB" "$intake_n" "$T/src-intake-embargo.out") ||
			err="smtp-source to embargo: $(why "$T/src-intake-embargo.out")"
		stop "$EMB_PID"
	else
		err=$ERR
	fi
	if [ -z "$emb" ]; then
		fail_row "$name" "$err"
	elif [ -n "$pf_error" ]; then
		fail_row "2a. Intake vs Postfix" "$pf_error"
	else
		la_pf=$(load1)
		if pf=$(smtp_source_rate "$P_PF" "$intake_n" "$T/src-intake-postfix.out"); then
			row "2a. Intake vs Postfix durable accept, $intake_n reports" "$(num "$emb") reports/s" "$(num "$pf") msgs/s" \
				"$(ratio "$emb" "$pf")" "$la" "embargo serve: 250 after a synced bbolt commit holding the report (archive, incident, an acknowledgement and 2 SRC copies queued, each sealed at delivery; concurrent reports share a commit), intake limits off, relay smtp-sink. Postfix: queue file synced, then default_transport = discard (load $la_pf)"
		else
			fail_row "2a. Intake vs Postfix" "smtp-source to Postfix: $(why "$T/src-intake-postfix.out")"
		fi
	fi
	if [ -n "$emb" ]; then
		if sink=$(smtp_source_rate "$P_SINK" "$intake_n" "$T/src-intake-sink.out"); then
			row "2b. Intake vs smtp-sink, $intake_n reports" "$(num "$emb") reports/s" "$(num "$sink") msgs/s" \
				"$(ratio "$emb" "$sink")" "$la" "smtp-sink: the physical limit of the client and loopback (nothing stored)"
		else
			fail_row "2b. Intake vs smtp-sink" "smtp-source to smtp-sink: $(why "$T/src-intake-sink.out")"
		fi
	fi

	[ -z "$pf_error" ] && s2_intake_alone

	# The Go pair, found by name in whichever package under cmd/embargo
	# holds it now.
	name="2c. Go BenchmarkIntake vs BenchmarkReferenceGoSMTP, $go_intake_n reports"
	out=$T/go-intake.txt
	la=$(load1)
	if (cd "$root" && TMPDIR="$T/tmp" go test -run '^$' -bench 'BenchmarkIntake$|BenchmarkReferenceGoSMTP$' \
		-benchtime "${go_intake_n}x" ./cmd/embargo/...) >"$out" 2>&1; then
		gi=$(metric "$out" BenchmarkIntake msgs/s)
		gr=$(metric "$out" BenchmarkReferenceGoSMTP msgs/s)
	fi
	if [ -n "${gi:-}" ] && [ -n "${gr:-}" ]; then
		row "$name" "$(num "$gi") reports/s" "$(num "$gr") msgs/s" "$(ratio "$gi" "$gr")" "$la" \
			"in process, 10 clients; reference: bare go-smtp server discarding every message"
	else
		fail_row "$name" "go test -bench failed or found neither: $(why "$out")"
	fi
}


# s2_intake_alone: the same load while embargo's relay accepts connections
# but never greets (contrib/bench/load stall), so every queued copy stays
# queued and the accept path is measured alone, as Postfix's durable accept
# delivers to discard. On a shared machine the disk's speed drifts within
# a minute, so this row alternates: Postfix, then embargo (a fresh store),
# three times, and reports the median of each and the median of the three
# pairs' ratios.
s2_intake_alone() {
	local emb la stall r e p ems="" pfs="" rs="" pairs=""
	local name="2d. Intake alone (relay not answering) vs Postfix durable accept, $intake_n reports, 3 pairs"
	spawn "$T/stall.log" "$BIN/load" stall -listen "127.0.0.1:$P_RELAY"
	stall=$spawned
	la=$(load1)
	for r in 1 2 3; do
		if ! p=$(smtp_source_rate "$P_PF" "$intake_n" "$T/src-alone-postfix-$r.out"); then
			fail_row "$name" "smtp-source to Postfix: $(why "$T/src-alone-postfix-$r.out")"
			stop "$stall"
			return
		fi
		if ! start_embargo "intake-alone-$r" 1000000 "smtp://127.0.0.1:$P_RELAY" off; then
			fail_row "$name" "$ERR"
			stop "$stall"
			return
		fi
		e=$(smtp_source_rate "$P_EMB" "$intake_n" "$T/src-intake-alone-$r.out") ||
			fail_row "$name" "smtp-source to embargo: $(why "$T/src-intake-alone-$r.out")"
		stop "$EMB_PID"
		[ -n "$e" ] || { stop "$stall"; return; }
		ems="$ems $e" pfs="$pfs $p" rs="$rs $(div "$e" "$p")"
		pairs="$pairs${pairs:+, }$(num "$e")/$(num "$p") = $(ratio "$e" "$p")"
	done
	stop "$stall"
	emb=$(median $ems)
	row "$name" "$(num "$emb") reports/s" "$(num "$(median $pfs)") msgs/s" "$(num "$(median $rs)")" "$la" \
		"medians of 3 alternating pairs (Postfix, then embargo on a fresh store): $pairs. As 2a, but the relay accepts connections and never greets: the worker waits on its first connections and every copy stays queued, so the figure is the accept path alone (parse, archive, incident, 3 rows, synced group commit, 250)"
}

s3_drain() {
	local name="3. Queue drain of $drain_n queued copies" out=$T/drain.txt m0 m1 la smtp md
	log "$name"
	read -r _ m0 < <(sink_counts)
	la=$(load1)
	if ! gobench "$out" BenchmarkDrain '^BenchmarkDrain$' EMBARGO_BENCH_SINK="127.0.0.1:$P_SINK" EMBARGO_BENCH_ROWS="$drain_n"; then
		fail_row "$name" "BenchmarkDrain failed: $(why "$out")"
		return
	fi
	read -r _ m1 < <(sink_counts)
	smtp=$(metric "$out" 'BenchmarkDrain/relay=smtp' copies/s)
	md=$(metric "$out" 'BenchmarkDrain/relay=maildir' copies/s)
	if [ $((m1 - m0)) -ne "$drain_n" ]; then
		fail_row "$name" "smtp-sink received $((m1 - m0)) copies, want $drain_n"
		return
	fi
	if [ -n "$pf_error" ]; then
		fail_row "3a. Queue drain vs Postfix flush" "$pf_error"
	elif postfix_flush; then
		row "3a. Queue drain of $drain_n copies to smtp-sink vs Postfix flush" "$(num "$smtp") copies/s" "$(num "$PF_RATE") msgs/s" \
			"$(ratio "$smtp" "$PF_RATE")" "$la" "embargo: queue worker defaults (4 at a time over reused connections, up to 64 rows claimed; outcomes and claims in group commits, synced). Postfix: postqueue -f of $drain_n deferred messages to the same sink, as shipped (connection cache, up to 20 per destination; load $PF_LOAD)"
	else
		fail_row "3a. Queue drain vs Postfix flush" "$ERR"
	fi
	# The Maildir's reference: the same files written and made durable the
	# same way (-sync fs: one syncfs per batch, as the relay does on Linux),
	# without a queue, on the same file system ($T/tmp, as the benchmark's);
	# then, for comparison, with each file fsynced (-sync file, the relay's
	# way before syncfs). Both Maildirs are removed only after both ran:
	# ext4 without a journal passes over inodes freed in the last half
	# minute or so when it allocates one, so creating files right after
	# deleting 20,000 is several times slower.
	local ref="" reffile="" note
	la=$(load1)
	if "$BIN/load" maildir -dir "$T/tmp/maildir-ref" -n "$drain_n" -size 1200 -sync fs >"$T/maildir-ref.txt" 2>&1; then
		ref=$(awk -F= '$1 == "files_per_s" { print $2 }' "$T/maildir-ref.txt")
	fi
	if "$BIN/load" maildir -dir "$T/tmp/maildir-ref-file" -n "$drain_n" -size 1200 -sync file >"$T/maildir-ref-file.txt" 2>&1; then
		reffile=$(awk -F= '$1 == "files_per_s" { print $2 }' "$T/maildir-ref-file.txt")
	fi
	rm -rf "$T/tmp/maildir-ref" "$T/tmp/maildir-ref-file"
	local refcol="—" refnote="what this file system gives that durability alone"
	if [ -n "$ref" ]; then
		refcol="$(num "$ref") files/s"
	else
		refnote="it failed: $(why "$T/maildir-ref.txt")"
	fi
	if [ -n "$reffile" ]; then
		note="$(num "$reffile") files/s"
	else
		note="failed: $(why "$T/maildir-ref-file.txt")"
	fi
	row "3b. Queue drain of $drain_n copies to a Maildir" "$(num "$md") copies/s" "$refcol" "$(ratio "$md" "$ref")" "$la" \
		"the same worker; batches of up to 64 files written, made durable by one syncfs (a batch of 1 or 2: each file fsynced), renamed, new/ synced once, then one commit. Reference: contrib/bench/load maildir -sync fs, the same files (1200 B) and syncs without a queue or store, measured right after: $refnote. The same with each file fsynced, 16 at a time (-sync file, the relay before syncfs): $note"
}

# postfix_flush queues drain_n messages in the Postfix instance, held by
# defer_transports = smtp, then times postqueue -f until smtp-sink has them
# all. Sets PF_RATE and PF_LOAD, or ERR.
postfix_flush() {
	local i m0 m1 last t0 stall=0
	log "3a. queueing $drain_n messages in Postfix (held by defer_transports)"
	if ! smtp-source -d -s 8 -m "$drain_n" -l 1024 -f security+bounces@example.org -t member@drain.test \
		"127.0.0.1:$P_PF" >"$T/src-drain.out" 2>&1; then
		ERR="smtp-source to Postfix: $(why "$T/src-drain.out")"
		return 1
	fi
	for ((i = 0; i < 600; i++)); do
		[ "$(pf_queued deferred)" -ge "$drain_n" ] && break
		sleep 1
	done
	if [ "$(pf_queued deferred)" -lt "$drain_n" ]; then
		ERR="only $(pf_queued deferred) of $drain_n messages reached Postfix's deferred queue"
		return 1
	fi
	read -r _ m0 < <(sink_counts)
	last=$m0
	PF_LOAD=$(load1)
	t0=$(now)
	postqueue -c "$PF/etc" -f >"$T/postqueue.out" 2>&1 || {
		ERR="postqueue -f: $(why "$T/postqueue.out")"
		return 1
	}
	# Done when the sink has them all; given up after 60 s without progress.
	while read -r _ m1 < <(sink_counts) && [ $((m1 - m0)) -lt "$drain_n" ]; do
		if [ "$m1" = "$last" ]; then
			stall=$((stall + 1))
			[ $stall -ge 600 ] && break
		else
			stall=0 last=$m1
		fi
		sleep 0.1
	done
	PF_RATE=$(div "$drain_n" "$(elapsed "$t0")")
	if [ $((m1 - m0)) -lt "$drain_n" ]; then
		ERR="smtp-sink received $((m1 - m0)) of Postfix's $drain_n messages, then nothing for 60 s"
		return 1
	fi
}

s4_distributors() {
	local name="4. Distributors: $distributors per-key copies of one notice" out=$T/distributors.txt emb raw ns rns size la
	log "$name"
	la=$(load1)
	# Three runs; each measures both sides copy by copy in alternation, so
	# that they meet the same load: the row is the median run (by its
	# ratio), its figures all from that run. 4b: the best of 5, each side.
	if ! BENCH_COUNT=3 gobench "$out" BenchmarkDistributors1000 '^BenchmarkDistributors1000$' EMBARGO_BENCH_DISTRIBUTORS="$distributors"; then
		fail_row "$name" "BenchmarkDistributors1000 failed: $(why "$out")"
		return
	fi
	local runs bns cns sns
	runs=$(awk '/^BenchmarkDistributors1000/ { for (i = 3; i < NF; i++) if ($(i + 1) == "raw/embargo") printf "%s%.2f", (n++ ? ", " : ""), $i }' "$out")
	# The median run's line, alone, for metric.
	awk '/^BenchmarkDistributors1000/ { for (i = 3; i < NF; i++) if ($(i + 1) == "raw/embargo") print $i "\t" $0 }' "$out" |
		sort -n | awk '{ l[NR] = $0 } END { m = l[int((NR + 1) / 2)]; sub(/^[^\t]*\t/, "", m); print m }' >"$out.median"
	emb=$(metric "$out.median" BenchmarkDistributors1000 copies/s)
	raw=$(metric "$out.median" BenchmarkDistributors1000 raw-copies/s)
	ns=$(metric "$out.median" BenchmarkDistributors1000 ns/copy)
	rns=$(metric "$out.median" BenchmarkDistributors1000 raw-ns/copy)
	size=$(metric "$out.median" BenchmarkDistributors1000 bytes/copy)
	bns=$(metric "$out.median" BenchmarkDistributors1000 build-ns/copy)
	cns=$(metric "$out.median" BenchmarkDistributors1000 commit-ns/copy)
	sns=$(metric "$out.median" BenchmarkDistributors1000 seal-ns/copy)
	row "$name" "$(num "$emb") copies/s" "$(num "$raw") copies/s" "$(ratio "$emb" "$raw")" "$la" \
		"the median of 3 runs (their ratios: $runs), each measuring the two sides copy by copy in alternation; $(num "$(div "$ns" 1000)") µs vs $(num "$(div "$rns" 1000)") µs per copy. embargo: notice rendered and $distributors queue rows (a seal spec each, one shared body) built in $(num "$(div "$bns" 1000)") µs a copy, committed (synced) in $(num "$(div "$cns" 1000)") µs a copy, then every copy sealed as the worker seals it at delivery (PGP/MIME, protected headers, signed, armored, $(num "$size") B) in $(num "$(div "$sns" 1000)") µs. Reference: go-crypto openpgp.Encrypt, signed, per key, binary"

	out=$T/keys.txt
	la=$(load1)
	if ! BENCH_COUNT=5 gobench "$out" BenchmarkEncrypt100 '^BenchmarkEncrypt(Raw)?100$'; then
		fail_row "4b. keys.Encrypt vs go-crypto" "keys benchmarks failed: $(why "$out")"
	else
		ns=$(metric "$out" BenchmarkEncrypt100 ns/copy min)
		rns=$(metric "$out" BenchmarkEncryptRaw100 ns/copy min)
		row "4b. keys.Encrypt, 20 KB notice, 100 keys" "$(num "$(div 1e9 "$ns")") copies/s" "$(num "$(div 1e9 "$rns")") copies/s" \
			"$(ratio "$rns" "$ns")" "$la" "best of 5; keys.Encrypt (PGP/MIME, AES-256, signed) vs go-crypto openpgp.Encrypt to the same keys"
	fi

	# The notice delivered end to end: sealing at delivery on the drain's path.
	out=$T/distributors-drain.txt
	la=$(load1)
	local s0 s1
	read -r _ s0 < <(sink_counts)
	if ! gobench "$out" BenchmarkDistributors1000 '^BenchmarkDistributorsDrain$' EMBARGO_BENCH_SINK="127.0.0.1:$P_SINK" EMBARGO_BENCH_DISTRIBUTORS="$distributors"; then
		fail_row "4c. Distributor notice delivered" "BenchmarkDistributorsDrain failed: $(why "$out")"
		return
	fi
	sleep 1 # smtp-sink counts a message when its session ends
	read -r _ s1 < <(sink_counts)
	row "4c. Distributor notice delivered: $distributors sealed copies to smtp-sink" "$(num "$(metric "$out" BenchmarkDistributorsDrain copies/s)") copies/s" "—" "—" "$la" \
		"queued as /notify queues them, then the worker's defaults, each copy sealed (signed, encrypted) as it is sent; $((s1 - s0)) copies reached smtp-sink"
}

s5_flood() {
	local name="5. Flood: $flood_n reports from $flood_senders senders" out=$T/flood.txt err la idle db0 db1 peak sampler
	log "$name"
	if ! start_embargo flood 1 "smtp://127.0.0.1:$P_RELAY" on "$P_HTTP"; then
		fail_row "$name" "$ERR"
		return
	fi
	sleep 1
	idle=$(rss_kb "$EMB_PID")
	db0=$(stat -c %s "$EMB_DIR/data/embargo.db")
	(while kill -0 "$EMB_PID" 2>/dev/null; do rss_kb "$EMB_PID"; sleep 0.5; done) >"$T/flood-rss" 2>/dev/null &
	sampler=$!
	PIDS+=("$sampler")
	la=$(load1)
	"$BIN/load" flood -addr "127.0.0.1:$P_EMB" -to security@example.org -sink "127.0.0.1:$P_RELAY" -probe-source 127.0.0.2 \
		-n "$flood_n" -senders "$flood_senders" -sessions 8 -size 1024 -ack-timeout "${ack_timeout}s" >"$out" 2>"$out.err"
	local rc=$?
	stop "$sampler"
	peak=$(sort -n "$T/flood-rss" | tail -1)
	db1=$(stat -c %s "$EMB_DIR/data/embargo.db")
	local metrics
	metrics=$(curl -s --max-time 10 "http://127.0.0.1:$P_HTTP/metrics" | awk -F'[{}" ]+' '/^embargo_intake_refused_total\{/ { printf "%s%s %s", sep, $3, $4; sep = ", " }')
	stop "$EMB_PID"
	# The SRC's alerts about the limits: one per limit and hour, a copy per
	# src member (the roster line says how many), as the log records them.
	local alerts src
	alerts=$(grep -c 'msg="outbound delivered".* kind=alert-limit ' "$EMB_DIR.log")
	src=$(grep -o 'msg="roster in force".* src=[0-9]*' "$EMB_DIR.log" | head -1 | sed 's/.*src=//')
	if [ $rc != 0 ] || ! grep -q '^accepted=' "$out"; then
		fail_row "$name" "load flood failed: $(why "$out.err")"
		return
	fi
	local -A f
	local k v refusals ack lat
	while IFS='=' read -r k v; do f[$k]=$v; done <"$out"
	refusals=$(grep '^reply_' "$out" | sed 's/^reply_//; s/_/ /; s/=/: /' | tr '\n' ',' | sed 's/,$//; s/,/, /g')
	lat="250 after $(num "${f[latency_p50_ms]:-}") ms median, $(num "${f[latency_p99_ms]:-}") ms p99, $(num "${f[latency_max_ms]:-}") ms max"
	if [ -n "${f[probe_error]:-}" ]; then
		ack="the real report was refused: ${f[probe_error]}"
	elif [ -n "${f[probe_ack_s]:-}" ]; then
		ack="the real report's 250 came $(num "${f[probe_smtp_ms]:-}") ms after its first try (${f[probe_tries]:-?} tries), its acknowledgement reached the relay $(num "${f[probe_ack_s]}") s later"
	else
		ack="the real report's 250 came $(num "${f[probe_smtp_ms]:-}") ms after its first try (${f[probe_tries]:-?} tries), its acknowledgement had not reached the relay after ${f[probe_ack_timeout_s]:-?} s"
	fi
	row "$name" "$(num "${f[answered_per_s]:-}") reports/s answered" "—" "—" "$la" \
		"accepted ${f[accepted]:-?} of ${f[sent]:-?}, refused 4xx ${f[refused_4xx]:-?}, 5xx ${f[refused_5xx]:-?}${refusals:+ ($refusals)}${metrics:+; /metrics embargo_intake_refused_total: $metrics}, connections broken ${f[broken]:-?}, refused at connect ${f[connect_refused]:-?}; $lat; RSS $(num "$(div "$idle" 1024)") MB idle, peak +$(num "$(div "$((peak - idle))" 1024)") MB; store +$(num "$(div "$((db1 - db0))" 1048576)") MB ($(num "$(div "$((db1 - db0))" "$((${f[accepted]:-0} * 1024))")") KB/report); $ack; ${f[sink_msgs]:-?} mails delivered by then, $alerts of them limit alerts to the SRC (${src:-?} src members, so $(num "$(div "$alerts" "${src:-0}")") alerts)"
}
