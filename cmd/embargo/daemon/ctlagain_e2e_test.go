package daemon_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// TestCtlRunAgain: the control socket's answers to a write run again
// after the first took effect, as an operator runs it whose first answer
// was lost (TestProcessKilledAtCtl kills the daemon there). A retry or a
// drop of a row that left the queue is refused, saying it may have been
// delivered or dropped and how to see what is left; a drop of a row
// while it is being sent says the copy may still reach the relay, and it
// does; a remove of an address that left is answered OK, saying when and
// how, and one of an address never on the list is refused.
// (`release resume` run again: TestHeldReleaseResumed.)
func TestCtlRunAgain(t *testing.T) {
	const bob, reader = "bob@ex.test", "reader@out.test"
	var hold atomic.Bool
	release := make(chan struct{})
	o := daemon.WithSend(daemon.Options{}, func(to []string, _ []byte) {
		if hold.Load() && slices.Contains(to, bob) {
			<-release
		}
	})
	h := daemontest.New(t, daemontest.Config{}, o)
	t.Cleanup(func() {
		if hold.Swap(false) {
			close(release)
		}
	})
	if !daemon.Running(h.Dir) {
		t.Fatal("no daemon on the control socket")
	}
	// bobRow is bob's report copy in state, 0 if none; busy says whether
	// any row to him is queued or being sent.
	bobRow := func(state queue.State) (id uint64, busy bool) {
		h.D.View(func(tx *bolt.Tx) error {
			rows, _ := queue.List(tx)
			for _, r := range rows {
				if !slices.Equal(r.To, []string{bob}) {
					continue
				}
				busy = busy || r.State != queue.StateFailed
				if r.State == state && r.Kind == "report-copy" {
					id = r.ID
				}
			}
			return nil
		})
		return id, busy
	}
	bobGot := func() int { return len(daemontest.To(h.Rec.Messages(), bob)) }

	// A failed row retried and delivered; retried and dropped again.
	h.Rec.FailRcpt(bob, 550)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "one", "text"))
	var row uint64
	// And the alert about it to the SRC, bob included (queued as the copy
	// failed): delivered once the relay is fixed, it would count as his.
	daemontest.WaitFor(t, "bob's copy and alert to fail", func() bool {
		var busy bool
		row, busy = bobRow(queue.StateFailed)
		return row != 0 && !busy
	})
	h.Rec.FailRcpt(bob, 0)
	if _, err := daemon.QueueRetry(h.Dir, row, time.Now()); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitFor(t, "bob's copy", func() bool { return bobGot() == 1 })
	daemontest.WaitFor(t, "the row to leave the queue", func() bool {
		return h.D.View(func(tx *bolt.Tx) error { _, err := queue.Info(tx, row); return err }) != nil
	})
	for name, f := range map[string]func() (string, error){
		"retry": func() (string, error) { return daemon.QueueRetry(h.Dir, row, time.Now()) },
		"drop":  func() (string, error) { return daemon.QueueDrop(h.Dir, row) },
	} {
		if out, err := f(); !isRowGone(err, row) {
			t.Errorf("%s of a delivered row: %q, %v; want a refusal saying it may have been delivered or dropped", name, out, err)
		}
	}

	// A row dropped while it is being sent: the answer says the copy may
	// still leave, and it does, once.
	hold.Store(true)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "two", "text"))
	daemontest.WaitFor(t, "bob's second copy to be sent", func() bool { row, _ = bobRow(queue.StateSending); return row != 0 })
	out, err := daemon.QueueDrop(h.Dir, row)
	if want := fmt.Sprintf("row %d dropped; an attempt to deliver it was under way and may still reach the relay", row); err != nil || !strings.HasPrefix(out, want) {
		t.Errorf("drop of a row being sent: %q, %v; want %q", out, err, want)
	}
	hold.Store(false)
	close(release)
	daemontest.WaitFor(t, "the copy under way to reach bob", func() bool { return bobGot() == 2 })
	if out, err := daemon.QueueDrop(h.Dir, row); !isRowGone(err, row) {
		t.Errorf("drop of a dropped row: %q, %v", out, err)
	}

	// remove, twice; and an address never on the list.
	subscribe(t, h, reader)
	remove := func(addr string) (string, error) {
		return daemon.Subscribers(h.Config(), daemon.CtlSubscribersRemove, []string{addr}, nil)
	}
	if out, err := remove(reader); err != nil || !strings.Contains(out, "removed from announce@ex.test") {
		t.Errorf("remove: %q, %v", out, err)
	}
	out, err = remove(strings.ToUpper(reader))
	if err != nil || !regexp.MustCompile(`^READER@OUT.TEST is not on announce@ex.test: it left on \d{4}-\d\d-\d\d \d\d:\d\d UTC \(\w+day\) \(removed by an operator\); nothing to do.\n$`).MatchString(out) {
		t.Errorf("remove of an address removed before: %q, %v", out, err)
	}
	if out, err := remove("never@out.test"); err == nil || !strings.Contains(err.Error(), "never@out.test is not on the list") {
		t.Errorf("remove of an address never on the list: %q, %v", out, err)
	}
}

// isRowGone: err is the answer to a retry or drop of row id that is not in
// the queue: saying it may have been delivered or dropped, and how to see
// what is left.
func isRowGone(err error, id uint64) bool {
	return err != nil && strings.Contains(err.Error(), fmt.Sprintf("no queue row %d: it may have been delivered or dropped already", id)) &&
		strings.Contains(err.Error(), "`embargo queue list`")
}

// subscribe adds addrs through the harness's running daemon and waits for
// their notices.
func subscribe(t *testing.T, h *daemontest.Harness, addrs ...string) {
	t.Helper()
	before := len(h.Rec.Messages())
	for _, a := range addrs {
		if _, err := daemon.Subscribers(h.Config(), daemon.CtlSubscribersAdd, []string{a}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h.Settle(before + len(addrs))
}
