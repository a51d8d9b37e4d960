package daemon_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// killedAtDrop is TestProcessKilledAtCtl's case of `embargo queue drop`:
// bob's copy of a report, which shares its stored body with alice's, waits
// in the queue while the relay defers it (451). The drop is killed; after
// the death the row is there (begin) or gone with its body (done). The
// drop run again answers OK, or, the row gone, says it may have been
// delivered or dropped; then the relay is fixed, and bob gets nothing
// (unless the answer said an attempt was under way). No body outlives its
// rows, no row lacks its body.
func killedAtDrop(t *testing.T, step string) {
	const bob = "bob@ex.test"
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.Rec.FailRcpt(bob, 451)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	h.Settle(2) // the acknowledgement, alice's copy
	h.Stop()
	var row uint64
	for id := range queueRows(t, h.Dir, bob) {
		row = id
	}
	if n := len(queueRows(t, h.Dir, bob)); n != 1 {
		t.Fatalf("bob has %d rows in the queue, want his copy", n)
	}
	bodies := checkQueueBodies(t, h.Dir)
	if bodies == 0 {
		t.Fatal("bob's copy has no stored body")
	}

	c := &ctlDeath{h: h, cmd: "queue-drop", step: step, run: func() (string, error) { return daemon.QueueDrop(h.Dir, row) },
		more: func() { h.Rec.FailRcpt(bob, 0) }} // once the second drop is answered
	c.kill(t)
	wrote := step == "done"
	if _, there := queueRows(t, h.Dir, bob)[row]; there == wrote {
		t.Errorf("after the death: bob's row there %v, want %v", there, !wrote)
	}
	if n := checkQueueBodies(t, h.Dir); wrote && n != bodies-1 || !wrote && n != bodies {
		t.Errorf("after the death: %d bodies stored, %d before", n, bodies)
	}
	msgs, out, err := c.again(t, func([]queuetest.Message) bool { return true })
	// The second drop may come while the restarted daemon tries the row
	// again (the relay defers it until then): it says so, and only then
	// may the copy still reach bob, once.
	underWay := strings.HasPrefix(out, fmt.Sprintf("row %d dropped; an attempt to deliver it was under way", row))
	if wrote && !isRowGone(err, row) || !wrote && (err != nil || out != fmt.Sprintf("row %d dropped\n", row) && !underWay) {
		t.Errorf("the drop run again: %q, %v", out, err)
	}
	if n := distinctTo(t, msgs, bob); n > 1 || n == 1 && !underWay {
		t.Errorf("bob got %d copies of a row dropped with the answer %q", n, out)
	}
	if n := len(queueRows(t, h.Dir, bob)); n != 0 {
		t.Errorf("at the end bob has %d rows in the queue", n)
	}
	if n := checkQueueBodies(t, h.Dir); n != bodies-1 {
		t.Errorf("at the end: %d bodies stored, %d before the drop", n, bodies)
	}
}

// queueRows are the queue rows to rcpt alone, by ID, with their states, in
// the store in dir (the daemon stopped).
func queueRows(t *testing.T, dir, rcpt string) map[uint64]queue.State {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store: %v", err)
	}
	defer db.Close()
	rows := map[uint64]queue.State{}
	err = db.View(func(tx *bolt.Tx) error {
		all, err := queue.List(tx)
		for _, r := range all {
			if len(r.To) == 1 && strings.EqualFold(r.To[0], rcpt) {
				rows[r.ID] = r.State
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkQueueBodies checks the queue's shared bodies in the store in dir
// (the daemon stopped) against its rows, and returns how many there are:
// each counted body has its first chunk, every chunk belongs to a counted
// body, and the counts add up to the rows that have a body. Bucket names
// and layout are the queue package's (queue.go): body ID (8 bytes) → rows
// using it ‖ length; body ID ‖ chunk number (4 bytes) → bytes.
func checkQueueBodies(t *testing.T, dir string) (bodies int) {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store: %v", err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		refs, blobs := tx.Bucket([]byte("queue_blob_refs")), tx.Bucket([]byte("queue_blobs"))
		counted, sum := map[string]bool{}, uint64(0)
		refs.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) != 16 {
				t.Errorf("body count %x = %x: not an ID and a count", k, v)
				return nil
			}
			counted[string(k)] = true
			sum += binary.BigEndian.Uint64(v[:8])
			if blobs.Get(append(bytes.Clone(k), 0, 0, 0, 0)) == nil {
				t.Errorf("body %x is counted and not stored", k)
			}
			return nil
		})
		blobs.ForEach(func(k, _ []byte) error {
			if len(k) != 12 || !counted[string(k[:8])] {
				t.Errorf("chunk %x belongs to no counted body: an orphan", k)
			}
			return nil
		})
		rows, err := queue.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		withBody := 0
		for _, r := range rows {
			if r.BodySize > 0 {
				withBody++
			}
		}
		if sum != uint64(withBody) {
			t.Errorf("%d bodies counted %d times in all, for %d rows with a body", len(counted), sum, withBody)
		}
		bodies = len(counted)
		return nil
	})
	return bodies
}
