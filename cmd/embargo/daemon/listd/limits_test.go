package listd

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestLimitDecidedInTransaction: the limit is decided where the incident
// would be opened, in the message's transaction, whatever the check before
// it found (two messages of one group both pass the read-only check): the
// transaction refuses with 450 4.7.1 and writes nothing; a reply into the
// sender's incident still passes.
func TestLimitDecidedInTransaction(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k, func(o *Options) { o.NewPerSender = 1 })
	env, raw := report(1)
	if err := s.Handle(t.Context(), env, raw); err != nil {
		t.Fatal(err)
	}
	before, rows, _ := stored(t, db)
	// The second report, straight to the transaction (no check before it).
	env.To = []string{"security@ex.test"}
	raw2 := plainMail(env.From, "security@ex.test", "another", "r1b@out.test", "More.\n")
	d, err := s.openOnce(env, raw2, sha256.Sum256(raw2))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { _, err := s.store(tx, d); return err })
	var lr *LimitRefusal
	if !errors.As(err, &lr) || lr.Reason != LimitSender {
		t.Fatalf("the second new incident in the transaction: %v, want a LimitRefusal by sender", err)
	}
	if c, e := lr.SMTPStatus(); c != 450 || e != "4.7.1" || lr.Permanent() {
		t.Errorf("reply %d %s (permanent %v), want 450 4.7.1", c, e, lr.Permanent())
	}
	if after, rows2, _ := stored(t, db); after != before || rows2 != rows {
		t.Errorf("a refused report left %d messages and %d rows, want %d and %d", after, rows2, before, rows)
	}
	// Its reply in the thread of SEC-2026-0001 is no new incident.
	reply := plainMail(env.From, "security+SEC-2026-0001@ex.test", "Re: report", "r1c@out.test", "Details.\n")
	if err := s.Handle(t.Context(), Envelope{From: env.From, To: []string{"security+SEC-2026-0001@ex.test"}}, reply); err != nil {
		t.Fatalf("the reporter's reply into the incident: %v", err)
	}
	// The check before the transaction refuses the same report on its own.
	if err := s.Handle(t.Context(), env, raw2); !errors.As(err, &lr) {
		t.Fatalf("Handle of the second report: %v, want a LimitRefusal", err)
	}
}

// TestLimitAlertOnceOutOfOrder: refusals that reach limitRefused out of
// their arrival order (concurrent sessions) still make one alert per limit
// and window, and so does a refusal after a restart (the marker in the
// store); a refusal a window later alerts again.
func TestLimitAlertOnceOutOfOrder(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	lr := &LimitRefusal{Reason: LimitClient, Who: "192.0.2.7", Limit: 30, Opened: 30, Until: mon.Add(time.Hour)}
	alerts := func() int { return len(rowsOf(t, db, "alert-limit")) }
	s.limitRefused(lr, &delivery{now: mon})
	per := alerts()
	if per == 0 {
		t.Fatal("the first refusal alerted nobody")
	}
	for _, at := range []time.Time{mon.Add(-3 * time.Millisecond), mon.Add(time.Second), mon.Add(-time.Second)} {
		s.limitRefused(lr, &delivery{now: at})
	}
	// As after a restart: the marker in the store decides.
	s.sh.limits.last = nil
	s.limitRefused(lr, &delivery{now: mon.Add(-5 * time.Millisecond)})
	if got := alerts(); got != per {
		t.Errorf("%d alert copies for one limit within its window, want %d", got, per)
	}
	s.limitRefused(lr, &delivery{now: mon.Add(LimitWindow + time.Minute)})
	if got := alerts(); got != 2*per {
		t.Errorf("%d alert copies a window later, want %d", got, 2*per)
	}
}

// TestLimitAlertEscapesWho: the intake limit's alert names the sender or
// client address that hit the limit escaped (EscapeLine) and cut to
// maxQuotedLine (found by FuzzLimitAlert). smtpd admits neither a line
// break nor a control or format character in an envelope sender, but
// Handle takes its Envelope as given: a line break followed by "/"
// made the alert a command block for a member who replies with it
// unquoted (docs/threat-model.md E5), and an escape sequence or a bidi
// override reached the member's screen.
func TestLimitAlertEscapesWho(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	who := "x\r\n/disclose now\x1b[2J\u202e\xff@out.test" + strings.Repeat("a", 1000)
	s.limitRefused(&LimitRefusal{Reason: LimitSender, Who: who, Limit: 10, Opened: 10, Until: mon.Add(time.Hour)}, &delivery{now: mon})
	for _, c := range checkAlerts(t, s, db, k, 0, "alert-limit", 2, "") {
		if want := `sender x\r\n/disclose now\x1b[2J\u202e\xff@out.testaaa`; !strings.Contains(c.Text, want) {
			t.Errorf("alert to %v does not name %q:\n%s", c.To, want, c.Text)
		}
		if strings.Contains(c.Text, strings.Repeat("a", maxQuotedLine)) {
			t.Errorf("alert to %v quotes the whole address", c.To)
		}
	}
}
