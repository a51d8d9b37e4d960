package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"os"
	"os/exec"
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
	canary   string            // embargoed text in every body (docs/threat-model.md G1), or none
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
// TestCrashLoopCommands (crashcmd_test.go) runs the same loop with signed
// commands and a scheduled release, for I3, I5 and I6.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop skipped in -short mode")
	}
	iterations := crashIterations("EMBARGO_CRASH_ITERATIONS", 15)
	rec := queuetest.NewRecorder(t)
	// The recording relay's rules with this configuration (docs/threat-model.md §2.2).
	rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test"}, Encrypted: []string{"distributors+bounces-"}})
	d := newCrashDaemon(t, rec, "", "[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n")
	load := &crashLoad{sent: map[string]string{}, accepted: map[string]string{}}
	d.killLoop(t, iterations, func(stop chan struct{}, wg *sync.WaitGroup) {
		for range 8 {
			wg.Go(func() { sendReports(d.addr, load, stop) })
		}
	}, nil)
	d.drain(t, nil)

	db := d.store(t, iterations)
	var storedIDs map[string]string
	queued := 0
	db.View(func(tx *bolt.Tx) error {
		storedIDs, queued = crashOutcome(tx, load)
		return nil
	})
	db.Close()
	tallyCrashLoop(t, iterations, load, storedIDs, rec.Messages(), d.lives, queued)
}

// crashOutcome reads what a crash loop left: the reports sent that are
// stored (Message-ID → sender) and the rows still queued.
func crashOutcome(tx *bolt.Tx, l *crashLoad) (stored map[string]string, queued int) {
	stored = map[string]string{}
	for mid, from := range l.sent {
		if _, ok := incidentdb.IncidentOf(tx, mid); ok {
			stored[mid] = from
		}
	}
	rows, _ := queue.List(tx)
	return stored, len(rows)
}

// crashIterations is the number of kills: the environment variable name, or
// def.
func crashIterations(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		fmt.Sscan(s, &def)
	}
	return def
}

// crashDaemon is the child daemon of a crash loop: its directory,
// configuration and SMTP address, and the recording relay it sends to.
type crashDaemon struct {
	dir, cfg, addr string
	rec            *queuetest.Recorder
	lives          []int // the relay's message count when each run of the daemon started
}

// newCrashDaemon writes a crash loop's configuration: no intake limits, a
// quorum of one, top (top-level keys, such as keys_dir) and members.
func newCrashDaemon(t *testing.T, rec *queuetest.Recorder, top, members string) *crashDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &crashDaemon{dir: dir, cfg: filepath.Join(dir, "embargo.toml"), addr: daemontest.FreePort(t), rec: rec}
	daemontest.WriteFile(t, d.cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n%s[intake]\nacks_per_sender_per_day = 1000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n[governance]\nquorum = 1\n%s[smtp]\nlisten = %q\nmax_connections_per_ip = 50\n[relay]\nurl = \"smtp://%s\"\n",
		filepath.Join(dir, "data"), top, members, d.addr, rec.Addr()))
	return d
}

// start starts a run of the daemon and waits until it listens.
func (d *crashDaemon) start(t *testing.T) *exec.Cmd {
	t.Helper()
	d.lives = append(d.lives, len(d.rec.Messages()))
	cmd, out := embargoProcess(t, d.dir, "serve", "--config", d.cfg)
	waitPort(t, d.addr, out)
	return cmd
}

// killLoop runs the daemon kills times: work starts one run's clients,
// which send until stop is closed; the run is killed by its pid at a random
// instant within 1.5 s; afterKill, when set, looks at what the killed run
// left (the store is free then).
func (d *crashDaemon) killLoop(t *testing.T, kills int, work func(stop chan struct{}, wg *sync.WaitGroup), afterKill func(run int)) {
	t.Helper()
	for run := range kills {
		cmd := d.start(t)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		work(stop, &wg)
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
		if afterKill != nil {
			afterKill(run)
		}
	}
}

// drain is the last, clean run: during, when set, runs once the daemon
// listens; then it waits while the queue makes progress, and stops the
// daemon with SIGTERM.
func (d *crashDaemon) drain(t *testing.T, during func()) {
	t.Helper()
	cmd := d.start(t)
	if during != nil {
		during()
	}
	// It may hold thousands of rows: wait while it makes progress.
	progress, delivered := time.Now(), 0
	for !queueEmpty(t, d.cfg) && time.Since(progress) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		if n := len(d.rec.Messages()); n > delivered {
			progress, delivered = time.Now(), n
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// store opens the stopped daemon's store with the checks of every opener,
// tx.Check (I2).
func (d *crashDaemon) store(t *testing.T, kills int) *bolt.DB {
	t.Helper()
	db, err := daemon.OpenStore(filepath.Join(d.dir, "data"), true)
	if err != nil {
		t.Fatalf("I2: store after %d kills: %v", kills, err)
	}
	return db
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

// sendReports sends reports with unique senders and Message-IDs until stop;
// l.canary, when set, goes into each body with the report's number after it.
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
		body := fmt.Sprintf("body %d", n)
		if l.canary != "" {
			body += fmt.Sprintf(" %s%dx", l.canary, n)
		}
		msg := fmt.Sprintf("From: %s\r\nSubject: report %d\r\nMessage-ID: <%s>\r\n\r\n%s\r\n", from, n, mid, body)
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

	dups, maxPerKill, maxCopies, perKill := checkResends(t, msgs, lives)
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

// checkResends checks I4 over what the relay got: a copy is sent again only
// because the run that sent it before was killed before it recorded the
// delivery, at most once more per kill, and one kill makes the queue send
// at most deliveriesAtOnce copies again. lives are the relay's message
// counts when each run started. It returns the copies sent again, the most
// after one kill, the most copies of one message, and the resends per kill.
func checkResends(t *testing.T, msgs []queuetest.Message, lives []int) (dups, maxPerKill, maxCopies int, perKill []int) {
	t.Helper()
	// Duplicates: each copy after a row's first. A row is sent again only
	// because the run that sent its previous copy was killed before it
	// recorded the delivery: that kill is the cause.
	runOf := func(i int) int { return sort.SearchInts(lives, i+1) - 1 }
	last := map[string]int{} // row → run of its latest copy
	perKill = make([]int, len(lives))
	maxCopies = 1
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
	for run, d := range perKill {
		maxPerKill = max(maxPerKill, d)
		if d > deliveriesAtOnce {
			t.Errorf("kill %d made the queue send %d messages again, more than the %d deliveries in flight", run+1, d, deliveriesAtOnce)
		}
	}
	return dups, maxPerKill, maxCopies, perKill
}
