#!/usr/bin/env bash
# Large reports through the real daemon: N reports of about 9.5 MB each (a 7 MB
# binary attachment, base64), sent at once from N SMTP clients to a committee
# of 6 members with OpenPGP keys, the queue drained to Postfix's smtp-sink.
# Prints the store file before and after, its growth per report, the time to
# accept them all and to drain the queue, and the daemon's peak RSS (VmHWM:
# Go heap plus the touched pages of the store's mmap).
# Usage: contrib/bench/large.sh [N reports, default 8] [attachment bytes, default 7000000]
# Needs gpg, swaks and smtp-sink (postfix).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-8}
att=${2:-7000000}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/embargo" ./cmd/embargo
export GNUPGHOME="$tmp/gnupg"
mkdir -m 0700 "$GNUPGHOME" "$tmp/keys" "$tmp/data"
members=""
for i in 1 2 3 4 5 6; do
	gpg --batch --quiet --passphrase '' --quick-gen-key "m$i <m$i@ex.test>" ed25519 sign never 2>/dev/null
	fpr=$(gpg --list-keys --with-colons "m$i@ex.test" 2>/dev/null | awk -F: '/^fpr/ { print $10; exit }')
	gpg --batch --quiet --passphrase '' --quick-add-key "$fpr" cv25519 encr never 2>/dev/null
	gpg --armor --export "$fpr" >"$tmp/keys/m$i.asc"
	members+=$'[[members]]\n'"email = \"m$i@ex.test\""$'\nroles = ["src"]\n'"fingerprint = \"$fpr\""$'\n'
done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(port)
sink=$(port)
smtp-sink -u nobody "127.0.0.1:$sink" 256 &
pids+=($!)
cat >"$tmp/embargo.toml" <<EOF
data_dir = "$tmp/data"
keys_dir = "$tmp/keys"
domain = "ex.test"
$members
[smtp]
listen = "127.0.0.1:$smtp"
max_connections_per_ip = 50
[relay]
url = "smtp://127.0.0.1:$sink"
[intake]
acks_per_sender_per_day = 1000
acks_per_day = 0
EOF
"$tmp/embargo" serve --config "$tmp/embargo.toml" 2>"$tmp/serve.log" &
daemon=$!
pids+=($daemon)
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$smtp") 2>/dev/null && break
	sleep 0.1
done
db="$tmp/data/embargo.db"
before=$(stat -c %s "$db")

{
	printf 'Subject: large report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n'
	printf -- '--b1\nContent-Type: text/plain; charset=utf-8\n\nThe crash dump is attached.\n'
	printf -- '--b1\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename="core.bin"\nContent-Transfer-Encoding: base64\n\n'
	head -c "$att" /dev/urandom | base64 -w 76
	printf -- '--b1--\n'
} >"$tmp/body.eml"
size=$(stat -c %s "$tmp/body.eml")

t0=$(date +%s.%N)
for i in $(seq "$n"); do
	swaks --silent 2 --timeout 600 --server "127.0.0.1:$smtp" --from "rep$i@out.test" --to security@ex.test \
		--header "From: rep$i@out.test" --data "@$tmp/body.eml" >"$tmp/swaks$i.log" 2>&1 &
done
wait_ok=0
for j in $(jobs -p); do
	case " ${pids[*]} " in *" $j "*) continue ;; esac
	wait "$j" || wait_ok=1
done
t1=$(date +%s.%N)
[ "$wait_ok" = 0 ] || { echo "a report was refused:" >&2; tail -n 5 "$tmp"/swaks*.log "$tmp/serve.log" >&2; exit 1; }
for _ in $(seq 1200); do
	"$tmp/embargo" queue list --config "$tmp/embargo.toml" | grep -q 'The queue is empty' && break
	sleep 0.5
done
t2=$(date +%s.%N)
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$daemon/status")
after=$(stat -c %s "$db")
awk -v n="$n" -v size="$size" -v b="$before" -v a="$after" -v hwm="$hwm" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
	printf "reports: %d of %.1f MB (raw message %.1f MB on the wire)\n", n, size/1e6, size/1e6
	printf "store: %.1f MB before, %.1f MB after, growth %.1f MB = %.2f x the reports\n", b/1e6, a/1e6, (a-b)/1e6, (a-b)/(n*size)
	printf "peak RSS (VmHWM): %.0f MB\n", hwm/1024
	printf "accepted all in %.1f s; queue drained %.1f s later\n", t1-t0, t2-t1
}'
grep -c "outbound delivered" "$tmp/serve.log" | sed "s/^/deliveries logged: /"
grep -o "smtpd: message accepted.*took=[0-9.]*s" "$tmp/serve.log" | sed "s/.*took=//" | sort -n | tail -1 | sed "s/^/slowest DATA to 250: /"
