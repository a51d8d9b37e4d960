package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// deliveriesAtOnce is the most rows the queue worker holds in state
// "sending" with `embargo serve`'s defaults (queue.DefaultMaxClaimed):
// claimed, with the relay, or delivered and waiting for the group commit
// that records them. It is the most messages one kill can make the queue
// send again.
const deliveriesAtOnce = queue.DefaultMaxClaimed

// crashLoad is what the senders of the crash loop did.
type crashLoad struct {
	mu       sync.Mutex
	seq      int
	sent     map[string]string // Message-ID → sender, every report tried
	accepted map[string]string // those answered 250
}

func (l *crashLoad) next() int { l.mu.Lock(); defer l.mu.Unlock(); l.seq++; return l.seq }

// TestCrashLoop is the kill -9 loop of docs/threat-model.md §2.4: the daemon
// runs as a child process, eight clients send reports, and the child is
// killed by its own pid at a random instant, again and again; a last clean
// run drains the queue. Invariants: every report answered 250 is in the store
// (I1: stored ⊇ accepted); the store passes bbolt's check (I2); every stored
// report's acknowledgement and committee copy arrived (nothing lost); each
// copy arrived at most once more per kill (I4), and the copies sent again
// after one kill are at most the deliveries in flight (deliveriesAtOnce).
// EMBARGO_CRASH_ITERATIONS sets the number of kills (default 15).
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop skipped in -short mode")
	}
	iterations := 15
	if s := os.Getenv("EMBARGO_CRASH_ITERATIONS"); s != "" {
		fmt.Sscan(s, &iterations)
	}
	rec := queuetest.NewRecorder(t)
	// The recording relay's rules with this configuration (docs/threat-model.md §2.2).
	rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test"}, Encrypted: []string{"distributors+bounces-"}})
	dir := t.TempDir()
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n[intake]\nacks_per_sender_per_day = 1000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n[governance]\nquorum = 1\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[smtp]\nlisten = %q\nmax_connections_per_ip = 50\n[relay]\nurl = \"smtp://%s\"\n",
		filepath.Join(dir, "data"), addr, rec.Addr()))

	load := &crashLoad{sent: map[string]string{}, accepted: map[string]string{}}
	var lives []int // the relay's message count when each run of the daemon started
	for range iterations {
		lives = append(lives, len(rec.Messages()))
		cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
		waitPort(t, addr, out)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { sendReports(addr, load, stop) })
		}
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
	}

	// A last, clean run drains the queue.
	lives = append(lives, len(rec.Messages()))
	cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
	waitPort(t, addr, out)
	// It may hold thousands of rows: wait while it makes progress.
	queued, progress, delivered := -1, time.Now(), 0
	for !queueEmpty(t, cfg) && time.Since(progress) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		if n := len(rec.Messages()); n > delivered {
			progress, delivered = time.Now(), n
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	db, err := daemon.OpenStore(filepath.Join(dir, "data"), true) // the checks of every opener, tx.Check (I2)
	if err != nil {
		t.Fatalf("store after %d kills: %v", iterations, err)
	}
	storedIDs := map[string]string{}
	db.View(func(tx *bolt.Tx) error {
		for mid, from := range load.sent {
			if _, ok := incidentdb.IncidentOf(tx, mid); ok {
				storedIDs[mid] = from
			}
		}
		rows, _ := queue.List(tx)
		queued = len(rows)
		return nil
	})
	db.Close()
	tallyCrashLoop(t, iterations, load, storedIDs, rec.Messages(), lives, queued)
}

// queueEmpty asks the running daemon (embargo status --json) whether its
// queue is empty.
func queueEmpty(t *testing.T, cfg string) bool {
	code, out, _ := runCLI(t, "status", "--json", "--config", cfg)
	var st struct{ Queue queue.Counts }
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		return false
	}
	return st.Queue.Queued+st.Queue.Sending == 0
}

// sendReports sends reports with unique senders and Message-IDs until stop.
func sendReports(addr string, l *crashLoad, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := l.next()
		from := fmt.Sprintf("rep%d@out.test", n)
		mid := fmt.Sprintf("crash%d@out.test", n)
		msg := fmt.Sprintf("From: %s\r\nSubject: report %d\r\nMessage-ID: <%s>\r\n\r\nbody %d\r\n", from, n, mid, n)
		l.mu.Lock()
		l.sent[mid] = from
		l.mu.Unlock()
		if err := daemontest.SendSMTP(addr, from, []string{"security@ex.test"}, []byte(msg)); err == nil {
			l.mu.Lock()
			l.accepted[mid] = from
			l.mu.Unlock()
		}
	}
}

// copyKey names one outbound row: its recipient and its Message-ID, which is
// stable across resends.
func copyKey(m queuetest.Message) string {
	id := ""
	if msg, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
		id = msg.Header.Get("Message-ID")
	}
	return strings.Join(m.To, ",") + " " + id
}

func distinctCopies(msgs []queuetest.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		n[copyKey(m)]++
	}
	return n
}

// tallyCrashLoop counts, logs and checks the crash loop's outcome.
func tallyCrashLoop(t *testing.T, kills int, l *crashLoad, stored map[string]string, msgs []queuetest.Message, lives []int, queued int) {
	t.Helper()
	lost := 0
	for mid := range l.accepted {
		if _, ok := stored[mid]; !ok {
			lost++
			t.Errorf("I1: report <%s> got 250 but is not in the store", mid)
		}
	}
	acks := map[string]int{} // reporter → distinct acknowledgements
	copies := distinctCopies(msgs)
	for key := range copies {
		if strings.HasPrefix(key, "rep") {
			acks[strings.Fields(key)[0]]++
		}
	}
	acknowledged := 0
	for mid, from := range stored {
		if acks[from] == 0 {
			lost++
			t.Errorf("report <%s> is stored, but %s's acknowledgement never arrived", mid, from)
		} else {
			acknowledged++
		}
	}
	// An acknowledgement and alice's copy per stored report: fewer is a loss,
	// more a report processed twice (new Message-IDs, not a resend).
	if want := 2 * len(stored); len(copies) != want {
		lost += max(0, want-len(copies))
		t.Errorf("%d distinct messages reached the relay, want %d for %d stored reports", len(copies), want, len(stored))
		logMessageKinds(t, msgs)
	}

	// Duplicates: each copy after a row's first. A row is sent again only
	// because the run that sent its previous copy was killed before it
	// recorded the delivery: that kill is the cause.
	runOf := func(i int) int { return sort.SearchInts(lives, i+1) - 1 }
	last := map[string]int{} // row → run of its latest copy
	perKill := make([]int, len(lives))
	dups, maxCopies := 0, 1
	n := map[string]int{}
	for i, m := range msgs {
		k := copyKey(m)
		n[k]++
		maxCopies = max(maxCopies, n[k])
		if prev, ok := last[k]; ok {
			dups++
			perKill[prev]++
			if runOf(i) <= prev {
				t.Errorf("I4: %s was sent twice by run %d of the daemon", k, prev)
			}
		}
		last[k] = runOf(i)
	}
	maxPerKill := 0
	for run, d := range perKill {
		maxPerKill = max(maxPerKill, d)
		if d > deliveriesAtOnce {
			t.Errorf("kill %d made the queue send %d messages again, more than the %d deliveries in flight", run+1, d, deliveriesAtOnce)
		}
	}
	t.Logf("%d kills: %d reports sent, %d accepted (250), %d stored, %d acknowledged, %d duplicated (copies sent again; at most %d after one kill, at most %d copies of one message), %d lost; %d relay messages, %d rows still queued",
		kills, len(l.sent), len(l.accepted), len(stored), acknowledged, dups, maxPerKill, maxCopies, lost, len(msgs), queued)
	t.Logf("messages sent again because of each kill: %v", perKill[:kills])
	if lost != 0 {
		t.Errorf("%d lost", lost)
	}
	if queued != 0 {
		t.Errorf("%d rows still queued after the drain", queued)
	}
	if len(l.accepted) == 0 {
		t.Fatal("no report was accepted: the loop proves nothing")
	}
}

// logMessageKinds logs how many distinct messages of each kind reached the
// relay (the recipient's domain and the subject up to its first digit), so
// that a failed count says what was extra or missing.
func logMessageKinds(t *testing.T, msgs []queuetest.Message) {
	t.Helper()
	kinds := map[string]int{}
	seen := map[string]bool{}
	for _, m := range msgs {
		k := copyKey(m)
		if seen[k] {
			continue
		}
		seen[k] = true
		subj := "(unreadable)"
		if msg, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
			subj = msg.Header.Get("Subject")
		}
		if i := strings.IndexAny(subj, "0123456789"); i >= 0 {
			subj = subj[:i]
		}
		to := strings.Join(m.To, ",")
		if i := strings.LastIndexByte(to, '@'); i >= 0 {
			to = to[i:]
		}
		kinds[to+" "+subj]++
	}
	for k, n := range kinds {
		t.Logf("distinct messages to %s: %d", k, n)
	}
}
