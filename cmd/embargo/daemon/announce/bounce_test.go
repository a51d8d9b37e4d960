package announce

import (
	"context"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dsn builds a multipart/report DSN as Postfix writes it (RFC 3464, RFC 6522).
func dsn(rcpts ...string) []byte {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n" +
		"To: announce+bounces-r1@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B0\"\r\n\r\n" +
		"--B0\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n" +
		"--B0\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Reporting-MTA: dns; mx.example.net\r\nX-Postfix-Queue-ID: 4Q1\r\nArrival-Date: Mon, 23 Nov 2026 16:00:01 +0000\r\n")
	for _, r := range rcpts {
		b.WriteString("\r\n" + r + "\r\n")
	}
	b.WriteString("\r\n--B0\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: announce@example.org\r\nSubject: advisory\r\n" +
		"--B0--\r\n")
	return []byte(b.String())
}

func failed(addr, status string) string {
	return "Final-Recipient: rfc822; " + addr + "\r\nOriginal-Recipient: rfc822;" + addr +
		"\r\nAction: failed\r\nStatus: " + status + "\r\nDiagnostic-Code: smtp; 550 5.1.1 <" + addr + ">:\r\n    Recipient address rejected: User unknown"
}

func TestParseDSN(t *testing.T) {
	got := ParseDSN(dsn(
		failed("gone@example.net", "5.1.1"),
		"Final-Recipient: RFC822; <slow@example.net>\r\nAction: delayed (retrying)\r\nStatus: 4.4.1",
		"Final-Recipient: x400; whatever\r\nAction: failed\r\nStatus: 5.0.0",
	))
	want := []DSNRecipient{
		{FinalRecipient: "gone@example.net", OriginalRecipient: "gone@example.net", Action: "failed", Status: "5.1.1",
			Diagnostic: "smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"}, // unfolded (RFC 3464 §2.1)
		{FinalRecipient: "slow@example.net", Action: "delayed", Status: "4.4.1"},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseDSN = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("recipient %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if !got[0].Permanent() || got[1].Permanent() {
		t.Error("Permanent() wrong")
	}
	for name, raw := range map[string]string{
		"plain text":       "From: x@y.z\r\nSubject: out of office\r\n\r\nI am away.\r\n",
		"report, no DSN":   "Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
		"empty":            "",
		"per-message only": "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n",
	} {
		if got := ParseDSN([]byte(raw)); len(got) != 0 {
			t.Errorf("%s: ParseDSN = %+v, want none", name, got)
		}
	}
}

// TestHandleBounce: DSNs at a release's bounce address count once per
// release for subscribers that release covered; three disable.
func TestHandleBounce(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 3, t0)
	f := testFanout(t, db, relayFunc(func(context.Context, string, []string, []byte) error { return nil }), c, nil)
	for _, id := range []string{"r1", "r2", "r3"} {
		startRelease(t, db, id, advisory(t, announceKey(t), t0), t0)
	}
	drain(t, f)
	bounce := func(detail string, raw []byte, now time.Time) int {
		t.Helper()
		var n int
		if err := db.Update(func(tx *bolt.Tx) (err error) {
			n, err = HandleBounce(tx, detail, raw, now, Options{List: testList})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	gone := dsn(failed(strings.ToUpper(addrs[1]), "5.1.1"), failed("stranger@example.net", "5.1.1"))
	if n := bounce("bounces-r1", gone, t0); n != 1 {
		t.Errorf("first DSN counted %d, want 1", n)
	}
	if n := bounce("bounces-r1", gone, t0); n != 0 {
		t.Errorf("the same release again counted %d, want 0", n)
	}
	for _, tc := range []struct{ name, detail string }{{"unknown release", "bounces-r9"}, {"no release", "bounces"}, {"bad id", "bounces-../x"}} {
		if n := bounce(tc.detail, gone, t0); n != 0 {
			t.Errorf("%s: counted %d", tc.name, n)
		}
	}
	if n := bounce("bounces-r2", gone, t0.Add(31*24*time.Hour)); n != 0 {
		t.Errorf("DSN after the bounce window counted %d", n)
	}
	if n := bounce("BOUNCES-R2", gone, t0); n != 1 {
		t.Errorf("r2 counted %d, want 1", n)
	}
	if s, _ := subscriber(t, db, addrs[1]); s.State != StateActive || s.Bounces != 2 {
		t.Errorf("after two releases: %+v", s)
	}
	bounce("bounces-r3", gone, t0)
	if s, _ := subscriber(t, db, addrs[1]); s.State != StateDisabled {
		t.Errorf("after three releases: %+v, want disabled", s)
	}
	db.View(func(tx *bolt.Tx) error {
		if n, _ := Count(tx); n != 2 {
			t.Errorf("Count = %d, want 2", n)
		}
		return nil
	})
	// A subscriber who joined after the release is not counted for it.
	db.Update(func(tx *bolt.Tx) error { return Activate(tx, "new@example.net", t0, Options{List: testList}) })
	if n := bounce("bounces-r3", dsn(failed("new@example.net", "5.1.1")), t0); n != 0 {
		t.Errorf("a subscriber the release did not cover was counted")
	}
	// Re-subscribing clears the count.
	db.Update(func(tx *bolt.Tx) error { return Activate(tx, addrs[1], t0, Options{List: testList}) })
	if s, _ := subscriber(t, db, addrs[1]); s.State != StateActive || s.Bounces != 0 {
		t.Errorf("after re-subscribing: %+v", s)
	}
}
