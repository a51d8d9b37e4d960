package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// TestCrashLoop is the kill -9 loop of docs/threats.md §2.4: the daemon runs
// as a child process, eight clients send reports, and the child is killed by
// its own pid at a random instant, again and again. Invariants: every
// message that got 250 is in the store (I1); the store passes bbolt's check
// (I2); after the queue drains every accepted report's acknowledgement
// arrived at least once and at most once per kill more (I4).
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop skipped in -short mode")
	}
	iterations := 15
	if s := os.Getenv("EMBARGO_CRASH_ITERATIONS"); s != "" {
		fmt.Sscan(s, &iterations)
	}
	rec := queuetest.NewRecorder(t)
	dir := t.TempDir()
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n[intake]\nacks_per_sender_per_day = 1000\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[smtp]\nlisten = %q\nmax_connections_per_ip = 50\n[relay]\nurl = \"smtp://%s\"\n",
		filepath.Join(dir, "data"), addr, rec.Addr()))

	var mu sync.Mutex
	accepted := map[string]string{} // Message-ID → sender
	var seq int
	next := func() int { mu.Lock(); defer mu.Unlock(); seq++; return seq }

	kills := 0
	for it := 0; it < iterations; it++ {
		cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
		waitPort(t, addr, out)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < 8; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					n := next()
					from := fmt.Sprintf("rep%d@out.test", n)
					mid := fmt.Sprintf("crash%d@out.test", n)
					msg := fmt.Sprintf("From: %s\r\nSubject: report %d\r\nMessage-ID: <%s>\r\n\r\nbody %d\r\n", from, n, mid, n)
					if err := daemontest.SendSMTP(addr, from, []string{"security@ex.test"}, []byte(msg)); err == nil {
						mu.Lock()
						accepted[mid] = from
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		kills++
		close(stop)
		wg.Wait()
	}

	// A last, clean run drains the queue.
	cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
	waitPort(t, addr, out)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if n := len(rec.Messages()); n >= 2*len(accepted) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	db, err := daemon.OpenStore(filepath.Join(dir, "data"), true) // runs tx.Check (I2)
	if err != nil {
		t.Fatalf("store after %d kills: %v", kills, err)
	}
	defer db.Close()
	var queued int
	db.View(func(tx *bolt.Tx) error {
		for mid := range accepted {
			if _, ok := incidentdb.IncidentOf(tx, mid); !ok {
				t.Errorf("I1: message <%s> got 250 but is not in the store", mid)
			}
		}
		rows, _ := queue.List(tx)
		queued = len(rows)
		return nil
	})
	acks := map[string]int{}
	for _, m := range rec.Messages() {
		if strings.HasPrefix(m.To[0], "rep") {
			acks[m.To[0]]++
		}
	}
	for _, from := range accepted {
		if acks[from] < 1 {
			t.Errorf("I4: %s's acknowledgement never arrived", from)
		}
		if acks[from] > 1+kills {
			t.Errorf("I4: %s got %d acknowledgements", from, acks[from])
		}
	}
	dups := 0
	for _, n := range acks {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("%d kills, %d reports accepted, %d relay messages, %d duplicate acknowledgements, %d rows still queued",
		kills, len(accepted), len(rec.Messages()), dups, queued)
	if len(accepted) == 0 {
		t.Fatal("no report was accepted: the loop proves nothing")
	}
}
