package governance

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/embargo-project/embargo/workflow"
)

// TestApplicationAdmittedByQuorum: an application opens a thread for the
// SRC and acknowledges the applicant; one /admit admits nobody, the same
// member twice counts once, a second member admits: the key is pinned, the
// member added and welcomed, encrypted to that key.
func TestApplicationAdmittedByQuorum(t *testing.T) {
	r, err := Submit(State{}, submission(), t0, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"mail:distributor-application→src", "mail:distributor-application-ack→person@new-distro.test"}) {
		t.Fatalf("actions %v", got)
	}
	app, _ := findMail(r.Actions, "distributor-application")
	ack, _ := findMail(r.Actions, "distributor-application-ack")
	if app.Thread != "GOV-2026-0001" || ack.Key == "" || ack.Fields["deadline"] != "2026-11-28 09:00 UTC (Saturday)" {
		t.Errorf("application %+v\nack %+v", app, ack)
	}
	for k, want := range map[string]string{"fingerprint": fpr('1'), "voucher": "security@old-distro.test", "voucher_status": "a member of the distributors list: ask them to confirm",
		"signed": "yes, by the attached key", "maintained": "releases every month since 2019,\n  see https://new-distro.test/releases", "warnings": ""} {
		if app.Fields[k] != want {
			t.Errorf("application field %s = %q, want %q", k, app.Fields[k], want)
		}
	}
	st := r.State
	id := "GOV-2026-0001"

	r = apply(t, st, "/admit\n", 'A', t0.Add(time.Hour), id)
	if _, ok := member(r.State, "security@new-distro.test"); ok || r.Roster {
		t.Fatal("one approval admitted")
	}
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"mail:two-person-pending→src"}) {
		t.Errorf("first approval: %v", got)
	}
	if rc := r.Receipt.Text(); !strings.Contains(rc, "GOV-2026-0001 has 1 of 2 SRC approvals; awaiting bob@ex.org, dave@ex.org") {
		t.Errorf("receipt:\n%s", rc)
	}
	st = r.State
	r = apply(t, st, "/admit GOV-2026-0001\n", 'A', t0.Add(2*time.Hour), id)
	if len(r.Actions) != 0 || len(r.State.Proposals[0].Approvals) != 1 || !strings.Contains(r.Receipt.Text(), "you already approved") {
		t.Fatalf("same member twice: %v", kinds(r.Actions))
	}

	r = apply(t, st, "/admit\n", 'B', t0.Add(3*time.Hour), id)
	want := []string{"pin-key", "add-member", "mail:distributor-welcome→security@new-distro.test", "mail:roster-change→src"}
	if got := kinds(r.Actions); !reflect.DeepEqual(got, want) || !r.Roster {
		t.Fatalf("second approval: %v, roster %v", got, r.Roster)
	}
	w, _ := findMail(r.Actions, "distributor-welcome")
	if w.Key != submission().Keys[0].Armored || w.Fields["fingerprint"] != fpr('1') || w.Fields["product"] != "New Distro" {
		t.Errorf("welcome %+v", w)
	}
	e, ok := member(r.State, "security@new-distro.test")
	if !ok || e.Origin != OriginApplication || e.Ref != id || !reflect.DeepEqual(e.Roles, []string{"distributor"}) || e.Fingerprint != fpr('1') {
		t.Errorf("entry %+v", e)
	}
	if PinnedKeys(file, r.State)[fpr('1')] == "" {
		t.Error("the new key is not among the pinned keys")
	}
	if s, ok := SignerOf(file, r.State, strings.ToLower(fpr('1')), t0); !ok || s.Email != "security@new-distro.test" || s.Roles[0] != "distributor" {
		t.Errorf("SignerOf new key = %+v, %v", s, ok)
	}
	if p, _ := r.State.Proposal(id); p.Status != StatusPassed || !strings.HasPrefix(p.Outcome, "passed by quorum: 2 SRC approvals (alice@ex.org, bob@ex.org)") {
		t.Errorf("proposal %+v", p)
	}
	// Decided: more votes change nothing.
	if _, err := Apply(r.State, Request{Text: "/admit\n", Signer: signer('D', t0.Add(4*time.Hour)), Thread: id}, t0.Add(4*time.Hour), cfg); !errors.Is(err, ErrNoProposal) {
		t.Errorf("vote on a decided proposal: %v", err)
	}
}

// TestLazyConsensus: one approval and no objection admit at the deadline,
// on the fake clock, once.
func TestLazyConsensus(t *testing.T) {
	st := mustSubmit(t)
	st = apply(t, st, "/admit\n", 'A', t0.Add(24*time.Hour), "GOV-2026-0001").State
	if next := NextDeadline(st, cfg); !next.Equal(t0.Add(DefaultLazyConsensus)) {
		t.Errorf("NextDeadline = %v", next)
	}
	if r := Tick(st, t0.Add(DefaultLazyConsensus-time.Second), cfg); len(r.Actions) != 0 || r.Applied {
		t.Fatalf("a second early: %v", kinds(r.Actions))
	}
	r := Tick(st, t0.Add(DefaultLazyConsensus), cfg)
	if got := kinds(r.Actions); len(got) != 4 || got[2] != "mail:distributor-welcome→security@new-distro.test" || !r.Roster {
		t.Fatalf("at the deadline: %v", got)
	}
	if p, _ := r.State.Proposal("GOV-2026-0001"); !strings.HasPrefix(p.Outcome, "passed by lazy consensus: 1 SRC approval(s) (alice@ex.org) and no objection by 2026-11-28 09:00 UTC") {
		t.Errorf("outcome %q", p.Outcome)
	}
	if again := Tick(r.State, t0.Add(DefaultLazyConsensus+time.Hour), cfg); len(again.Actions) != 0 {
		t.Errorf("second tick: %v", kinds(again.Actions))
	}
	if !NextDeadline(r.State, cfg).IsZero() {
		t.Error("NextDeadline with nothing open")
	}
}

// TestDenialBlocksLazyConsensus: a /deny ends the application at once; the
// applicant gets the reason and how to re-apply.
func TestDenialBlocksLazyConsensus(t *testing.T) {
	st := apply(t, mustSubmit(t), "/admit\n", 'A', t0.Add(time.Hour), "GOV-2026-0001").State
	r := apply(t, st, "/deny no public record of security fixes\n", 'B', t0.Add(2*time.Hour), "GOV-2026-0001")
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"mail:roster-change→src", "mail:distributor-removal→person@new-distro.test"}) {
		t.Fatalf("deny: %v", got)
	}
	m, _ := findMail(r.Actions, "distributor-removal")
	if m.Fields["kind"] != "denied" || m.Fields["reason"] != "no public record of security fixes" || m.Fields["person"] != "bob@ex.org" || m.Key == "" {
		t.Errorf("denial %+v", m)
	}
	if tk := Tick(r.State, t0.Add(30*24*time.Hour), cfg); len(tk.Actions) != 0 {
		t.Errorf("tick after denial: %v", kinds(tk.Actions))
	}
	if _, ok := member(r.State, "security@new-distro.test"); ok {
		t.Error("denied applicant admitted")
	}
}

// TestApplicationExpires: with no approval, nothing passes at the deadline;
// a further period later the application expires and the applicant is told.
func TestApplicationExpires(t *testing.T) {
	st := mustSubmit(t)
	if r := Tick(st, t0.Add(DefaultLazyConsensus), cfg); len(r.Actions) != 0 {
		t.Fatalf("no approval, at the deadline: %v", kinds(r.Actions))
	}
	r := Tick(st, t0.Add(2*DefaultLazyConsensus), cfg)
	m, ok := findMail(r.Actions, "distributor-removal")
	if !ok || m.Fields["kind"] != "expired" || r.Roster {
		t.Fatalf("expiry: %v", kinds(r.Actions))
	}
}

func mustSubmit(t *testing.T) State {
	t.Helper()
	r, err := Submit(State{}, submission(), t0, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r.State
}

// TestApplicationRefused: each reason refuses the application with that
// reason, to the sender, and changes nothing.
func TestApplicationRefused(t *testing.T) {
	weak := key('1', "security@new-distro.test")
	weak.Problems = []string{"keys: weak public-key algorithm: RSA 1024 bits"}
	expired := key('1', "security@new-distro.test")
	expired.Expires = t0.Add(-time.Hour)
	otherUID := key('1', "someone@else.test")
	open := mustSubmit(t)
	for _, tt := range []struct {
		name   string
		st     State
		mod    func(*Submission)
		reason string
	}{
		{"weak key", State{}, func(s *Submission) { s.Keys = []KeyVerdict{weak} }, "weak public-key algorithm: RSA 1024 bits"},
		{"expired key", State{}, func(s *Submission) { s.Keys = []KeyVerdict{expired} }, "the key expired 2026-11-23 08:00 UTC (Monday)"},
		{"no key", State{}, func(s *Submission) { s.Keys = nil }, "no public key is attached"},
		{"two keys", State{}, func(s *Submission) { s.Keys = append(s.Keys, key('2', "x@y.test")) }, "2 keys are attached"},
		{"alias not a user ID", State{}, func(s *Submission) { s.Keys = []KeyVerdict{otherUID} }, "has no user ID with security@new-distro.test"},
		{"form incomplete", State{}, func(s *Submission) { s.Text = strings.Replace(applicationText, "Record:", "Recrd:", 1) }, "Record is missing"},
		{"already open", open, func(*Submission) {}, "an application for security@new-distro.test is already under review"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sub := submission()
			tt.mod(&sub)
			r, err := Submit(tt.st, sub, t0.Add(time.Minute), cfg)
			if !errors.Is(err, ErrRefused) || r.Applied || !reflect.DeepEqual(r.State, tt.st) {
				t.Fatalf("err %v, applied %v", err, r.Applied)
			}
			m, ok := findMail(r.Actions, "distributor-application-refused")
			if !ok || len(r.Actions) != 1 || m.To != "person@new-distro.test" || !strings.Contains(m.Fields["reasons"], tt.reason) || !strings.Contains(m.Fields["form"], "Not-A-Rebuild:") {
				t.Errorf("refusal %+v", r.Actions)
			}
			if tt.name == "weak key" || tt.name == "expired key" {
				if m.Key != "" {
					t.Error("refusal encrypted to an unusable key")
				}
			}
		})
	}
}

// TestApplicationForMember: an alias already on the roster is acknowledged
// like any (no enumeration), flagged to the SRC, and can only be denied.
func TestApplicationForMember(t *testing.T) {
	sub := submission()
	sub.Text = strings.Replace(applicationText, "security@new-distro.test", "security@old-distro.test", 1)
	sub.Keys = []KeyVerdict{key('1', "security@old-distro.test")}
	r, err := Submit(State{}, sub, t0, cfg)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := findMail(r.Actions, "distributor-application")
	if !strings.Contains(app.Fields["warnings"], "ALREADY ON THE ROSTER") {
		t.Errorf("warnings %q", app.Fields["warnings"])
	}
	st := apply(t, r.State, "/admit\n", 'A', t0.Add(time.Minute), "GOV-2026-0001").State
	r = apply(t, st, "/admit\n", 'B', t0.Add(2*time.Minute), "GOV-2026-0001")
	if e, _ := member(r.State, "security@old-distro.test"); e.Fingerprint != fpr('E') || r.Roster {
		t.Errorf("an application replaced a member's key: %+v", e)
	}
	if p, _ := r.State.Proposal("GOV-2026-0001"); p.Status != StatusDenied {
		t.Errorf("status %s", p.Status)
	}
}

func TestParseApplication(t *testing.T) {
	a, problems := ParseApplication(applicationText)
	if len(problems) != 0 || a.Alias != "security@new-distro.test" || a.Product != "New Distro" || a.Contributes != "we review patches and report test results" {
		t.Fatalf("%+v %v", a, problems)
	}
	evil := "product: Evil\u202e Distro\nALIAS: <Sec@Evil.test>\nmaintained: yes\x07\n/admit\n> quoted: no\nusers: many\nrecord: r\nnot-a-rebuild: n\ncommunity: c\nembargo: e\ncontributes: c\nproduct: again\n"
	a, problems = ParseApplication(evil)
	if a.Alias != "sec@evil.test" || a.Maintained != "yes\n/admit" || !reflect.DeepEqual(problems, []string{"Product is given twice"}) {
		t.Errorf("%+v %v", a, problems)
	}
	if strings.ContainsAny(a.Maintained, "\x07\u202e") {
		t.Error("controls kept")
	}
	_, problems = ParseApplication("Alias: not an address\nProduct: two\n  lines\n")
	want := []string{"Alias: \"not an address\" is not an address (local@domain)", "Product takes one line", "Maintained is missing: evidence that it is actively maintained"}
	if len(problems) < 3 || !reflect.DeepEqual(problems[:3], want) {
		t.Errorf("problems %q", problems)
	}
	if _, problems := ParseApplication(strings.Repeat("x", MaxApplicationBytes+1)); len(problems) != 1 {
		t.Errorf("oversize: %v", problems)
	}
	if got := workflow.NamedProposals("see gov-2026-0001 and GOV-2026-0002"); !reflect.DeepEqual(got, []string{"GOV-2026-0001", "GOV-2026-0002"}) {
		t.Errorf("NamedProposals %v", got)
	}
}

// FuzzParseApplication: the parser never panics, and what it keeps is inert:
// no control or bidirectional formatting character in any field.
func FuzzParseApplication(f *testing.F) {
	f.Add(applicationText)
	f.Add("Alias: a@b.c\nProduct: \u202eX\nMaintained:\x00\n -- \n")
	f.Fuzz(func(t *testing.T, s string) {
		a, _ := ParseApplication(s)
		for _, v := range []string{a.Alias, a.Product, a.Voucher, a.Maintained, a.Users, a.Record, a.NotARebuild, a.Community, a.Embargo, a.Contributes} {
			for _, r := range v {
				if r != '\n' && r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
					t.Fatalf("kept %U in %q", r, v)
				}
			}
		}
	})
}
