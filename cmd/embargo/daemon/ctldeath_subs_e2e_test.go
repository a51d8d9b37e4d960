package daemon_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// The cases of TestProcessKilledAtCtl that change the announce list's
// subscribers: `embargo subscribers remove` and `import`.

// listState is the announce list in a stopped daemon's store.
type listState struct {
	active  map[string]bool // the active subscribers
	count   int             // the active subscribers as the store counts them (announce.Count)
	left    int             // records of an address that left (the store keeps one per address)
	rowsTo  map[string]int  // queue rows per single recipient
	leftHow map[string]string
}

// readList reads the list from the store in dir (the daemon stopped): the
// active subscribers, the store's count of them, which must match, the
// records of leaving and how each of addrs left, and the queue rows by
// recipient.
func readList(t *testing.T, dir string, addrs ...string) listState {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store: %v", err)
	}
	defer db.Close()
	s := listState{active: map[string]bool{}, rowsTo: map[string]int{}, leftHow: map[string]string{}}
	err = db.View(func(tx *bolt.Tx) error {
		err := announce.ForEach(tx, func(sub announce.Subscriber) error {
			if sub.State == announce.StateActive {
				s.active[sub.Address] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		if s.count, err = announce.Count(tx); err != nil {
			return err
		}
		if b := tx.Bucket([]byte("announce_left")); b != nil {
			s.left = b.Stats().KeyN
		}
		for _, a := range addrs {
			if _, how, ok, err := announce.Left(tx, a); err != nil {
				return err
			} else if ok {
				s.leftHow[a] = how
			}
		}
		rows, err := queue.List(tx)
		for _, r := range rows {
			if len(r.To) == 1 {
				s.rowsTo[r.To[0]]++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.count != len(s.active) {
		t.Errorf("the store counts %d active subscribers and holds %d", s.count, len(s.active))
	}
	return s
}

// killedAtRemove is TestProcessKilledAtCtl's case of `embargo subscribers
// remove`: before the write the reader is still subscribed, after it gone
// with one record of leaving; the second remove answers OK either way,
// saying when the first took effect if it did; nothing is sent to anyone.
func killedAtRemove(t *testing.T, step string) {
	const reader, other = "reader@out.test", "other@out.test"
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	subscribe(t, h, reader, other)
	h.Stop()
	c := &ctlDeath{h: h, cmd: "subscribers-remove", step: step, run: func() (string, error) {
		return daemon.Subscribers(h.Config(), daemon.CtlSubscribersRemove, []string{reader}, nil)
	}}
	c.kill(t)
	wrote := step == "done"
	if s := readList(t, h.Dir, reader); s.active[reader] == wrote || !s.active[other] || (s.left == 1) != wrote || (s.leftHow[reader] == announce.LeftOperator) != wrote {
		t.Errorf("after the death: %+v; want %s removed: %v", s, reader, wrote)
	}
	msgs, out, err := c.again(t, func([]queuetest.Message) bool { return true })
	want := "removed from announce@ex.test"
	if wrote {
		want = "is not on announce@ex.test: it left on " // an instant, "2026-12-03 16:04 UTC (Thursday)"
	}
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("the remove run again: %q, %v; want %q", out, err, want)
	}
	if wrote && !regexp.MustCompile(`it left on \d{4}-\d\d-\d\d \d\d:\d\d UTC \(\w+day\) \(removed by an operator\); nothing to do`).MatchString(out) {
		t.Errorf("the remove run again: %q; want when and how it left", out)
	}
	if len(msgs) != 0 {
		t.Errorf("a remove sent mail:\n%s", daemontest.Summary(msgs))
	}
	s := readList(t, h.Dir, reader)
	if s.active[reader] || !s.active[other] || s.count != 1 || s.left != 1 || s.leftHow[reader] != announce.LeftOperator {
		t.Errorf("at the end: %+v; want %s gone, one record of its leaving, %s active", s, reader, other)
	}
}

// killedAtImport is TestProcessKilledAtCtl's case of `embargo subscribers
// import`: a listing of an address subscribed before and new ones, in one
// transaction (3 new) or two ("chunk": ImportChunk entries, then one more).
// After the death the new addresses are subscribed in whole transactions,
// each with its notice queued or sent, or not at all; the import run again
// adds the rest, and each new address ends with exactly one notice, the
// old one with none.
func killedAtImport(t *testing.T, step string) {
	const old = "old@out.test"
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	subscribe(t, h, old)
	h.Stop()
	n := 3
	if step == "chunk" {
		n = daemon.ImportChunk // with old: one entry past the first transaction
	}
	addrs := make([]string, n)
	listing := old + "\n"
	for i := range addrs {
		addrs[i] = fmt.Sprintf("reader%03d@out.test", i)
		listing += addrs[i] + "\n"
	}
	c := &ctlDeath{h: h, cmd: "subscribers-import", step: step, run: func() (string, error) {
		return daemon.Subscribers(h.Config(), daemon.CtlSubscribersImport, []string{"members.txt"}, []byte(listing))
	}}
	c.kill(t)
	// Entry i+1 of the listing (old is entry 0): applied by the death?
	applied := func(i int) bool { return step == "done" || step == "chunk" && i+1 < daemon.ImportChunk }
	s := readList(t, h.Dir)
	sent := c.h.Rec.Messages()[c.relayed:]
	missing := 0
	for i, a := range addrs {
		notices := s.rowsTo[a] + len(daemontest.To(sent, a))
		if s.active[a] != applied(i) || (notices > 0) != applied(i) {
			t.Errorf("after the death: %s subscribed %v with %d notices queued or sent; want %v with its notice", a, s.active[a], notices, applied(i))
		}
		if !applied(i) {
			missing++
		}
	}
	msgs, out, err := c.again(t, func(msgs []queuetest.Message) bool {
		for _, a := range addrs {
			if len(daemontest.To(msgs, a)) == 0 {
				return false
			}
		}
		return true
	})
	if want := fmt.Sprintf("%d subscribed to announce@ex.test", missing); err != nil || !strings.Contains(out, want) ||
		!strings.Contains(out, fmt.Sprintf("%d already subscribed: nothing sent", n+1-missing)) {
		t.Errorf("the import run again: %q, %v; want %q and the rest already subscribed", out, err, want)
	}
	for _, a := range addrs {
		if got := distinctTo(t, msgs, a); got != 1 {
			t.Errorf("%s got %d distinct notices after the death, want 1", a, got)
		}
	}
	if got := distinctTo(t, msgs, old); got != 0 {
		t.Errorf("%s, subscribed before, got %d notices", old, got)
	}
	if s := readList(t, h.Dir); s.count != n+1 || s.left != 0 {
		t.Errorf("at the end: %d subscribers, %d records of leaving; want %d, none", s.count, s.left, n+1)
	}
}
