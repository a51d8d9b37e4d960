package listd

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/governance"
)

// govValues are what FuzzGovernanceRender takes from the fuzzer: the
// applicant's display name and subject, the product and the evidence of
// the application form, the name on the applicant's key, the text the
// applicant writes into the application's thread, and the reason of a
// /deny or /member remove. path picks how the application ends: a second
// /admit, lazy consensus at the tick, or /deny.
type govValues struct {
	name, subject, product, evidence, uid, followUp, reason string
	path                                                    uint8
}

// The applicant of govWalk: who writes, and the security alias that
// joins the distributors list.
const (
	govApplicant = "person@newdistro.test"
	govAlias     = "security@newdistro.test"
)

// FuzzGovernanceRender sends a distributor application whose sender's
// name, subject, product, evidence and key user ID come from the fuzzer,
// the applicant's own mail in the application's thread, the SRC's /admit
// or /deny with a fuzzed reason (or the tick's lazy consensus), and, once
// admitted, /member remove with a fuzzed reason, passed by a second
// signature. Every row queued (the application to the SRC, the
// acknowledgement or the refusal, the copies of the applicant's mail,
// receipts, the welcome, the roster change, the removal notice) is made as
// the delivery worker makes it and checked by checkQueued
// (docs/threat-model.md B2, B10, D6, E5); the applicant's and the alias's
// copies must decrypt with the attached key. Each step must queue what it
// decided (govWalk).
func FuzzGovernanceRender(f *testing.F) {
	k := newStoreKeys(f)
	f.Add("New Distro Security", "application", "New Distro", "releases every month since 2019\nsee https://newdistro.test/releases",
		"New Distro", "Any news?", "no release in two years", uint8(0))
	// More in testdata/fuzz/FuzzGovernanceRender: hostile values (CR and
	// LF, header lines, encoded words, "/" and armor lines, long lines,
	// invalid UTF-8, control and bidi characters), each way to decide.
	f.Fuzz(func(t *testing.T, name, subject, product, evidence, uid, followUp, reason string, path uint8) {
		govWalk(t, k, govValues{name, subject, product, evidence, uid, followUp, reason, path})
	})
}

// TestGovernanceWalk: govWalk, with realistic values, admits the
// applicant each way and removes them, or denies them, so that
// FuzzGovernanceRender's executions render every governance mail.
func TestGovernanceWalk(t *testing.T) {
	k := newStoreKeys(t)
	for path, want := range []map[string]int{
		{"gov-distributor-welcome": 1, "gov-distributor-removal": 3, "gov-roster-change": 2},
		{"gov-distributor-welcome": 1, "gov-distributor-removal": 3, "gov-roster-change": 2},
		{"gov-distributor-removal": 1},
	} {
		got := govWalk(t, k, govValues{"New Distro Security", "application", "New Distro", "releases every month since 2019",
			"New Distro", "Any news?", "no release in two years", uint8(path)})
		// The applicant's mail and the members' in the thread, to the
		// rest of the committee; a receipt for each command mail.
		want["gov-distributor-application"], want["gov-distributor-application-ack"], want["reply-copy"], want["receipt"] = 2, 1, 4, 2
		for kind, n := range want {
			if got[kind] < n {
				t.Errorf("path %d: %d rows of %s, want at least %d (all: %v)", path, got[kind], kind, n, got)
			}
		}
	}
}

// govWalk runs the governance steps on a service whose clocks move
// together, checks every row queued with checkQueued, and returns how
// many rows of each kind were queued. The application must queue the
// SRC's copies and the acknowledgement, or the refusal; the applicant's
// mail, a copy to each member; each signed command mail, one receipt; a
// proposal that passed, its welcome or removal notice and the roster
// change; an application denied, the notice to the applicant.
func govWalk(t *testing.T, k *storeKeys, v govValues) map[string]int {
	now := mon
	s, db := storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.Mono = func() time.Duration { return now.Sub(mon) }
	})
	app := k.applicant
	if key, err := keys.GenerateListKey(v.uid, govAlias, ko); err == nil {
		app = key
	}
	readers := k.readers()
	readers[govApplicant], readers[govAlias] = app, app
	total := map[string]int{}
	after := uint64(0)
	step := func(where string, send func() error) map[string]int {
		before := govState(t, db)
		if err := send(); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		kinds := map[string]int{}
		for _, c := range checkQueued(t, s, db, after, readers) {
			kinds[c.Kind]++
			total[c.Kind]++
			after = max(after, c.ID)
		}
		for kind, n := range govWants(before, govState(t, db)) {
			if kinds[kind] < n {
				t.Fatalf("%s queued %v, want at least %d of %s", where, kinds, n, kind)
			}
		}
		return kinds
	}
	kinds := step("the application", func() error { return govApplication(s, app, v) })
	if _, open := govState(t, db)["GOV-2026-0001"]; !open {
		if kinds["gov-distributor-application-refused"] != 1 {
			t.Fatalf("an application that opened nothing queued %v, want the refusal", kinds)
		}
		return total
	}
	thread := "security+GOV-2026-0001@ex.test"
	step("the applicant's mail", func() error {
		now = now.Add(time.Hour)
		env := Envelope{From: govApplicant, To: []string{thread}}
		raw, ok := fuzzMail(govApplicant, v.name, thread, "Re: [GOV-2026-0001] "+v.subject, "follow.fuzz@newdistro.test", v.followUp)
		if ok && s.Handle(context.Background(), env, raw) == nil {
			return nil
		}
		// Not written, or refused: nothing stored; a plain one instead.
		return s.Handle(context.Background(), env, plainMail(govApplicant, thread, "Re: [GOV-2026-0001]", "follow.fuzz@newdistro.test", "Any news?\n"))
	})
	signed := func(who *keys.Key, to, text string) func() error {
		return func() error {
			now = now.Add(time.Hour)
			raw, ok := memberMailTo(k, who, now, to, fmt.Sprintf("gov.%d.fuzz@ex.test", now.Unix()), "Re: [GOV]", text, now.Hour()%2 == 0)
			if !ok {
				return fmt.Errorf("%s's mail cannot be written", who.Email())
			}
			return s.Handle(context.Background(), Envelope{From: who.Email(), To: []string{to}}, raw)
		}
	}
	step("alice's /admit", signed(k.alice, thread, "/admit\n"))
	switch v.path % 3 {
	case 0:
		step("bob's /admit", signed(k.bob, thread, "/admit\n"))
	case 1:
		step("lazy consensus", func() error {
			now = mon.Add(governance.DefaultLazyConsensus + time.Minute)
			return s.Tick(context.Background(), now)
		})
	case 2:
		step("bob's /deny", signed(k.bob, thread, "/deny "+v.reason+"\n"))
	}
	if govState(t, db)["GOV-2026-0001"] != governance.StatusPassed {
		return total
	}
	step("alice's /member remove", signed(k.alice, "security@ex.test", "/member remove "+govAlias+" "+v.reason+"\n"))
	if _, open := govState(t, db)["GOV-2026-0002"]; open {
		step("bob's /admit of the removal", signed(k.bob, "security+GOV-2026-0002@ex.test", "/admit\n"))
	}
	return total
}

// govApplication sends the application of govWalk to distributors+apply@:
// the form, with the fuzzed product and evidence, and the applicant's key
// attached; a fixed one when the fuzzed one cannot be written as mail.
func govApplication(s *Service, app *keys.Key, v govValues) error {
	pub, err := app.ArmoredPublic()
	if err != nil {
		return err
	}
	form := func(product, evidence string) string {
		return "Alias: " + govAlias + "\nProduct: " + product + "\nMaintained: " + evidence + "\nUsers: many\nRecord: https://newdistro.test/sec\n" +
			"Not-A-Rebuild: our own kernel\nCommunity: yes\nEmbargo: accepted\nContributes: reviews\n"
	}
	key := fuzzAttachment{name: "key.asc", ctype: "application/pgp-keys", data: pub}
	env := Envelope{From: govApplicant, To: []string{"distributors+apply@ex.test"}}
	raw, ok := fuzzMail(govApplicant, v.name, "distributors+apply@ex.test", v.subject, "app.fuzz@newdistro.test", form(v.product, v.evidence), key)
	if ok && s.Handle(context.Background(), env, raw) == nil {
		return nil
	}
	// Not written, or refused: nothing stored; a plain one instead.
	raw, _ = fuzzMail(govApplicant, "", "distributors+apply@ex.test", "application", "app.fuzz@newdistro.test", form("New Distro", "yes"), key)
	return s.Handle(context.Background(), env, raw)
}

// govState is the status of each proposal in the governance record.
func govState(t *testing.T, db *bolt.DB) map[string]governance.Status {
	t.Helper()
	out := map[string]governance.Status{}
	if err := db.View(func(tx *bolt.Tx) error {
		st, err := govdb.Load(tx)
		for _, p := range st.Proposals {
			out[p.ID] = p.Status
		}
		return err
	}); err != nil {
		t.Fatalf("reading the governance record: %v", err)
	}
	return out
}

// govWants is what a step must have queued, at least, from how it changed
// the proposals: a new application, its copies to the SRC and the
// acknowledgement; an application passed, the welcome and the roster
// change to the SRC; a removal passed, the notice to the member and its
// copies to the SRC; an application denied, the notice to the applicant.
func govWants(before, after map[string]governance.Status) map[string]int {
	want := map[string]int{}
	for id, st := range after {
		was, existed := before[id]
		switch {
		case id == "GOV-2026-0001" && !existed:
			want["gov-distributor-application"], want["gov-distributor-application-ack"] = 2, 1
		case was == st:
		case id == "GOV-2026-0001" && st == governance.StatusPassed:
			want["gov-distributor-welcome"], want["gov-roster-change"] = 1, 2
		case id == "GOV-2026-0001" && st == governance.StatusDenied:
			want["gov-distributor-removal"] = 1
		case st == governance.StatusPassed:
			want["gov-distributor-removal"] = 3
		}
	}
	return want
}
