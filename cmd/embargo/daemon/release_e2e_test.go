package daemon_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// TestHeldReleaseResumed: an incident released with /disclose now, whose
// advisory the relay refuses for the announce list (its bounce sender,
// 554 at MAIL) and takes for everyone else. The announce fan-out holds the
// release; each SRC member decrypts, with gpg, an alert (announce-held)
// that says the announce list's copy is held and why, that the rest of the
// release is not (the outside channel has its copy), to fix the relay, and
// to run `embargo release resume`, not /approve. Nothing reaches the
// subscribers while it is held. The relay fixed, the release is resumed
// through the running daemon's control socket (daemon.ReleaseResume, as
// the command line does): every subscriber gets the advisory, signed by
// the announce key (docs/threat-model.md G4).
func TestHeldReleaseResumed(t *testing.T) {
	const channel = "oss-security@lists.invalid"
	f := newCmdFixtureWith(t, nil, "\n[[channels]]\naddress = \""+channel+"\"\nsubject_tag = \"[example]\"\n")
	cfg := f.h.Config()
	subs := []string{"reader1@out.test", "reader2@out.test", "reader3@out.test"}
	bounce, before := refusedRelease(t, f, subs)

	job := func() announce.Job {
		var j announce.Job
		if err := f.h.D.View(func(tx *bolt.Tx) error {
			var err error
			j, err = announce.GetJob(tx, f.id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return j
	}
	daemontest.WaitFor(t, "the announce fan-out to hold the release", func() bool {
		var held bool
		f.h.D.View(func(tx *bolt.Tx) error {
			j, err := announce.GetJob(tx, f.id)
			held = err == nil && j.State == announce.JobHeld
			return nil
		})
		return held
	})
	if j := job(); j.HeldFor != announce.HoldRelay || !strings.Contains(j.Held, "554") {
		t.Fatalf("held release: %+v", j)
	}

	// Each member's alert, decrypted with their own gpg.
	for _, m := range []struct {
		addr string
		g    *daemontest.GPG
	}{{"alice@ex.test", f.alice}, {"bob@ex.test", f.bob}} {
		alert := heldAlert(t, f, m.addr, m.g, before)
		one := strings.Join(strings.Fields(alert), " ")
		daemontest.MustContain(t, "the alert to "+m.addr, one,
			"The announce list's copy of the release of "+f.id+", due at ", "is HELD: the relay refused the message", "554",
			"Nothing more goes to the announce list's subscribers until an operator resumes it.",
			"The rest of the release is not held", "The relay refused the message itself", "Fix the relay",
			"embargo release resume "+f.id)
		if strings.Contains(alert, "/approve") || strings.Contains(alert, "/disclose") {
			t.Errorf("the alert to %s sends the SRC to /approve or /disclose:\n%s", m.addr, alert)
		}
	}
	// The rest of the release went out as the alert says; the subscribers
	// got nothing.
	daemontest.WaitFor(t, "the outside channel's copy", func() bool {
		return len(daemontest.To(f.h.Rec.Messages()[before:], channel)) == 1
	})
	for _, s := range subs {
		if n := len(daemontest.To(f.h.Rec.Messages()[before:], s)); n != 0 {
			t.Fatalf("%s got %d messages while the release was held", s, n)
		}
	}

	// The relay fixed, resumed through the running daemon.
	f.h.Rec.FailMail(bounce, 0)
	out, err := daemon.ReleaseResume(cfg.DataDir, f.id, time.Now())
	if err != nil || out != "release "+f.id+" resumed: it goes on from where it stopped\n" {
		t.Fatalf("ReleaseResume = %q, %v", out, err)
	}
	got := map[string]bool{}
	daemontest.WaitFor(t, "every subscriber to get the advisory", func() bool {
		for _, msg := range f.h.Rec.Messages()[before:] {
			if msg.From != bounce {
				continue
			}
			for _, to := range msg.To {
				if !got[to] {
					got[to] = true
					st := f.reporter.VerifySigned(msg.Data)
					daemontest.MustContain(t, "gpg --verify of the resumed advisory", st, "GOODSIG", "VALIDSIG")
				}
			}
		}
		return len(got) == len(subs)
	})
	for _, s := range subs {
		if !got[s] {
			t.Errorf("%s did not get the advisory (got %v)", s, got)
		}
	}
	daemontest.WaitFor(t, "the release to be recorded released", func() bool { return job().State == announce.JobReleased })
	if j := job(); j.Sent != len(subs) || j.Held != "" {
		t.Errorf("after the resume: %+v", j)
	}
	// Run again (its first answer lost, say): OK, saying it was done, when,
	// and where the release stands.
	out, err = daemon.ReleaseResume(cfg.DataDir, f.id, time.Now())
	if want := "release " + f.id + " was resumed already on " + workflow.FormatInstant(job().ResumedAt) + ": it is released (3 of 3 copies sent, finished " +
		workflow.FormatInstant(job().Finished) + "); nothing to do.\n"; err != nil || out != want {
		t.Errorf("a second resume: %q, %v; want %q", out, err, want)
	}
}

// refusedRelease subscribes subs, has the relay refuse the announce copy
// of f's incident (554 to its bounce sender), prepares the incident and
// releases it with /disclose now. It returns the bounce address and the
// relay's message count before the release.
func refusedRelease(t *testing.T, f *cmdFixture, subs []string) (bounce string, before int) {
	t.Helper()
	cfg := f.h.Config()
	for _, s := range subs {
		if _, err := daemon.Subscribers(cfg, daemon.CtlSubscribersAdd, []string{s}, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.next(len(subs)) // each one's signed notice
	bounce = announce.BounceAddress(daemon.Roster(cfg).List(lists.Announce), f.id)
	f.h.Rec.FailMail(bounce, 554)
	f.prepare(t)
	before = len(f.h.Rec.Messages())
	f.discloseNow(0)
	return bounce, before
}

// heldAlert waits for the announce-held alert to addr among the relay's
// messages from index before on, and returns its text, decrypted with g.
func heldAlert(t *testing.T, f *cmdFixture, addr string, g *daemontest.GPG, before int) string {
	t.Helper()
	seen := map[int]bool{}
	var alert string
	daemontest.WaitFor(t, "the held-release alert to "+addr, func() bool {
		for i, msg := range f.h.Rec.Messages() {
			if i < before || seen[i] || !slices.Contains(msg.To, addr) || !daemontest.ArmorBlock.Match(msg.Data) {
				continue
			}
			seen[i] = true
			plain, _ := g.DecryptMIME(msg.Data)
			if text := daemontest.MIMEText(plain); strings.Contains(text, "announce list's copy") {
				alert = text
				return true
			}
		}
		return false
	})
	return alert
}

// TestHeldReleaseAlertWakesQueue: the fan-out holds a release while the
// delivery worker is idle (nothing queued, so no timer: it waits for a
// kick), and the SRC's alert still leaves at once: the hold's commit
// kicks the worker. Without it the alert waited for the next mail to
// arrive. The release, stored while the daemon was stopped, is due 2 s
// after the start, when the worker has sent everything and sleeps.
func TestHeldReleaseAlertWakesQueue(t *testing.T) {
	f := newCmdFixture(t)
	cfg := f.h.Config()
	if _, err := daemon.Subscribers(cfg, daemon.CtlSubscribersAdd, []string{"reader@out.test"}, nil); err != nil {
		t.Fatal(err)
	}
	f.next(1) // the subscriber's notice
	now := time.Now()
	key, _, err := daemon.ListKey(cfg, config.Announce, now)
	if err != nil {
		t.Fatal(err)
	}
	ann := daemon.Roster(cfg).List(lists.Announce)
	bounce := announce.BounceAddress(ann, f.id)
	f.h.Rec.FailMail(bounce, 554)

	f.h.Stop()
	db, err := bolt.Open(filepath.Join(f.h.Dir, daemon.DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return announce.StartRelease(tx, f.id, bounce, daemontest.SignedAdvisory(t, key, ann, f.id, now), time.Now().Add(2*time.Second))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	before := len(f.h.Rec.Messages())
	f.h.Start()
	alert := heldAlert(t, f, "alice@ex.test", f.alice, before)
	daemontest.MustContain(t, "the alert", strings.Join(strings.Fields(alert), " "), "The announce list's copy of the release of "+f.id, "The relay refused the message itself")
}
