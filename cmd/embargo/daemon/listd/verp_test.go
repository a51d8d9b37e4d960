package listd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// dsnMail is a delivery status notification (RFC 3464, in a
// multipart/report of RFC 6522) as Postfix writes one: a human part, the
// delivery-status part with one recipient block, and the returned header.
func dsnMail(id, rcpt, action, status, diag string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: MAILER-DAEMON@mx.vendor.test (Mail Delivery System)
To: distributors+bounces@ex.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <%s@mx.vendor.test>
Date: Mon, 23 Nov 2026 09:30:00 +0000
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.
/approve
--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.vendor.test
Arrival-Date: Mon, 23 Nov 2026 09:29:00 +0000

Final-Recipient: rfc822; %s
Original-Recipient: rfc822;%s
Action: %s
Status: %s
Diagnostic-Code: smtp; %s

--B1
Content-Type: text/rfc822-headers

From: distributors@ex.test
Subject: Encrypted message

--B1--
`, id, rcpt, rcpt, action, status, diag), "\n", "\r\n"))
}

// verpWorld is a store with an incident, a distributor notice queued to
// dist@vendor.test and the bounces counted.
type verpWorld struct {
	s      *Service
	db     *bolt.DB
	now    time.Time
	counts []string
	notice queue.Row
}

func newVERPWorld(t *testing.T) *verpWorld {
	t.Helper()
	return newVERPWorldKeys(t, newStoreKeys(t))
}

func newVERPWorldKeys(t *testing.T, k *storeKeys) *verpWorld {
	t.Helper()
	w := newVERPWorldQueued(t, k)
	rows := claimed(t, w.s, w.db, "distributor-notice")
	if len(rows) != 1 {
		t.Fatalf("%d notices queued", len(rows))
	}
	w.notice = rows[0]
	return w
}

// newVERPWorldQueued is a verpWorld whose rows no worker has claimed:
// notice is the row as stored, sent from the plain bounce address.
func newVERPWorldQueued(t *testing.T, k *storeKeys) *verpWorld {
	t.Helper()
	w := &verpWorld{now: mon}
	w.s, w.db = storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return w.now }
		o.Bounced = func(kind, result string) { w.counts = append(w.counts, kind+" "+result) }
	})
	openIncident(t, w.s, w.db, nil)
	if err := w.db.Update(func(tx *bolt.Tx) error {
		inc, err := incidentdb.Get(tx, "SEC-2026-0001")
		if err != nil {
			return err
		}
		out, err := w.s.toDistributors(inc, distMail{Kind: "distributor-notice", Subject: "[EMBARGOED] x", Body: "The notice.\n"}, w.now)
		if err != nil {
			return err
		}
		return w.s.enqueue(tx, w.now, out...)
	}); err != nil {
		t.Fatal(err)
	}
	rows := rowsOf(t, w.db, "distributor-notice")
	if len(rows) != 1 {
		t.Fatalf("%d notices queued", len(rows))
	}
	w.notice = rows[0]
	return w
}

// claimed runs the worker's claim hook (Service.Claimed) over every row
// queued, as the worker's claim does in its transaction, and returns the
// rows of kind ("": all) with the envelope senders they leave with.
func claimed(t testing.TB, s *Service, db *bolt.DB, kind string) []queue.Row {
	t.Helper()
	var out []queue.Row
	if err := db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
		rows, err := queue.List(tx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := s.Claimed(tx, &r); err != nil {
				return err
			}
			if kind == "" || r.Kind == kind {
				out = append(out, r)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// bounce hands raw to the service as the relay would, from the null
// sender to rcpt, and returns the bounce counts it added.
func (w *verpWorld) bounce(t *testing.T, rcpt string, raw []byte) []string {
	t.Helper()
	n := len(w.counts)
	if err := w.s.Handle(context.Background(), Envelope{From: "", To: []string{rcpt}}, raw); err != nil {
		t.Fatalf("bounce to %s: %v", rcpt, err)
	}
	return w.counts[n:]
}

func (w *verpWorld) incident(t *testing.T) *workflow.Incident {
	t.Helper()
	var inc *workflow.Incident
	if err := w.db.View(func(tx *bolt.Tx) (err error) { inc, err = incidentdb.Get(tx, "SEC-2026-0001"); return err }); err != nil {
		t.Fatal(err)
	}
	return inc
}

// TestVERPAddresses: every copy the private lists send to one recipient
// has its own bounce address, which names it; the announce list's and a
// copy to several recipients keep theirs.
func TestVERPAddresses(t *testing.T) {
	w := newVERPWorld(t)
	seen := map[string]bool{}
	rows := claimed(t, w.s, w.db, "")
	if err := w.db.View(func(tx *bolt.Tx) error {
		for _, r := range rows {
			if r.From == "" {
				continue // the acknowledgement, from the null sender (RFC 3834 §3.3)
			}
			local, _, _ := strings.Cut(r.From, "@")
			base, detail, _ := strings.Cut(local, "+")
			if !lists.IsVERP(detail) {
				t.Errorf("row %d (%s to %v) is sent from %s", r.ID, r.Kind, r.To, r.From)
				continue
			}
			if seen[r.From] {
				t.Errorf("two rows from %s", r.From)
			}
			seen[r.From] = true
			if rec, ok := lookupVERP(tx, lists.Name(base), detail); !ok || rec.To != r.To[0] || rec.Kind != r.Kind || rec.Incident != r.Incident {
				t.Errorf("row %d from %s names %+v, %v", r.ID, r.From, rec, ok)
			}
			// The same token under the other list, or one character off: nothing.
			other := lists.Security
			if base == string(lists.Security) {
				other = lists.Distributors
			}
			if _, ok := lookupVERP(tx, other, detail); ok {
				t.Errorf("%s is taken for the %s list", r.From, other)
			}
			if _, ok := lookupVERP(tx, lists.Name(base), flipToken(detail)); ok {
				t.Errorf("%s with its token's first character changed is taken", r.From)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 3 { // two report copies, the notice
		t.Errorf("%d rows with their own address", len(seen))
	}
	var out []queue.Msg
	w.db.Update(func(tx *bolt.Tx) error {
		m := []queue.Msg{
			{From: "announce+bounces@ex.test", To: []string{"a@x.test"}},
			{From: "security+bounces@ex.test", To: []string{"a@x.test", "b@x.test"}},
			{From: "", To: []string{"a@x.test"}},
		}
		for i := range m {
			if _, ok := w.s.verpList(&m[i]); ok {
				out = append(out, m[i])
			}
		}
		return nil
	})
	if len(out) != 0 {
		t.Errorf("given their own address: %+v", out)
	}
}

// TestVERPFailedAlerts: a DSN with Action: failed at the notice's address
// alerts each SRC member once, sealed, naming the distributor and quoting
// the status and the diagnostic escaped; the incident's history and
// /status record it. A second on the same day is counted, not alerted;
// the next day it alerts again. Nothing goes to the distributor or to the
// DSN's sender, and no incident is opened.
func TestVERPFailedAlerts(t *testing.T) {
	w := newVERPWorld(t)
	got := w.bounce(t, w.notice.From, dsnMail("d1", "dist@vendor.test", "failed", "5.1.1", "550 5.1.1 <dist@vendor.test>: User unknown\x1b[2J"))
	if fmt.Sprint(got) != "[distributor-notice alerted]" {
		t.Fatalf("counted %v", got)
	}
	alerts := rowsOf(t, w.db, "alert-bounced")
	if len(alerts) != 2 {
		t.Fatalf("%d alerts, want one to each of the two members", len(alerts))
	}
	for _, a := range alerts {
		if a.Seal == nil || a.Seal.To == "" || a.Incident != "SEC-2026-0001" || (a.To[0] != "alice@ex.test" && a.To[0] != "bob@ex.test") {
			t.Errorf("alert row %+v", a.Msg)
		}
		text := string(a.Body)
		for _, want := range []string{"dist@vendor.test", "distributor-notice", "Status:     5.1.1", `User unknown\x1b[2J`, "SEC-2026-0001"} {
			if !strings.Contains(text, want) {
				t.Errorf("the alert to %v does not say %q:\n%s", a.To, want, text)
			}
		}
		if strings.Contains(text, "\x1b") || strings.Contains(text, "\n/") {
			t.Errorf("the alert carries the DSN's text raw:\n%q", text)
		}
	}
	inc := w.incident(t)
	if h := inc.History[len(inc.History)-1]; h.Command != workflow.BounceCommand || !strings.Contains(h.What, "distributor-notice to dist@vendor.test bounced: 5.1.1") {
		t.Errorf("last history entry %+v", h)
	}
	if st := workflow.StatusText(*inc, w.now, nil); !strings.Contains(st, "Bounced") || !strings.Contains(st, "distributor-notice to dist@vendor.test\n  bounced: 5.1.1") {
		t.Errorf("/status does not show the bounce:\n%s", st)
	}
	checkNothingTo(t, w.db, "dist@vendor.test", 1)
	checkNothingTo(t, w.db, "MAILER-DAEMON@mx.vendor.test", 0)
	if n := incidentCount(t, w.db); n != 1 {
		t.Errorf("%d incidents after the bounce", n)
	}

	// The same failure reported again the same day: counted only.
	if got := w.bounce(t, w.notice.From, dsnMail("d2", "dist@vendor.test", "failed", "5.1.1", "again")); fmt.Sprint(got) != "[distributor-notice limited]" {
		t.Errorf("a second bounce the same day: %v", got)
	}
	if n := len(rowsOf(t, w.db, "alert-bounced")); n != 2 {
		t.Errorf("%d alerts after a second bounce the same day", n)
	}
	w.now = w.now.Add(24 * time.Hour)
	if got := w.bounce(t, w.notice.From, dsnMail("d3", "dist@vendor.test", "failed", "5.1.1", "and again")); fmt.Sprint(got) != "[distributor-notice alerted]" {
		t.Errorf("a bounce the next day: %v", got)
	}
	if n := len(rowsOf(t, w.db, "alert-bounced")); n != 4 {
		t.Errorf("%d alerts after a bounce the next day, want 4", n)
	}
}

// TestVERPNoAlert: what must not alert — a delay, an auto-reply, a token
// of the right shape but a wrong MAC (forged), one naming no copy, one
// from another store (its key), and a bounce of a bounce alert — each
// counted, archived as a bounce, nothing queued.
func TestVERPNoAlert(t *testing.T) {
	w := newVERPWorld(t)
	other := newVERPWorld(t) // another store: the same seq, another key
	local, _, _ := strings.Cut(w.notice.From, "@")
	_, detail, _ := strings.Cut(local, "+")
	// A token changed in one character opens to a wrong MAC; one the key
	// makes for a number never used names no copy.
	forged := "distributors+" + flipToken(detail) + "@ex.test"
	var key []byte
	w.db.View(func(tx *bolt.Tx) error { key, _ = verpKey(tx.Bucket(bucketVERP), nil); return nil })
	unknown := "distributors+bounces-" + verpToken(key, lists.Distributors, 99999) + "@ex.test"
	if forged == w.notice.From || !lists.IsVERP(strings.TrimSuffix(strings.TrimPrefix(forged, "distributors+"), "@ex.test")) {
		t.Fatalf("forged %s from %s", forged, w.notice.From)
	}
	dsn := func(id string) []byte { return dsnMail(id, "dist@vendor.test", "failed", "5.1.1", "User unknown") }
	autoReply := []byte("From: dist@vendor.test\r\nTo: distributors@ex.test\r\nSubject: Out of office\r\nMessage-ID: <ooo@vendor.test>\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n")
	for _, c := range []struct {
		name, rcpt string
		raw        []byte
		want       string
	}{
		{"delayed", w.notice.From, dsnMail("dl", "dist@vendor.test", "delayed", "4.4.1", "Connection timed out"), "distributor-notice delayed"},
		{"auto-reply", w.notice.From, autoReply, "distributor-notice other"},
		{"not failed", w.notice.From, dsnMail("rl", "dist@vendor.test", "relayed", "2.0.0", "relayed"), "distributor-notice other"},
		{"forged MAC", forged, dsn("f1"), "unknown unknown"},
		{"no such copy", unknown, dsn("f2"), "unknown unknown"},
		{"another store's token", other.notice.From, dsn("f3"), "unknown unknown"},
	} {
		before := queueLen(t, w.db)
		got := w.bounce(t, c.rcpt, c.raw)
		if fmt.Sprint(got) != "["+c.want+"]" {
			t.Errorf("%s: counted %v, want %s", c.name, got, c.want)
		}
		if n := queueLen(t, w.db); n != before {
			t.Errorf("%s: %d rows queued", c.name, n-before)
		}
	}
	if n := incidentCount(t, w.db); n != 1 {
		t.Errorf("%d incidents", n)
	}
	if notes := archivedNotes(t, w.db); notes["bounce"] != 6 {
		t.Errorf("archived %v, want six bounces", notes)
	}

	// A bounce of a bounce alert: the alert's copy to bob bounces.
	w.bounce(t, w.notice.From, dsn("real"))
	var toBob queue.Row
	for _, a := range claimed(t, w.s, w.db, "alert-bounced") {
		if a.To[0] == "bob@ex.test" {
			toBob = a
		}
	}
	if !strings.Contains(toBob.From, "+bounces-") {
		t.Fatalf("the alert to bob is sent from %q", toBob.From)
	}
	before := queueLen(t, w.db)
	if got := w.bounce(t, toBob.From, dsnMail("bb", "bob@ex.test", "failed", "5.2.2", "mailbox full")); fmt.Sprint(got) != "[alert-bounced no-alert]" {
		t.Errorf("a bounce of a bounce alert: %v", got)
	}
	if n := queueLen(t, w.db); n != before {
		t.Errorf("a bounce of a bounce alert queued %d rows", n-before)
	}
}

// TestVERPPrune: records older than verpKeep go at the tick, with the
// alert limit's past days; a bounce at a pruned address is unknown.
func TestVERPPrune(t *testing.T) {
	w := newVERPWorld(t)
	w.bounce(t, w.notice.From, dsnMail("p1", "dist@vendor.test", "failed", "5.1.1", "x"))
	claimed(t, w.s, w.db, "") // the alerts, claimed
	// The day's alert limit goes two days later; the records after verpKeep.
	if n, err := w.s.pruneVERP(w.now.Add(24 * time.Hour)); err != nil || n != 0 {
		t.Fatalf("pruned %d, %v the next day", n, err)
	}
	if n, err := w.s.pruneVERP(w.now.Add(verpKeep - time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v before the records' time, want the limit's day", n, err)
	}
	if n, err := w.s.pruneVERP(w.now.Add(verpKeep + time.Hour)); err != nil || n != 5 { // two copies, the notice, two alerts
		t.Fatalf("pruned %d, %v", n, err)
	}
	w.now = w.now.Add(verpKeep + time.Hour)
	if got := w.bounce(t, w.notice.From, dsnMail("p2", "dist@vendor.test", "failed", "5.1.1", "x")); fmt.Sprint(got) != "[unknown unknown]" {
		t.Errorf("a bounce at a pruned address: %v", got)
	}
}

// TestDSNVerdict: the recipient block a DSN's verdict reads.
func TestDSNVerdict(t *testing.T) {
	for _, c := range []struct {
		raw        []byte
		want, stat string
	}{
		{dsnMail("a", "x@y.test", "failed", "5.1.1", "no"), BounceAlerted, "5.1.1"},
		{dsnMail("a", "x@y.test", "FAILED", "4.4.7", "expired"), BounceAlerted, "4.4.7"},
		{dsnMail("a", "x@y.test", "delayed", "4.4.1", "later"), BounceDelayed, "4.4.1"},
		{dsnMail("a", "x@y.test", "delivered", "2.0.0", "ok"), BounceOther, ""},
		{[]byte("Subject: hello\r\n\r\nnot a DSN\r\n"), BounceOther, ""},
	} {
		r, got := dsnVerdict(announce.ParseDSN(c.raw), "x@y.test")
		if got != c.want || r.Status != c.stat {
			t.Errorf("%q: %s %q, want %s %q", c.raw[:40], got, r.Status, c.want, c.stat)
		}
	}
}

// flipToken changes the first character of a per-copy detail's token.
func flipToken(detail string) string {
	p := len(lists.DetailVERPPrefix)
	flip := byte('a')
	if detail[p] == 'a' {
		flip = 'b'
	}
	return detail[:p] + string(flip) + detail[p+1:]
}

func queueLen(t *testing.T, db *bolt.DB) int {
	t.Helper()
	var n int
	db.View(func(tx *bolt.Tx) error { rows, err := queue.List(tx); n = len(rows); return err })
	return n
}

func checkNothingTo(t *testing.T, db *bolt.DB, addr string, want int) {
	t.Helper()
	var n int
	db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			if strings.EqualFold(r.To[0], addr) {
				n++
			}
		}
		return err
	})
	if n != want {
		t.Errorf("%d rows to %s, want %d", n, addr, want)
	}
}

func incidentCount(t *testing.T, db *bolt.DB) int {
	t.Helper()
	var n int
	db.View(func(tx *bolt.Tx) error { incs, err := incidentdb.List(tx); n = len(incs); return err })
	return n
}

func archivedNotes(t *testing.T, db *bolt.DB) map[string]int {
	t.Helper()
	notes := map[string]int{}
	db.View(func(tx *bolt.Tx) error {
		for seq := uint64(1); ; seq++ {
			r, err := incidentdb.Message(tx, seq)
			if err != nil {
				return nil
			}
			notes[r.Note]++
		}
	})
	return notes
}

// TestVERPToken: a token opens to its number under its key and list
// only; the number does not show (two consecutive numbers share no
// prefix); a block holding a used number with a wrong MAC, which an
// outsider cannot make without the key anyway, does not open.
func TestVERPToken(t *testing.T) {
	key, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for _, seq := range []uint64{1, 2, 1 << 40, ^uint64(0)} {
		tok := verpToken(key, lists.Distributors, seq)
		if !lists.IsVERP(lists.DetailVERPPrefix + tok) {
			t.Fatalf("token %q does not have the routed shape", tok)
		}
		if got, ok := verpOpen(key, lists.Distributors, tok); !ok || got != seq {
			t.Errorf("token of %d opens to %d, %v", seq, got, ok)
		}
		if _, ok := verpOpen(key, lists.Security, tok); ok {
			t.Errorf("token of %d opens under the other list", seq)
		}
		if _, ok := verpOpen(other, lists.Distributors, tok); ok {
			t.Errorf("token of %d opens under another key", seq)
		}
	}
	if a, b := verpToken(key, lists.Security, 1), verpToken(key, lists.Security, 2); a[:4] == b[:4] || a[len(a)-4:] == b[len(b)-4:] {
		t.Errorf("consecutive tokens look alike: %s %s", a, b)
	}
	var blk [16]byte
	binary.BigEndian.PutUint64(blk[:8], 1) // number 1, MAC zero
	verpCipher(key).Encrypt(blk[:], blk[:])
	if _, ok := verpOpen(key, lists.Security, strings.ToLower(verpEncoding.EncodeToString(blk[:]))); ok {
		t.Error("a block with a used number and a wrong MAC opens")
	}
	for _, bad := range []string{"", "aaaa", strings.Repeat("a", 26), strings.Repeat("1", 26), strings.Repeat("a", 27)} {
		if _, ok := verpOpen(key, lists.Security, bad); ok {
			t.Errorf("%q opens", bad)
		}
	}
}
