package listd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
)

// The per-copy bounce addresses are given, and their records written, when
// the delivery worker claims a copy (Service.Claimed), not in the
// transaction of the mail that queued it.

// run starts a delivery worker wired as the daemon wires it (the claim
// hook, the Sealer, the failure alerts, the group commit) on relay, and
// returns its stop: Run's end, with what it recorded on the way out.
func (w *verpWorld) run(t *testing.T, relay queue.Relay) (stop func()) {
	t.Helper()
	q := queue.New(w.db, relay, queue.Options{Now: func() time.Time { return w.now }, Sealer: w.s,
		Claimed: w.s.Claimed, Failed: w.s.Alert, Update: w.s.Write, MinBackoff: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	q.Kick()
	return stop
}

// verpRecords is bucketVERP's records of copies (key → value).
func verpRecords(t *testing.T, db *bolt.DB) map[string]string {
	t.Helper()
	recs := map[string]string{}
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVERP)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek([]byte{verpRecPrefix}); k != nil && k[0] == verpRecPrefix; k, v = c.Next() {
			recs[string(k)] = string(v)
		}
		return nil
	})
	return recs
}

// bucketDigests is each top-level bucket's digest: its sequence and every
// key and value in it and in the buckets it holds.
func bucketDigests(t *testing.T, db *bolt.DB) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	var walk func(h *bytes.Buffer, b *bolt.Bucket)
	walk = func(h *bytes.Buffer, b *bolt.Bucket) {
		h.Write(binary.BigEndian.AppendUint64(nil, b.Sequence()))
		b.ForEach(func(k, v []byte) error {
			fmt.Fprintf(h, "%d:%x=%d:%x;", len(k), k, len(v), v)
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					walk(h, nb)
				}
			}
			return nil
		})
	}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			var h bytes.Buffer
			walk(&h, b)
			out[string(name)] = sha256.Sum256(h.Bytes())
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func changedBuckets(before, after map[string][32]byte) []string {
	var changed []string
	for name, d := range after {
		if before[name] != d {
			changed = append(changed, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			changed = append(changed, name)
		}
	}
	return changed
}

// TestVERPOffTheReportTransaction: a new report's transaction, which its
// 250 waits for, leaves bucketVERP as it was (the buckets compared before
// and after): its copies are queued from the plain bounce address. The
// worker's claim gives each its own address and writes its record.
func TestVERPOffTheReportTransaction(t *testing.T) {
	w := newVERPWorld(t) // the key and the first copies' records exist
	before := bucketDigests(t, w.db)
	report := plainMail("rep2@out.test", "security@ex.test", "a second bug", "r2@out.test", "Steps.\n")
	if err := w.s.Handle(context.Background(), Envelope{From: "rep2@out.test", To: []string{"security@ex.test"}}, report); err != nil {
		t.Fatal(err)
	}
	changed := changedBuckets(before, bucketDigests(t, w.db))
	if strings.Contains(fmt.Sprint(changed), string(bucketVERP)) || !strings.Contains(fmt.Sprint(changed), "queue_rows") {
		t.Errorf("the report's transaction changed the buckets %v: want queue_rows among them, never %s", changed, bucketVERP)
	}
	var copies []queue.Row
	for _, r := range rowsOf(t, w.db, "report-copy") {
		if r.Incident != "SEC-2026-0001" {
			copies = append(copies, r)
		}
	}
	if len(copies) != 2 {
		t.Fatalf("%d copies of the second report", len(copies))
	}
	for _, r := range copies {
		if r.From != "security+bounces@ex.test" {
			t.Errorf("copy %d queued from %q", r.ID, r.From)
		}
	}
	n := len(verpRecords(t, w.db))
	before = bucketDigests(t, w.db)
	for _, r := range claimed(t, w.s, w.db, "report-copy") {
		if r.Incident != "SEC-2026-0001" && !strings.HasPrefix(r.From, "security+bounces-") {
			t.Errorf("copy %d claimed from %q", r.ID, r.From)
		}
	}
	if got := len(verpRecords(t, w.db)); got != n+2 {
		t.Errorf("%d records after the claim, want %d", got, n+2)
	}
	if changed := changedBuckets(before, bucketDigests(t, w.db)); fmt.Sprint(changed) != "["+string(bucketVERP)+"]" {
		t.Errorf("the claim hook changed %v", changed)
	}
}

// TestVERPBounceBeforeOutcome: the relay takes the notice and its DSN
// comes back at once, before the worker has recorded the delivery: the
// record, written at the claim, is there, and the SRC is alerted. The
// address the relay got is the one the stored row's claim gives.
func TestVERPBounceBeforeOutcome(t *testing.T) {
	w := newVERPWorldQueued(t, newStoreKeys(t))
	if n := len(verpRecords(t, w.db)); n != 0 {
		t.Fatalf("%d records before any claim", n)
	}
	got := make(chan []string, 1)
	var from string
	stop := w.run(t, relayFunc(func(_ context.Context, f string, to []string, _ []byte) error {
		if to[0] != "dist@vendor.test" {
			// Held (a temporary failure, retried an hour later on a
			// clock that stays put): the alerts the bounce queues stay
			// in the queue to be counted, not delivered and deleted.
			return errors.New("held by the test")
		}
		from = f
		n := len(w.counts)
		err := w.s.Handle(context.Background(), Envelope{From: "", To: []string{f}}, dsnMail("fast", to[0], "failed", "5.1.1", "User unknown"))
		if err != nil {
			t.Errorf("the bounce: %v", err)
		}
		got <- w.counts[n:]
		return nil // the 250, after the bounce came
	}))
	select {
	case c := <-got:
		if fmt.Sprint(c) != "[distributor-notice alerted]" {
			t.Errorf("a bounce before the outcome's commit counted %v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the notice never reached the relay")
	}
	stop()
	if !strings.HasPrefix(from, "distributors+bounces-") {
		t.Errorf("the notice left from %q", from)
	}
	if n := len(rowsOf(t, w.db, "alert-bounced")); n != 2 {
		t.Errorf("%d alerts queued, want one to each member", n)
	}
}

// TestVERPNeverClaimed: a copy no worker claimed (dropped from the queue
// first) has no record, and its address, which nobody was ever given,
// names nothing: a bounce at it is unknown; the tick's pruning goes on.
func TestVERPNeverClaimed(t *testing.T) {
	w := newVERPWorldQueued(t, newStoreKeys(t))
	if err := w.db.Update(func(tx *bolt.Tx) error { return queue.Drop(tx, w.notice.ID) }); err != nil {
		t.Fatal(err)
	}
	rows := claimed(t, w.s, w.db, "") // the others: the key is made
	recs := verpRecords(t, w.db)
	if len(recs) != 2 { // the two report copies
		t.Fatalf("%d records, want the 2 copies claimed", len(recs))
	}
	if _, ok := recs[string(verpRecKey(verpRowBit|w.notice.ID))]; ok {
		t.Error("the notice, never claimed, has a record")
	}
	var key []byte
	w.db.View(func(tx *bolt.Tx) error { key, _ = verpKey(tx.Bucket(bucketVERP), nil); return nil })
	addr := "distributors+bounces-" + verpToken(key, lists.Distributors, verpRowBit|w.notice.ID) + "@ex.test"
	before := queueLen(t, w.db)
	if got := w.bounce(t, addr, dsnMail("n1", "dist@vendor.test", "failed", "5.1.1", "x")); fmt.Sprint(got) != "[unknown unknown]" {
		t.Errorf("a bounce at the unclaimed notice's address: %v", got)
	}
	if n := queueLen(t, w.db); n != before {
		t.Errorf("%d rows queued", n-before)
	}
	for _, r := range rows {
		if r.Kind == "report-copy" {
			if got := w.bounce(t, r.From, dsnMail("c-"+r.To[0], r.To[0], "failed", "5.1.1", "x")); fmt.Sprint(got) != "[report-copy alerted]" {
				t.Errorf("a bounce of the claimed copy to %s: %v", r.To[0], got)
			}
		}
	}
	if n, err := w.s.pruneVERP(w.now.Add(verpKeep + time.Hour)); err != nil || n != 4 { // the 2 copies' records, the 2 alerts' limits
		t.Errorf("pruned %d, %v", n, err)
	}
}

// TestVERPRestartBetweenClaimAndSend: the worker claims the notice and
// stops before the relay has it (a crash there leaves the row "sending"
// the same way); the next worker sends it from the same address, over the
// same one record, and a bounce at that address alerts.
func TestVERPRestartBetweenClaimAndSend(t *testing.T) {
	w := newVERPWorldQueued(t, newStoreKeys(t))
	claimedOnce := make(chan struct{})
	stop := w.run(t, relayFunc(func(ctx context.Context, _ string, to []string, _ []byte) error {
		if to[0] != "dist@vendor.test" {
			return nil
		}
		close(claimedOnce)
		<-ctx.Done() // never handed over: the stop interrupts it
		return ctx.Err()
	}))
	select {
	case <-claimedOnce:
	case <-time.After(10 * time.Second):
		t.Fatal("the notice was never claimed")
	}
	stop()
	if r := rowsOf(t, w.db, "distributor-notice"); len(r) != 1 || r[0].State != queue.StateSending {
		t.Fatalf("after the stop: %+v", r)
	}
	recs := verpRecords(t, w.db)
	rec, ok := recs[string(verpRecKey(verpRowBit|w.notice.ID))]
	if !ok {
		t.Fatalf("no record of the notice after its claim: %v", recs)
	}

	w.now = w.now.Add(time.Hour) // the record keeps its first claim's time
	sent := make(chan string, 1)
	stop = w.run(t, relayFunc(func(_ context.Context, f string, to []string, _ []byte) error {
		if to[0] == "dist@vendor.test" {
			sent <- f
		}
		return nil
	}))
	var from string
	select {
	case from = <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the notice was not sent after the restart")
	}
	stop()
	after := verpRecords(t, w.db)
	if len(after) != len(recs) || after[string(verpRecKey(verpRowBit|w.notice.ID))] != rec {
		t.Errorf("records before the restart %d, after %d; the notice's changed: %v", len(recs), len(after), after[string(verpRecKey(verpRowBit|w.notice.ID))] != rec)
	}
	w.db.View(func(tx *bolt.Tx) error {
		local, _, _ := strings.Cut(from, "@")
		_, detail, _ := strings.Cut(local, "+")
		if r, ok := lookupVERP(tx, lists.Distributors, detail); !ok || r.To != "dist@vendor.test" || r.Kind != "distributor-notice" {
			t.Errorf("the address sent after the restart, %s, names %+v, %v", from, r, ok)
		}
		return nil
	})
	if got := w.bounce(t, from, dsnMail("r1", "dist@vendor.test", "failed", "5.1.1", "x")); fmt.Sprint(got) != "[distributor-notice alerted]" {
		t.Errorf("a bounce at the address sent after the restart: %v", got)
	}
}

// TestVERPUpgrade: a copy queued by an embargo before this one (its From
// already its own address, sealing a number of the bucket's sequence,
// whose record was written with the row) is sent from that address as it
// is, no second record is made for it, and its bounce alerts; its record
// and the new ones are pruned in order.
func TestVERPUpgrade(t *testing.T) {
	w := newVERPWorldQueued(t, newStoreKeys(t))
	var old string
	if err := w.db.Update(func(tx *bolt.Tx) error {
		var err error
		old, err = enqueueAsBefore(w.s, tx, w.now, queue.Msg{From: "distributors+bounces@ex.test", To: []string{"old@vendor.test"},
			Data: []byte("Subject: x\r\n\r\nold\r\n"), MessageID: "<old@ex.test>", Kind: "distributor-notice", Incident: "SEC-2026-0001"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sent := map[string]string{}
	var mu sync.Mutex
	stop := w.run(t, relayFunc(func(_ context.Context, f string, to []string, _ []byte) error {
		mu.Lock()
		defer mu.Unlock()
		sent[to[0]] = f
		return nil
	}))
	waitFor(t, "the queue to drain", func() bool { return queueLen(t, w.db) == 0 })
	stop()
	if sent["old@vendor.test"] != old {
		t.Errorf("the row queued before was sent from %q, want %q", sent["old@vendor.test"], old)
	}
	if n := len(verpRecords(t, w.db)); n != 4 { // the old row's, the notice's, the two copies'
		t.Errorf("%d records, want 4", n)
	}
	for to, kind := range map[string]string{"old@vendor.test": "distributor-notice", "dist@vendor.test": "distributor-notice", "alice@ex.test": "report-copy"} {
		if got := w.bounce(t, sent[to], dsnMail("u-"+to, to, "failed", "5.1.1", "x")); fmt.Sprint(got) != "["+kind+" alerted]" {
			t.Errorf("a bounce of the copy to %s (from %s): %v", to, sent[to], got)
		}
	}
	var first []byte
	w.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketVERP).Cursor().Seek([]byte{verpRecPrefix})
		first = bytes.Clone(k)
		return nil
	})
	if !bytes.Equal(first, verpRecKey(1)) {
		t.Errorf("the first record is %x, want the old row's, number 1", first)
	}
}

// enqueueAsBefore queues m as Service.enqueue did before the claim hook:
// a record of the copy under the bucket's next number, written with the
// row, and the row sent from the address sealing that number. It returns
// that address.
func enqueueAsBefore(s *Service, tx *bolt.Tx, now time.Time, m queue.Msg) (string, error) {
	l, ok := s.verpList(&m)
	if !ok {
		return "", fmt.Errorf("not a private list's copy: %+v", m)
	}
	b, err := tx.CreateBucketIfNotExists(bucketVERP)
	if err != nil {
		return "", err
	}
	key, err := verpKey(b, s.o.Rand)
	if err != nil {
		return "", err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return "", err
	}
	rec := verpRecord{List: l.Name, To: m.To[0], Kind: m.Kind, Incident: m.Incident, NoAlert: m.NoAlert, At: now}
	v, _ := json.Marshal(rec)
	if err := b.Put(verpRecKey(seq), v); err != nil {
		return "", err
	}
	m.From = l.SubAddress(lists.DetailVERPPrefix + verpToken(key, l.Name, seq))
	return m.From, queue.Enqueue(tx, now, m)
}

// BenchmarkVERPClaimed is the claim hook's cost for one copy claimed the
// first time: its record made and put, its address sealed.
func BenchmarkVERPClaimed(b *testing.B) {
	k := newStoreKeys(b)
	s, db := storeService(b, k)
	r := queue.Row{ID: 1, Msg: queue.Msg{From: "distributors+bounces@ex.test", To: []string{"dist@vendor.test"},
		Kind: "distributor-notice", Incident: "SEC-2026-0001"}, Created: mon}
	if err := db.Update(func(tx *bolt.Tx) error {
		for b.Loop() {
			c := r
			if err := s.Claimed(tx, &c); err != nil {
				return err
			}
			r.ID++
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
}
