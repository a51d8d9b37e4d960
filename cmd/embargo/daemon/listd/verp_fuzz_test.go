package listd

import (
	"context"
	"errors"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
)

// FuzzPrivateBounce hands the service a message the fuzzer writes (a DSN
// or anything else: nested multiparts, folded and hostile Diagnostic-Code
// fields, control characters, invalid UTF-8) at a per-copy bounce address
// of the distributors list (verp.go): the notice's own (valid), or one
// whose token the fuzzer chooses. Whatever it is, the service takes it or
// refuses it with an SMTP answer; no incident is opened; nothing is
// queued to anyone but the SRC (no backscatter, docs/threat-model.md G7);
// a token the service did not make queues nothing at all; a valid one
// queues one alert per member or none, each made as the worker makes it
// and its text checked by checkQuotedText (E5, B10); the incident's
// history holds no control character.
func FuzzPrivateBounce(f *testing.F) {
	k := newStoreKeys(f)
	f.Add(dsnMail("s1", "dist@vendor.test", "failed", "5.1.1", "550 5.1.1 User unknown"), "", true)
	f.Add(dsnMail("s2", "dist@vendor.test", "delayed", "4.4.1", "timeout"), "", true)
	f.Add(dsnMail("s3", "dist@vendor.test", "failed", "5.1.1", "x"), "aaaaaaaaaaaaaaaaaaaaaaaaaa", false)
	// More in testdata/fuzz/FuzzPrivateBounce: diagnostics with CR, ESC,
	// bidi controls and "/" commands after a fold, invalid UTF-8, a DSN
	// inside a DSN, many recipient blocks, a non-DSN auto-reply.
	f.Fuzz(func(t *testing.T, raw []byte, token string, valid bool) {
		w := newVERPWorldKeys(t, k)
		rcpt := w.notice.From
		if !valid {
			rcpt = "distributors+bounces-" + token + "@ex.test"
			if _, err := w.s.o.Roster.Route(rcpt); err != nil {
				return // refused at RCPT (lists_test.go)
			}
		}
		before := queueLen(t, w.db)
		var lastID uint64
		w.db.View(func(tx *bolt.Tx) error { lastID = lastRowID(t, tx); return nil })
		err := w.s.Handle(context.Background(), Envelope{From: "", To: []string{rcpt}}, raw)
		var r *lists.Refusal
		if err != nil && !errors.As(err, &r) {
			t.Fatalf("not taken, and no SMTP answer: %v", err)
		}
		if n := incidentCount(t, w.db); n != 1 {
			t.Fatalf("%d incidents after a bounce", n)
		}
		added := queueLen(t, w.db) - before
		lookedUp := false
		w.db.View(func(tx *bolt.Tx) error {
			_, lookedUp = lookupVERP(tx, lists.Distributors, strings.SplitN(strings.SplitN(rcpt, "@", 2)[0], "+", 2)[1])
			return nil
		})
		if !lookedUp && added != 0 {
			t.Fatalf("a token the service did not make queued %d rows", added)
		}
		if added != 0 && added != 2 {
			t.Fatalf("%d rows queued, want none or one alert to each member", added)
		}
		for _, c := range checkQueued(t, w.s, w.db, lastID, k.readers()) {
			if c.Kind != "alert-bounced" || len(c.To) != 1 || (c.To[0] != "alice@ex.test" && c.To[0] != "bob@ex.test") {
				t.Fatalf("queued %s to %v", c.Kind, c.To)
			}
			checkQuotedText(t, c)
		}
		for _, h := range w.incident(t).History {
			if strings.ContainsFunc(h.What, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) {
				t.Fatalf("history entry with a control character: %q", h.What)
			}
		}
	})
}

func lastRowID(t *testing.T, tx *bolt.Tx) uint64 {
	t.Helper()
	var last uint64
	rows, err := queue.List(tx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		last = max(last, r.ID)
	}
	return last
}
