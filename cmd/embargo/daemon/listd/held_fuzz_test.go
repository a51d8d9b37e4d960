package listd

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// heldT is T of FuzzReleaseHeld's incident: a Thursday, 16:00 UTC.
var heldT = time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)

// FuzzReleaseHeld holds a release both ways and checks the SRC's alerts.
// An incident whose report subject and sender's name, and whose summary
// (the advisory's subject), come from the fuzzer reaches T−24 h without
// /approve: the tick holds the release and alerts the SRC (release-held,
// docs/threat-model.md G4). Alice then approves and releases it at once
// (/disclose now); the announce fan-out (announce.Fanout over its own
// SMTP connections, as the daemon runs it) offers the signed advisory to
// a relay on loopback that refuses it at MAIL, DATA or the final dot with
// the fuzzer's code (5xx) and reply text, byte for byte: the fan-out holds
// the release and its Held hook, Service.AlertRelease, alerts the SRC
// with the relay's words (announce-held). Every row queued is made as the
// delivery worker makes it and checked by checkQueued (B2, B10, D6, E5),
// and each alert's text by checkQuotedText.
func FuzzReleaseHeld(f *testing.F) {
	k := newStoreKeys(f)
	ann, err := keys.GenerateListKey("announce", "announce@ex.test", ko)
	if err != nil {
		f.Fatal(err)
	}
	relay := newHostileRelay(f)
	f.Add("heap overflow in the parser", "Rep Orter", "heap overflow in the parser", byte(2), byte(54), "5.7.1 Message rejected as spam")
	// More in testdata/fuzz/FuzzReleaseHeld: replies with CR inside a
	// line, "/" commands after a CR, encoded-word lookalikes, header
	// lines, very long and many lines, NUL, invalid UTF-8, bidi controls;
	// hostile subjects and summaries.
	f.Fuzz(func(t *testing.T, subject, name, summary string, stage, code byte, text string) {
		relay.refuse([]int{refuseMail, refuseData, refuseEnd}[stage%3], permanentCode(code), text)
		heldWalk(t, k, ann, relay.addr(), subject, name, summary)
	})
}

// heldWalk runs FuzzReleaseHeld's walk against the relay at addr.
func heldWalk(t *testing.T, k *storeKeys, ann *keys.Key, addr, subject, name, summary string) {
	now := mon
	clock := func() time.Time { return now }
	mono := func() time.Duration { return now.Sub(mon) }
	var s *Service
	var fan *announce.Fanout
	s, db := storeService(t, k, func(o *Options) {
		o.Now, o.Mono, o.Quorum = clock, mono, 1
		o.AnnounceKey, o.Channels = ann, []Channel{{Address: "oss-security@lists.test", Tag: "[ex.test]"}}
		fan = announce.New(o.DB, nil, announce.Options{
			List: o.Roster.List(lists.Announce), Project: "ex.test", Key: ann, Now: clock, Mono: mono,
			SMTP: &pipeline.Config{Addr: addr, HeloName: "ex.test", CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second},
			Held: func(tx *bolt.Tx, j announce.Job, _ string) error { return s.AlertRelease(tx, j) },
		})
		o.Announcer = fan
	})
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := announce.Init(tx); err != nil {
			return err
		}
		_, _, _, err := announce.Add(tx, announce.Entry{Address: "reader@example.net"}, now, announce.Options{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	after := uint64(0)
	queued := func(where string, want map[string]int) {
		t.Helper()
		kinds := map[string]int{}
		for _, c := range checkQueued(t, s, db, after, k.readers()) {
			kinds[c.Kind]++
			after = max(after, c.ID)
			if c.Kind == "alert-release-held" || c.Kind == "alert-announce-held" {
				checkQuotedText(t, c)
			}
		}
		for kind, n := range want {
			if kinds[kind] != n {
				t.Fatalf("%s queued %v, want %d of %s", where, kinds, n, kind)
			}
		}
	}
	env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}, Client: "192.0.2.1"}
	if raw, ok := fuzzReport(subject, name, "Steps to reproduce.\n", ""); !ok || s.Handle(context.Background(), env, raw) != nil {
		openIncident(t, s, db, nil)
	}
	queued("the report", nil)
	mail := func(i int, at time.Time, text string) {
		t.Helper()
		now = at
		raw, ok := memberMailTo(k, k.alice, now, fuzzThread, fmt.Sprintf("held%d.fuzz@ex.test", i), "Re: [SEC-2026-0001]", text, i%2 == 1)
		if !ok {
			t.Fatalf("message %d cannot be written", i)
		}
		if err := s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{fuzzThread}}, raw); err != nil {
			t.Fatalf("message %d: refused: %v", i, err)
		}
		queued(fmt.Sprintf("message %d", i), map[string]int{"receipt": 1})
	}
	mail(1, mon.Add(time.Hour), "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n"+
		"/set summary heap overflow in the parser\n/set actor A remote attacker\n/set impact execute code as the server user\n"+
		"/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n/fixed\n/disclose "+heldT.Format(time.DateOnly)+"\n")
	mail(2, mon.Add(2*time.Hour), "/set summary "+summary+"\n") // refused or not, the rest stands

	// T−24 h, not approved: held, and the SRC alerted.
	now = heldT.Add(-workflow.FinalNoticeBefore)
	if err := s.Tick(context.Background(), now); err != nil {
		t.Fatalf("tick at T-24 h: %v", err)
	}
	queued("the tick at T-24 h", map[string]int{"alert-release-held": 2})

	// Approved and released now: the fan-out offers it to the relay, which
	// refuses it; the fan-out holds it, and the SRC is alerted again.
	mail(3, now.Add(time.Hour), "/approve\n/disclose now\n")
	if inc := getIncident(t, db, fuzzIncident); inc.Phase != workflow.PhaseDisclosed {
		t.Fatalf("/disclose now left the incident %s", inc.Phase)
	}
	now = now.Add(time.Hour) // past any hold of the public copies (docs/threat-model.md G5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fan.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(time.Minute)
	for !heldAlerted(t, db, after, "alert-announce-held") {
		if time.Now().After(deadline) {
			t.Fatal("after a minute the fan-out has not held the release the relay refused")
		}
		fan.Kick()
		time.Sleep(5 * time.Millisecond)
	}
	queued("the refused release", map[string]int{"alert-announce-held": 2})
}

// heldAlerted reports whether an alert of kind was queued after row after.
func heldAlerted(t *testing.T, db *bolt.DB, after uint64, kind string) bool {
	t.Helper()
	found := false
	if err := db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			found = found || r.ID > after && r.Kind == kind
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return found
}
