package listd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// Monday 2026-11-23 09:00 UTC.
var mon = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// tickService is a Service on a fresh store with two SRC members whose keys
// are made in-process (reminders are encrypted: keyless members get none).
func tickService(t testing.TB) (*Service, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	}); err != nil {
		t.Fatal(err)
	}
	return tickServiceOn(t, db), db
}

// tickServiceOn is a Service on an existing store: a new process, whose
// monotonic clock starts again. with changes its options.
func tickServiceOn(t testing.TB, db *bolt.DB, with ...func(*Options)) *Service {
	t.Helper()
	tmpl, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	ko := keys.Options{Now: func() time.Time { return mon.Add(-time.Hour) }}
	list, err := keys.GenerateListKey("security", "security@ex.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	var ring []*keys.Key
	roster := &lists.Roster{Lists: []lists.List{{Name: lists.Security, Address: "security@ex.test", Encryption: "optional", OuterSubject: "Encrypted message"}}}
	for _, a := range []string{"alice@ex.test", "bob@ex.test"} {
		k, err := keys.GenerateListKey(a, a, ko)
		if err != nil {
			t.Fatal(err)
		}
		ring = append(ring, k)
		roster.Members = append(roster.Members, lists.Member{Email: a, Roles: []string{"src"}, Fingerprint: k.Fingerprint()})
	}
	o := Options{DB: db, Roster: roster, Templates: tmpl, Project: "ex.test", ListKey: list, Members: keys.NewKeyring(ring...),
		Now:      func() time.Time { return mon }, // the keys' clock
		Rotation: workflow.Rotation{Members: []string{"alice@ex.test", "bob@ex.test"}}}
	for _, f := range with {
		f(&o)
	}
	return New(o)
}

func put(t testing.TB, db *bolt.DB, incs ...workflow.Incident) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		for i := range incs {
			if err := incidentdb.Put(tx, &incs[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func queued(t testing.TB, db *bolt.DB) []queue.Row {
	t.Helper()
	var rows []queue.Row
	db.View(func(tx *bolt.Tx) error {
		var err error
		rows, err = queue.List(tx)
		return err
	})
	return rows
}

// TestServiceTick: a due reminder commits with its marker, once; the digest
// waits for the next Monday after a first start, then goes out once a week.
func TestServiceTick(t *testing.T) {
	s, db := tickService(t)
	inc := workflow.Incident{Version: workflow.SchemaVersion, ID: "SEC-2026-0001", Phase: workflow.PhaseTriage, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", Commander: "bob@ex.test"}
	put(t, db, inc)
	ctx := context.Background()
	kinds := func() string {
		var k []string
		for _, r := range queued(t, db) {
			k = append(k, r.Kind+":"+strings.Join(r.To, ","))
		}
		return strings.Join(k, " ")
	}
	if err := s.Tick(ctx, mon.Add(24*time.Hour-time.Minute)); err != nil || kinds() != "" {
		t.Fatalf("a minute before the triage reminder: %v %q", err, kinds())
	}
	for i := 0; i < 3; i++ { // the same minute again, and after a "restart"
		if err := s.Tick(ctx, mon.Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if got := kinds(); got != "reminder:bob@ex.test" {
		t.Fatalf("after the triage reminder: %q, want one reminder to the commander", got)
	}
	// Monday next week: the digest, once, to both members.
	for i := 0; i < 2; i++ {
		if err := s.Tick(ctx, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	// The escalation (3 working days: Thursday 09:00) fell due too: it goes to
	// the whole SRC, before the digest.
	if got, want := kinds(), "reminder:bob@ex.test reminder:alice@ex.test reminder:bob@ex.test digest:alice@ex.test digest:bob@ex.test"; got != want {
		t.Fatalf("queue: %s\nwant %s", got, want)
	}
	n := 0
	for _, r := range queued(t, db) {
		if r.Kind == "digest" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("digests = %d, want 2 (one per member): %s", n, kinds())
	}
}

// BenchmarkTick measures the once-a-minute sweep when nothing is due, the
// common case: every incident read and decoded, workflow.Tick on the open
// ones. The figures are in Service.Tick's comment.
func BenchmarkTick(b *testing.B) {
	for _, tc := range []struct{ total, open int }{{1000, 200}, {10000, 200}, {10000, 10000}, {20000, 20000}} {
		b.Run(fmt.Sprintf("incidents=%d/open=%d", tc.total, tc.open), func(b *testing.B) {
			s, db := tickService(b)
			var incs []workflow.Incident
			for i := 0; i < tc.total; i++ {
				inc := workflow.Incident{Version: workflow.SchemaVersion, ID: workflow.FormatID(2026, uint64(i+1)), Phase: workflow.PhaseFix,
					Opened: mon, Updated: mon, Reporter: "rep@out.test", FixLead: "alice@ex.test", FixTeam: []string{"eng@ex.test"},
					AcceptedAt: mon, TriagedAt: mon, FixTeamAt: mon, FixedAt: mon, CVSSVector: "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N",
					CVEs: []string{"CVE-2026-1234"}, Subject: "a report subject of some length", Advisory: workflow.Advisory{Summary: "summary", Affected: "x 1.0"}}
				for j := 0; j < 10; j++ {
					inc.History = append(inc.History, workflow.Change{At: mon, Fingerprint: "0123456789ABCDEF0123456789ABCDEF01234567", Email: "alice@ex.test", Command: "/set summary a summary", What: "summary set"})
				}
				if i >= tc.open {
					inc.Phase, inc.Resolution, inc.ClosedAt = workflow.PhaseClosed, workflow.ResolutionFixed, mon
				}
				incs = append(incs, inc)
			}
			put(b, db, incs...)
			now := mon.Add(2 * time.Hour)
			if err := s.Tick(context.Background(), now); err != nil { // the digest marker
				b.Fatal(err)
			}
			before := len(queued(b, db))
			b.ResetTimer()
			for b.Loop() {
				if err := s.Tick(context.Background(), now); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if after := len(queued(b, db)); after != before {
				b.Fatalf("the sweep sent %d messages; nothing was due", after-before)
			}
		})
	}
}

// TestReleaseHeldOnClockJump: a release whose T falls inside a forward jump of
// the wall clock, or inside a downtime, is held and the SRC alerted once; the
// hold is stored in the incident (HeldAt, and the alert in its history), so
// the next, plausible ticks neither release nor alert again; a clock that
// walks to T releases (docs/threat-model.md G4).
func TestReleaseHeldOnClockJump(t *testing.T) {
	T := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	ready := workflow.Incident{Version: workflow.SchemaVersion, ID: "SEC-2026-0001", Phase: workflow.PhaseFix, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", T: T, Approved: true, ApprovedAt: T.Add(-72 * time.Hour),
		Advisory: workflow.Advisory{Summary: "s", Actor: "a", Impact: "i", Affected: "x", Fixed: "y"}}
	kinds := func(db *bolt.DB) string {
		var k []string
		for _, r := range queued(t, db) {
			k = append(k, r.Kind)
		}
		return strings.Join(k, " ")
	}
	get := func(db *bolt.DB) *workflow.Incident {
		var inc *workflow.Incident
		db.View(func(tx *bolt.Tx) error { inc, _ = incidentdb.Get(tx, ready.ID); return nil })
		return inc
	}
	// held checks one stored hold at at, with its alert, and no release.
	held := func(t *testing.T, db *bolt.DB, at time.Time, why string) {
		t.Helper()
		inc := get(db)
		if inc.Phase == workflow.PhaseDisclosed {
			t.Fatal("released across the gap")
		}
		if !inc.HeldAt.Equal(at) {
			t.Errorf("HeldAt %v, want %v: the hold is not stored in the incident", inc.HeldAt, at)
		}
		inHistory := false
		for _, h := range inc.History {
			inHistory = inHistory || (h.At.Equal(at) && h.Command == "(tick)" && strings.Contains(h.What, why))
		}
		if !inHistory {
			t.Errorf("the hold is not in the history: %+v", inc.History)
		}
		if got := kinds(db); strings.Count(got, "alert-release-held") != 2 || strings.Contains(got, "release-pack") || strings.Contains(got, "advisory") {
			t.Errorf("queue: %q, want one held-release alert per member, once, and no release", got)
		}
	}
	ctx := context.Background()

	t.Run("jump", func(t *testing.T) {
		s, db := tickService(t)
		put(t, db, ready)
		if err := s.Tick(ctx, T.Add(-5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		// The wall clock leaps 30 days; the monotonic clock saw 1 minute.
		for i := 0; i < 3; i++ {
			if err := s.Tick(ctx, T.Add(30*24*time.Hour).Add(time.Duration(i)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		held(t, db, T.Add(30*24*time.Hour), "the clock moved from")
	})
	// Down from T-20 min to T+5 min: the new process cannot tell the gap
	// from a jump. One alert, stored, even when the ticks that follow pass
	// T+10 min (workflow.ReleaseGrace), where a late release is held anyway.
	t.Run("down until just after T", func(t *testing.T) {
		s, db := tickService(t)
		put(t, db, ready)
		if err := s.Tick(ctx, T.Add(-20*time.Minute)); err != nil {
			t.Fatal(err)
		}
		s = tickServiceOn(t, db)
		for m := 5; m <= 15; m++ {
			if err := s.Tick(ctx, T.Add(time.Duration(m)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		held(t, db, T.Add(5*time.Minute), "the clock moved from 2026-12-03 15:40 UTC")
	})
	t.Run("walk", func(t *testing.T) {
		s, db := tickService(t)
		put(t, db, ready)
		for m := -3; m <= 0; m++ {
			if err := s.Tick(ctx, T.Add(time.Duration(m)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		if inc := get(db); inc.Phase != workflow.PhaseDisclosed {
			t.Errorf("phase %s at T on a walking clock, want disclosed", inc.Phase)
		}
	})
}
