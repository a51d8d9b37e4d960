package daemon_test

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

var confirmAddr = regexp.MustCompile(`announce\+confirm-[a-z0-9]+@ex\.test`)

func swaksTo(t *testing.T, addr, from, to string) {
	t.Helper()
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks not installed (.ci/run installs it)")
	}
	if b, err := exec.Command(swaks, "--server", addr, "--from", from, "--to", to, "--header", "Subject: list", "--body", "please").CombinedOutput(); err != nil {
		t.Fatalf("swaks to %s: %v\n%s", to, err, b)
	}
}

// TestAnnounceEndToEnd: subscribe, confirm, receive the signed advisory at
// the release, unsubscribe, all with real swaks; a replayed token does
// nothing (the lists issue's tests).
func TestAnnounceEndToEnd(t *testing.T) {
	f := newCmdFixtureWith(t, nil, "")
	const sub = "reader@out.test"
	subscribers := func() int {
		var n int
		f.h.D.View(func(tx *bolt.Tx) error { n, _ = announce.Count(tx); return nil })
		return n
	}

	swaksTo(t, f.h.Addr(), sub, "announce+subscribe@ex.test")
	msgs := f.next(1)
	if msgs[0].To[0] != sub {
		t.Fatalf("confirmation went to %v", msgs[0].To)
	}
	confirm := confirmAddr.FindString(daemontest.Body(t, msgs[0]))
	if confirm == "" {
		t.Fatalf("no confirmation address in:\n%s", daemontest.Body(t, msgs[0]))
	}
	if subscribers() != 0 {
		t.Fatal("subscribed before confirming")
	}
	swaksTo(t, f.h.Addr(), sub, confirm)
	f.next(1) // "you are subscribed"
	if subscribers() != 1 {
		t.Fatalf("%d subscribers after confirming, want 1", subscribers())
	}
	// A replayed token does nothing.
	swaksTo(t, f.h.Addr(), sub, confirm)
	if n := len(f.h.Rec.Messages()); n != f.seen && n != f.seen+1 {
		t.Errorf("a replayed token caused %d messages", n-f.seen)
	}
	f.seen = len(f.h.Settle(len(f.h.Rec.Messages())))
	if subscribers() != 1 {
		t.Errorf("%d subscribers after a replayed token", subscribers())
	}

	// The release reaches the subscriber, signed by the announce key.
	f.prepare(t)
	f.discloseNow(0)
	var adv string
	for deadline := time.Now().Add(10 * time.Second); adv == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range f.h.Rec.Messages() {
			if strings.Contains(strings.Join(m.To, ","), sub) && strings.Contains(string(m.Data), "Security Advisory") {
				adv = string(m.Data)
				st := f.reporter.VerifySigned(m.Data)
				daemontest.MustContain(t, "gpg --verify of the announcement", st, "GOODSIG", "VALIDSIG")
			}
		}
	}
	daemontest.MustContain(t, "the announcement", adv, "List-Id:", "List-Unsubscribe:", "List-Post: NO", "[Security Advisory] CVE-2026-12345")

	// Unsubscribe by mail, with its own confirmation.
	time.Sleep(300 * time.Millisecond)
	f.seen = len(f.h.Rec.Messages())
	swaksTo(t, f.h.Addr(), sub, "announce+unsubscribe@ex.test")
	msgs = f.next(1)
	confirm = confirmAddr.FindString(daemontest.Body(t, msgs[0]))
	swaksTo(t, f.h.Addr(), sub, confirm)
	f.next(1)
	var active bool
	f.h.D.View(func(tx *bolt.Tx) error {
		s, ok, _ := announce.Lookup(tx, sub)
		active = ok && s.State == announce.StateActive
		return nil
	})
	if active {
		t.Error("still subscribed after confirming the unsubscribe")
	}
}
