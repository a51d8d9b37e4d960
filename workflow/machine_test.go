package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Monday 2026-11-23 09:00 UTC: the fake clock of these tests.
var mon = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

var (
	alice = Signer{Fingerprint: "A11CE", Email: "alice@ex.org", Roles: []string{RoleSRC}}
	bob   = Signer{Fingerprint: "B0B", Email: "bob@ex.org", Roles: []string{RoleSRC}}
	carol = Signer{Fingerprint: "CA201", Email: "carol@ex.org", Roles: []string{RoleAssociate}}
	eng   = Signer{Fingerprint: "E26", Email: "eng@ex.org"}                                            // on the fix team of the fixtures
	dist  = Signer{Fingerprint: "D157", Email: "vendor@distro.test", Roles: []string{RoleDistributor}} // a distributor
	rep   = Signer{Fingerprint: "2E9", Email: "rep@out.test"}                                          // the reporter, with a key
	rm    = Signer{Fingerprint: "2EE", Email: "rm@ex.org", Roles: []string{RoleReleaseManager}}
	env   = Env{SRC: []string{"alice@ex.org", "bob@ex.org", "dave@ex.org"}, MessageID: "m1@ex.org"}
)

func at(s Signer, t time.Time) Signer { s.SignedAt = t; return s }

// triage is a fresh report.
func triage() Incident {
	return Incident{Version: 1, ID: "SEC-2026-0001", Phase: PhaseTriage, Opened: mon.Add(-time.Hour), Updated: mon.Add(-time.Hour), Reporter: "rep@out.test", Messages: 1}
}

// step applies text as s at now and fails the test on error.
func step(t *testing.T, inc Incident, text string, s Signer, now time.Time) Result {
	t.Helper()
	r, err := Apply(inc, text, at(s, now), now, env)
	if err != nil {
		t.Fatalf("Apply(%q) error: %v", text, err)
	}
	return r
}

// fix is an accepted, High incident with a fix team.
func fix(t *testing.T) Incident {
	return step(t, triage(), "/accept\n/fixteam add eng@ex.org\n/cvss CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N\n", alice, mon).Incident
}

// ready has everything /notify and /approve need, with a CVE and T 10 days out.
func ready(t *testing.T) Incident {
	return step(t, fix(t), `/cve CVE-2026-1234
/set summary Node authorizer bypass
/set actor An authenticated node
/set impact read any secret
/set affected kubelet v1.30.0 - v1.30.4
/set mitigation <<END
Disable the feature gate.
END
/fixed
/disclose 2026-12-03
`, alice, mon).Incident
}

// notified has been through /notify.
func notified(t *testing.T) Incident {
	return step(t, ready(t), "/notify\n", alice, mon).Incident
}

func describe(as []Action) []string {
	var out []string
	for _, a := range as {
		switch a := a.(type) {
		case ReporterMail:
			out = append(out, "reporter:"+a.Template)
		case DistributorNotice:
			s := "notice:" + FormatInstant(a.T)
			if a.Renotify {
				s += " was " + FormatInstant(a.Previous)
			}
			out = append(out, s)
		case EmbargoLifted:
			out = append(out, "embargo-lifted")
		case Release:
			out = append(out, "release:"+FormatInstant(a.At))
		case AlertSRC:
			out = append(out, "alert:"+a.Template)
		case StatusReply:
			out = append(out, "status")
		case HelpReply:
			out = append(out, "help")
		default:
			out = append(out, a.Kind())
		}
	}
	return out
}

type commandCase struct {
	name    string
	inc     func(*testing.T) Incident
	text    string
	by      Signer
	now     time.Time // zero: mon
	err     error     // sentinel the error must match; nil for success
	actions []string  // for success
	check   func(*testing.T, Incident)
	result  string // substring of the first command's receipt result
}

// commandsCases is TestCommands's table.
var commandsCases = []commandCase{
	{name: "accept round-robin", inc: func(*testing.T) Incident { return triage() }, text: "/accept\n", by: alice,
		actions: []string{"reporter:accepted"}, result: "phase triage → fix; Fix Lead alice@ex.org (round-robin)",
		check: func(t *testing.T, inc Incident) {
			if inc.Phase != PhaseFix || inc.FixLead != "alice@ex.org" || !inc.AcceptedAt.Equal(mon) || !inc.TriagedAt.Equal(mon) {
				t.Errorf("got %v lead %q", inc.Phase, inc.FixLead)
			}
		}},
	{name: "accept with /lead after", inc: func(*testing.T) Incident { return triage() }, text: "/accept\n/lead bob@ex.org\n", by: alice,
		actions: []string{"reporter:accepted"}, check: func(t *testing.T, inc Incident) {
			if inc.FixLead != "bob@ex.org" {
				t.Errorf("lead %q", inc.FixLead)
			}
		}},
	{name: "accept with /lead me before", inc: func(*testing.T) Incident { return triage() }, text: "/lead me\n/accept\n", by: bob, actions: []string{"reporter:accepted"},
		result: "Fix Lead bob@ex.org", check: func(t *testing.T, inc Incident) {
			if inc.FixLead != "bob@ex.org" {
				t.Errorf("lead %q", inc.FixLead)
			}
		}},
	{name: "accept twice", inc: fix, text: "/accept\n", by: alice, err: ErrPhase},
	{name: "accept without SRC", inc: func(*testing.T) Incident { return triage() }, text: "/accept\n", by: alice, err: ErrGuard},
	{name: "lead not SRC", inc: fix, text: "/lead mallory@evil.test\n", by: alice, err: ErrGuard},
	{name: "reject", inc: func(*testing.T) Incident { return triage() }, text: "/reject clickjacking\n", by: alice,
		actions: []string{"reporter:canned-clickjacking"}, check: func(t *testing.T, inc Incident) {
			if inc.Phase != PhaseClosed || inc.Resolution != ResolutionNotAVulnerability || inc.ClosedAt.IsZero() {
				t.Errorf("got %v %v", inc.Phase, inc.Resolution)
			}
		}},
	{name: "reject out of scope", inc: func(*testing.T) Incident { return triage() }, text: "/reject out-of-scope\n", by: alice,
		actions: []string{"reporter:canned-out-of-scope"}, check: func(t *testing.T, inc Incident) {
			if inc.Resolution != ResolutionOutOfScope {
				t.Errorf("got %v", inc.Resolution)
			}
		}},
	{name: "reject in embargo", inc: notified, text: "/reject spf\n", by: alice, err: ErrPhase},
	{name: "duplicate", inc: func(*testing.T) Incident { return triage() }, text: "/duplicate SEC-2026-0003\n", by: alice,
		actions: []string{"reporter:duplicate"}, check: func(t *testing.T, inc Incident) {
			if inc.Resolution != ResolutionDuplicate || inc.DuplicateOf != "SEC-2026-0003" {
				t.Errorf("got %v %v", inc.Resolution, inc.DuplicateOf)
			}
		}},
	{name: "duplicate of itself", inc: func(*testing.T) Incident { return triage() }, text: "/duplicate SEC-2026-0001\n", by: alice, err: ErrGuard},
	{name: "handoff", inc: func(*testing.T) Incident { return triage() }, text: "/handoff security@other.example\n", by: alice,
		actions: []string{"reporter:handoff"}, check: func(t *testing.T, inc Incident) {
			if inc.Resolution != ResolutionHandedOff || inc.HandedOffTo != "security@other.example" {
				t.Errorf("got %v %v", inc.Resolution, inc.HandedOffTo)
			}
		}},
	{name: "fixteam add and remove", inc: fix, text: "/fixteam add a@ex.org b@ex.org\n/fixteam remove eng@ex.org\n", by: alice,
		check: func(t *testing.T, inc Incident) {
			if want := []string{"a@ex.org", "b@ex.org"}; !reflect.DeepEqual(inc.FixTeam, want) || inc.FixTeamAt.IsZero() {
				t.Errorf("fix team %v, want %v", inc.FixTeam, want)
			}
		}},
	{name: "fixteam remove stranger", inc: fix, text: "/fixteam remove x@ex.org\n", by: alice, err: ErrGuard},
	{name: "cvss 4.0", inc: fix, text: "/cvss CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N\n", by: alice,
		result: "score 9.3, Critical", check: func(t *testing.T, inc Incident) {
			if inc.Severity() != SeverityCritical {
				t.Errorf("severity %v", inc.Severity())
			}
		}},
	{name: "severity override", inc: fix, text: "/severity medium\n", by: alice, result: "severity Medium (override; CVSS 8.1 says High)",
		check: func(t *testing.T, inc Incident) {
			if inc.Severity() != SeverityMedium {
				t.Errorf("severity %v", inc.Severity())
			}
		}},
	{name: "severity auto", inc: fix, text: "/severity low\n/severity auto\n", by: alice, check: func(t *testing.T, inc Incident) {
		if inc.Severity() != SeverityHigh {
			t.Errorf("severity %v", inc.Severity())
		}
	}},
	{name: "cve", inc: fix, text: "/cve CVE-2026-1 CVE-2026-1234\n", by: alice, err: ErrBadCVE},
	{name: "cve replaces", inc: ready, text: "/cve CVE-2026-9999\n", by: alice, check: func(t *testing.T, inc Incident) {
		if !reflect.DeepEqual(inc.CVEs, []string{"CVE-2026-9999"}) {
			t.Errorf("CVEs %v", inc.CVEs)
		}
	}},
	{name: "set multi-line", inc: fix, text: "/set affected <<END\nkubelet v1.30.0 - v1.30.4\nkubelet <= v1.29.8\nEND\n", by: alice,
		result: "affected set (2 lines)", check: func(t *testing.T, inc Incident) {
			if inc.Advisory.Affected != "kubelet v1.30.0 - v1.30.4\nkubelet <= v1.29.8" {
				t.Errorf("affected %q", inc.Advisory.Affected)
			}
		}},
	{name: "set clear", inc: ready, text: "/set mitigation <<END\nEND\n", by: alice, result: "mitigation cleared"},
	{name: "set by fix team", inc: fix, text: "/set detection <<END\nlook for 403s\nEND\n", by: eng},
	{name: "set when approved", inc: func(t *testing.T) Incident { return step(t, ready(t), "/approve\n", alice, mon).Incident },
		text: "/set summary Another summary\n", by: alice, err: ErrLocked},
	{name: "cvss when approved", inc: func(t *testing.T) Incident { return step(t, ready(t), "/approve\n", alice, mon).Incident },
		text: "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", by: alice, err: ErrLocked},
	{name: "set after withdraw", inc: func(t *testing.T) Incident { return step(t, ready(t), "/approve\n", alice, mon).Incident },
		text: "/approve withdraw\n/set summary Another summary\n/approve\n", by: alice, check: func(t *testing.T, inc Incident) {
			if !inc.Approved || inc.Advisory.Summary != "Another summary" {
				t.Errorf("approved %v summary %q", inc.Approved, inc.Advisory.Summary)
			}
		}},
	{name: "fixed", inc: fix, text: "/fixed\n", by: eng, actions: []string{"reporter:fixed"}},
	{name: "fixed in triage", inc: func(*testing.T) Incident { return triage() }, text: "/fixed\n", by: alice, err: ErrPhase},
	{name: "fix team may not accept", inc: fix, text: "/notify\n", by: eng, err: ErrNotAllowed},
	{name: "disclose snaps Friday to Monday", inc: fix, text: "/disclose 2026-12-04\n", by: alice, actions: []string{"reporter:date"},
		result: "T = 2026-12-07 16:00 UTC (Monday) (asked 2026-12-04 16:00 UTC (Friday)", check: func(t *testing.T, inc Incident) {
			if want := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC); !inc.T.Equal(want) {
				t.Errorf("T = %v, want %v", inc.T, want)
			}
		}},
	{name: "disclose in the past", inc: fix, text: "/disclose 2026-11-20\n", by: alice, err: ErrPast},
	{name: "disclose earlier today", inc: fix, text: "/disclose 2026-11-23T08:00Z\n", by: alice, err: ErrPast},
	{name: "disclose too far", inc: fix, text: "/disclose 2027-06-01\n", by: alice, err: ErrGuard},
	{name: "disclose in triage", inc: func(*testing.T) Incident { return triage() }, text: "/disclose 2026-12-03\n", by: alice, err: ErrPhase},
	{name: "disclose now needs approval", inc: notified, text: "/disclose now\n", by: alice, err: ErrGuard},
	{name: "disclose now", inc: func(t *testing.T) Incident { return step(t, notified(t), "/approve\n", alice, mon).Incident },
		text: "/disclose now\n", by: alice, now: mon.Add(2 * time.Hour),
		actions: []string{"embargo-lifted", "release:2026-11-23 11:00 UTC (Monday)", "reporter:disclosed"},
		check: func(t *testing.T, inc Incident) {
			if inc.Phase != PhaseDisclosed || !inc.DisclosedAt.Equal(mon.Add(2*time.Hour)) || !inc.T.Equal(inc.DisclosedAt) {
				t.Errorf("phase %v disclosed %v T %v", inc.Phase, inc.DisclosedAt, inc.T)
			}
		}},
	{name: "disclose now before notice", inc: func(t *testing.T) Incident { return step(t, ready(t), "/approve\n", alice, mon).Incident },
		text: "/disclose now\n", by: alice, actions: []string{"release:2026-11-23 09:00 UTC (Monday)", "reporter:disclosed"}},
	{name: "date change re-notifies", inc: notified, text: "/disclose 2026-12-10\n", by: alice,
		actions: []string{"notice:2026-12-10 16:00 UTC (Thursday) was 2026-12-03 16:00 UTC (Thursday)", "reporter:date"},
		check: func(t *testing.T, inc Incident) {
			if !inc.NotifiedT.Equal(inc.T) || !inc.NotifiedAt.Equal(mon) {
				t.Errorf("notified T %v at %v", inc.NotifiedT, inc.NotifiedAt)
			}
		}},
	{name: "same date again", inc: notified, text: "/disclose 2026-12-03T16:00Z\n", by: alice, result: "unchanged"},
	{name: "notify", inc: ready, text: "/notify\n", by: alice, actions: []string{"notice:2026-12-03 16:00 UTC (Thursday)"},
		check: func(t *testing.T, inc Incident) {
			if inc.Phase != PhaseEmbargo || !inc.NotifiedAt.Equal(mon) {
				t.Errorf("phase %v notified %v", inc.Phase, inc.NotifiedAt)
			}
		}},
	{name: "notify needs T and fix", inc: fix, text: "/notify\n", by: alice, err: ErrGuard},
	{name: "notify needs severity", inc: func(t *testing.T) Incident {
		return step(t, triage(), "/accept\n/set mitigation off\n/disclose 2026-12-03\n", alice, mon).Incident
	}, text: "/notify\n", by: alice, err: ErrGuard},
	{name: "notify again", inc: notified, text: "/notify\n", by: alice, actions: []string{"notice:2026-12-03 16:00 UTC (Thursday) was 2026-12-03 16:00 UTC (Thursday)"}},
	{name: "approve incomplete", inc: fix, text: "/approve\n", by: alice, err: ErrGuard},
	{name: "public", inc: fix, text: "/public\n", by: alice, check: func(t *testing.T, inc Incident) {
		for _, d := range Deadlines(inc, nil) {
			if d.Open() && d.Name != "stale" && !d.ASAP {
				t.Errorf("deadline %s not ASAP", d.Name)
			}
		}
	}},
	{name: "embargo break", inc: notified, text: "/embargo-break\n", by: alice, actions: []string{"alert:embargo-break"},
		check: func(t *testing.T, inc Incident) {
			if !inc.EmbargoBroken || !inc.ASAP() {
				t.Errorf("broken %v", inc.EmbargoBroken)
			}
		}},
	{name: "defer high", inc: fix, text: "/defer\n", by: alice, err: ErrGuard},
	{name: "defer low", inc: fix, text: "/severity low\n/defer\n", by: alice, check: func(t *testing.T, inc Incident) {
		if !inc.Deferred {
			t.Error("not deferred")
		}
	}},
	{name: "reply", inc: fix, text: "/reply <<END\nThanks.\n\nWe are on it.\nEND\n", by: alice, actions: []string{"reporter:reply"}},
	{name: "retro before disclosure", inc: notified, text: "/retro\n", by: alice, err: ErrPhase},
	{name: "close in embargo", inc: notified, text: "/close fixed\n", by: alice, err: ErrPhase},
	{name: "close needs resolution", inc: fix, text: "/close\n", by: alice, err: ErrGuard},
	{name: "close and reopen", inc: fix, text: "/close out-of-scope\n/reopen\n", by: alice, check: func(t *testing.T, inc Incident) {
		if inc.Phase != PhaseFix || inc.Resolution != ResolutionUnset {
			t.Errorf("phase %v resolution %v", inc.Phase, inc.Resolution)
		}
	}},
	{name: "reopen open", inc: fix, text: "/reopen\n", by: alice, err: ErrPhase},
	{name: "status", inc: notified, text: "/status\n", by: eng, actions: []string{"status"}},
	{name: "help", inc: fix, text: "/help\n", by: alice, actions: []string{"help"}},
	{name: "associate on low", inc: func(t *testing.T) Incident { return step(t, fix(t), "/severity low\n", alice, mon).Incident },
		text: "/cve CVE-2026-4242\n", by: carol},
	{name: "associate on public", inc: func(t *testing.T) Incident { return step(t, fix(t), "/public\n", alice, mon).Incident },
		text: "/set summary x\n", by: carol},
	{name: "associate on unrated", inc: func(*testing.T) Incident { return triage() }, text: "/accept\n", by: carol, err: ErrNotAllowed},
	{name: "release manager", inc: fix, text: "/status\n", by: rm, err: ErrNotAllowed},
}

func TestCommands(t *testing.T) {
	tests := commandsCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc(t)
			now := tt.now
			if now.IsZero() {
				now = mon
			}
			e := env
			if tt.name == "accept without SRC" {
				e.SRC = nil
			}
			before, _ := json.Marshal(inc)
			r, err := Apply(inc, tt.text, at(tt.by, now), now, e)
			after, _ := json.Marshal(inc)
			if string(before) != string(after) {
				t.Fatalf("Apply modified its input")
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Apply(%q) error = %v, want %v", tt.text, err, tt.err)
				}
				assertNothing(t, inc, r)
				return
			}
			if err != nil {
				t.Fatalf("Apply(%q) error = %v", tt.text, err)
			}
			if !r.Applied || !r.Receipt.Applied {
				t.Fatalf("Apply(%q) not applied", tt.text)
			}
			if tt.actions != nil || len(r.Actions) > 0 {
				if got := describe(r.Actions); !reflect.DeepEqual(got, tt.actions) {
					t.Errorf("actions = %q, want %q", got, tt.actions)
				}
			}
			if tt.result != "" && !strings.Contains(r.Receipt.Lines[0].Result, tt.result) {
				t.Errorf("receipt result %q, want it to contain %q", r.Receipt.Lines[0].Result, tt.result)
			}
			if tt.check != nil {
				tt.check(t, r.Incident)
			}
		})
	}
}

// assertNothing checks a refusal: incident unchanged, no action, receipt says
// nothing was applied.
func assertNothing(t *testing.T, inc Incident, r Result) {
	t.Helper()
	if !reflect.DeepEqual(r.Incident, inc) {
		t.Errorf("refused message changed the incident:\n got %+v\nwant %+v", r.Incident, inc)
	}
	if r.Applied || r.Receipt.Applied || len(r.Actions) != 0 || r.RoundRobin != "" {
		t.Errorf("refused message: applied %v, actions %v", r.Applied, describe(r.Actions))
	}
	if r.Receipt.Refused == "" || !strings.Contains(r.Receipt.Text(), "Nothing was applied") {
		t.Errorf("receipt does not say why: %q", r.Receipt.Text())
	}
}

// TestAttacks: messages that must change nothing at all (docs/threat-model.md E).
func TestAttacks(t *testing.T) {
	approved := func(t *testing.T) Incident { return step(t, notified(t), "/approve\n", alice, mon).Incident }
	removed := Signer{Fingerprint: "A11CE", Email: "alice@ex.org"} // alice's key after removal from the roster
	tests := []struct {
		name string
		text string
		by   Signer
		sig  time.Time // signature time; zero: now
		err  error     // nil: not an error, but no command either
	}{
		{"quoted disclose", "> /disclose now\n", alice, time.Time{}, nil},
		{"quoted after prose", "I agree.\n\n> /disclose now\n", alice, time.Time{}, nil},
		{"after signature", "-- \n/disclose now\n", alice, time.Time{}, nil},
		{"second block after a blank line", "/status\n\n/disclose now\n", alice, time.Time{}, ErrCommandBlocks},
		{"unknown next to valid", "/disclose now\n/frobnicate\n", alice, time.Time{}, ErrUnknownCommand},
		{"malformed next to valid", "/disclose now\n/cvss CVSS:3.1/AV:N\n", alice, time.Time{}, ErrBadCVSS},
		{"signature 25 h old", "/disclose now\n", alice, mon.Add(-25 * time.Hour), ErrStaleSignature},
		{"signature from the future", "/disclose now\n", alice, mon.Add(6 * time.Minute), ErrFutureSignature},
		{"names another incident", "/disclose now\n\nOn Mon, security+SEC-2026-0002@ex.org wrote:\n> hi\n", alice, time.Time{}, ErrOtherIncident},
		{"names another incident in a value", "/reply <<END\nsee sec-2026-0002\nEND\n", alice, time.Time{}, ErrOtherIncident},
		{"removed member", "/disclose now\n", removed, time.Time{}, ErrNotAllowed},
		{"unknown fingerprint", "/disclose now\n", Signer{Email: "alice@ex.org", Roles: []string{RoleSRC}}, time.Time{}, ErrNotAllowed},
		{"associate on high", "/disclose now\n", carol, time.Time{}, ErrNotAllowed},
		{"distributor", "/disclose now\n", dist, time.Time{}, ErrNotAllowed},
		{"reporter", "/reply hello\n", rep, time.Time{}, ErrNotAllowed},
		{"fix team beyond its grant", "/fixed\n/disclose now\n", eng, time.Time{}, ErrNotAllowed},
		{"second command fails", "/public\n/disclose 2020-01-01\n", alice, time.Time{}, ErrPast},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := approved(t)
			sig := tt.sig
			if sig.IsZero() {
				sig = mon
			}
			r, err := Apply(inc, tt.text, at(tt.by, sig), mon, env)
			if tt.err == nil {
				if err != nil || r.Applied || len(r.Receipt.Lines) != 0 || len(r.Actions) != 0 || !reflect.DeepEqual(r.Incident, inc) {
					t.Fatalf("Apply(%q) = applied %v, %v: a text without commands must change nothing", tt.text, r.Applied, err)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("Apply(%q) error = %v, want %v", tt.text, err, tt.err)
			}
			assertNothing(t, inc, r)
		})
	}
}

func TestNextSlot(t *testing.T) {
	d := func(mo time.Month, day, h, m, s int) time.Time { return time.Date(2026, mo, day, h, m, s, 0, time.UTC) }
	hol := []time.Time{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)} // a Monday
	tests := []struct {
		name     string
		in       time.Time
		holidays []time.Time
		want     time.Time
	}{
		{"Friday → Monday", d(12, 4, 16, 0, 0), nil, d(12, 7, 16, 0, 0)},
		{"Saturday → Monday", d(12, 5, 9, 0, 0), nil, d(12, 7, 16, 0, 0)},
		{"Thursday 16:01 → Monday", d(12, 3, 16, 1, 0), nil, d(12, 7, 16, 0, 0)},
		{"Thursday 16:00:01 → Monday", d(12, 3, 16, 0, 1), nil, d(12, 7, 16, 0, 0)},
		{"exactly Thursday 16:00 stays", d(12, 3, 16, 0, 0), nil, d(12, 3, 16, 0, 0)},
		{"Thursday morning → Thursday 16:00", d(12, 3, 9, 0, 0), nil, d(12, 3, 16, 0, 0)},
		{"holiday Monday → Tuesday", d(12, 5, 9, 0, 0), hol, d(12, 8, 16, 0, 0)},
		{"Monday 16:00 on a holiday → Tuesday", d(12, 7, 16, 0, 0), hol, d(12, 8, 16, 0, 0)},
		{"other zone", time.Date(2026, 12, 3, 17, 0, 0, 0, time.FixedZone("CET", 3600)), nil, d(12, 3, 16, 0, 0)},
		{"year end", time.Date(2026, 12, 31, 16, 30, 0, 0, time.UTC), nil, time.Date(2027, 1, 4, 16, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := NextSlot(tt.in, tt.holidays); !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("%s: NextSlot(%v) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
	// The sequence docs/dependencies.md §4 measured with cron: from Thu 2025-03-06 15:00.
	s := time.Date(2025, 3, 6, 15, 0, 0, 0, time.UTC)
	var got []string
	for i := 0; i < 5; i++ {
		s = NextSlot(s, nil)
		got = append(got, s.Format("Mon 2"))
		s = s.Add(time.Minute)
	}
	if want := []string{"Thu 6", "Mon 10", "Tue 11", "Wed 12", "Thu 13"}; !reflect.DeepEqual(got, want) {
		t.Errorf("slots = %v, want %v", got, want)
	}
}

func TestAddWorkingDays(t *testing.T) {
	fri := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	hol := []time.Time{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}
	for _, tt := range []struct {
		in   time.Time
		n    int
		hol  []time.Time
		want time.Time
	}{
		{fri, 1, nil, time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)},
		{fri, 3, nil, time.Date(2026, 12, 9, 15, 0, 0, 0, time.UTC)},
		{fri, 1, hol, time.Date(2026, 12, 8, 15, 0, 0, 0, time.UTC)},
		{fri.AddDate(0, 0, 1), 1, nil, time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)},
		{mon, 0, nil, mon},
	} {
		if got := AddWorkingDays(tt.in, tt.n, tt.hol); !got.Equal(tt.want) {
			t.Errorf("AddWorkingDays(%v, %d) = %v, want %v", tt.in, tt.n, got, tt.want)
		}
	}
}

// TestSevenDayRule: with a CVE, T ≥ notice + 7 days, unless emergency or
// public (or the embargo broke).
func TestSevenDayRule(t *testing.T) {
	withCVE := func(t *testing.T) Incident { return step(t, fix(t), "/cve CVE-2026-1234\n", alice, mon).Incident }
	mon16 := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		inc  func(*testing.T) Incident
		now  time.Time // zero: mon
		text string
		err  error
	}{
		{"no CVE, 3 days", fix, time.Time{}, "/disclose 2026-11-26\n", nil},
		{"CVE, 3 days", withCVE, time.Time{}, "/disclose 2026-11-26\n", ErrNoticeRule},
		{"CVE, exactly 7 days", withCVE, mon16, "/disclose 2026-11-30\n", nil},
		{"CVE, 7 days less a minute", withCVE, mon16.Add(time.Minute), "/disclose 2026-11-30\n", ErrNoticeRule},
		{"CVE, the snapped T counts", withCVE, time.Time{}, "/disclose 2026-11-30T08:59Z\n", nil}, // asked < 7 days, T Monday 16:00 ≥ 7 days
		{"CVE, emergency", withCVE, time.Time{}, "/disclose 2026-11-26 emergency\n", nil},
		{"CVE, public", func(t *testing.T) Incident { return step(t, withCVE(t), "/public\n", alice, mon).Incident }, time.Time{}, "/disclose 2026-11-24\n", nil},
		{"CVE, embargo broken", func(t *testing.T) Incident { return step(t, withCVE(t), "/embargo-break\n", alice, mon).Incident }, time.Time{}, "/disclose 2026-11-24\n", nil},
		{"after notice: pull in below 7 days", notified, time.Time{}, "/disclose 2026-11-26\n", ErrNoticeRule},
		{"after notice: 7 days from the notice, not from now", notified, mon.Add(48 * time.Hour), "/disclose 2026-11-30\n", nil},
		{"after notice: emergency pull-in", notified, time.Time{}, "/disclose 2026-11-26 emergency\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc(t)
			now := tt.now
			if now.IsZero() {
				now = mon
			}
			r, err := Apply(inc, tt.text, at(alice, now), now, env)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Apply(%q): %v", tt.text, err)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("Apply(%q) error = %v, want %v", tt.text, err, tt.err)
			}
			if !strings.Contains(err.Error(), "the earliest slot is ") {
				t.Errorf("error %q does not name the earliest slot", err)
			}
			assertNothing(t, inc, r)
		})
	}
	// The notice itself re-checks the rule: a T 3 days out, and a CVE (which
	// /cve now refuses: TestCVEAfterShortNotice).
	inc := step(t, fix(t), "/disclose 2026-11-26\n/fixed\n", alice, mon).Incident
	inc.CVEs = []string{"CVE-2026-1234"}
	if _, err := Apply(inc, "/notify\n", at(alice, mon), mon, env); !errors.Is(err, ErrNoticeRule) {
		t.Errorf("/notify 3 days before T with a CVE: error %v, want ErrNoticeRule", err)
	}
}

// TestLifecycle walks one incident from report to closed on a fake clock.
func TestLifecycle(t *testing.T) {
	hol := []time.Time{time.Date(2026, 12, 24, 0, 0, 0, 0, time.UTC)}
	e := env
	e.Holidays = hol
	e.LastLead = "alice@ex.org"
	clock := mon
	inc := Receive(nil, "SEC-2026-0001", Inbound{Sender: "Rep@Out.test", Subject: "heap overflow", MessageID: "r1@out.test"}, clock).Incident
	run := func(text string, s Signer, advance time.Duration, wantActions ...string) Result {
		t.Helper()
		clock = clock.Add(advance)
		r, err := Apply(inc, text, at(s, clock.Add(-time.Minute)), clock, e)
		if err != nil {
			t.Fatalf("%s: Apply(%q): %v", FormatInstant(clock), text, err)
		}
		if got := describe(r.Actions); !reflect.DeepEqual(got, wantActions) && !(len(got) == 0 && len(wantActions) == 0) {
			t.Fatalf("%s: Apply(%q) actions = %q, want %q", FormatInstant(clock), text, got, wantActions)
		}
		if r.RoundRobin != "" {
			e.LastLead = r.RoundRobin
		}
		inc = r.Incident
		return r
	}
	// Day 0, an hour after the report: triage.
	run("/accept\n/fixteam add eng@ex.org\n\nConfirmed on main.\n", alice, time.Hour, "reporter:accepted")
	if inc.FixLead != "bob@ex.org" || inc.Phase != PhaseFix || e.LastLead != "bob@ex.org" {
		t.Fatalf("after /accept: lead %q phase %v", inc.FixLead, inc.Phase)
	}
	// Day 1: the fix lead assesses.
	run("/cvss CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N\n/cve CVE-2026-1234\n", bob, 24*time.Hour)
	run("/set summary Node authorizer bypass\n/set actor An authenticated node\n/set impact <<END\nread any secret in the cluster\nEND\n/set affected <<END\nkubelet v1.30.0 - v1.30.4\nEND\n", eng, time.Hour)
	// Day 3: fixed; the date: Friday 18 asked, snapped to Monday 21.
	run("/fixed\n", eng, 48*time.Hour, "reporter:fixed")
	r := run("/set fixed kubelet v1.30.5\n/disclose 2026-12-18\n", bob, time.Hour, "reporter:date")
	if !strings.Contains(r.Receipt.Text(), "T = 2026-12-21 16:00 UTC (Monday)") {
		t.Errorf("receipt does not state T:\n%s", r.Receipt.Text())
	}
	run("/notify\n", bob, time.Hour, "notice:2026-12-21 16:00 UTC (Monday)")
	if inc.Phase != PhaseEmbargo {
		t.Fatalf("phase %v after /notify", inc.Phase)
	}
	// Status lists every deadline.
	r = run("/status\n", alice, time.Hour, "status")
	st := r.Actions[0].(StatusReply).Text
	for _, want := range []string{"SEC-2026-0001, phase embargo", "severity:        High (CVSS 8.1", "T:               2026-12-21 16:00 UTC (Monday)", "final-notice", "due 2026-12-20 16:00 UTC (Sunday)"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	// Moving T re-notifies; a Thursday holiday is skipped.
	run("/disclose 2026-12-24\n", bob, time.Hour, "notice:2026-12-28 16:00 UTC (Monday) was 2026-12-21 16:00 UTC (Monday)", "reporter:date")
	run("/approve\n", bob, 24*time.Hour)
	// Release at T, brought forward by a leak: the embargo is lifted first.
	run("/embargo-break\n", alice, 24*time.Hour, "alert:embargo-break")
	run("/disclose now\n", bob, time.Hour, "embargo-lifted", "release:"+FormatInstant(clock.Add(time.Hour)), "reporter:disclosed")
	if inc.Phase != PhaseDisclosed {
		t.Fatalf("phase %v after /disclose now", inc.Phase)
	}
	run("/retro\n", bob, 48*time.Hour)
	if inc.Phase != PhaseClosed || inc.Resolution != ResolutionFixed {
		t.Fatalf("phase %v resolution %v after /retro", inc.Phase, inc.Resolution)
	}
	if inc.Version != SchemaVersion || len(inc.History) != 17 {
		t.Errorf("version %d, %d history entries, want %d, 17", inc.Version, len(inc.History), SchemaVersion)
	}
	h := inc.History[0]
	if h.Email != "alice@ex.org" || h.Fingerprint != "A11CE" || h.MessageID != "m1@ex.org" || h.Command != "/accept" || !strings.Contains(h.What, "bob@ex.org") {
		t.Errorf("history[0] = %+v", h)
	}
	// The record survives the store's JSON.
	b, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	var back Incident
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, inc) {
		t.Errorf("JSON round trip: %v\n%s", err, b)
	}
	for _, d := range Deadlines(inc, hol) {
		if d.Open() {
			t.Errorf("closed incident has open deadline %+v", d)
		}
	}
}

func TestReceiptText(t *testing.T) {
	r := step(t, fix(t), "/disclose 2026-12-04\n/set mitigation <<END\nturn it off\n\nreally\nEND\n", alice, mon)
	want := `Commands for SEC-2026-0001, signed by alice@ex.org, processed 2026-11-23 09:00 UTC (Monday).

> /disclose 2026-12-04
ok: T = 2026-12-07 16:00 UTC (Monday) (asked 2026-12-04 16:00 UTC (Friday); T is 16:00 UTC on the next Monday–Thursday that is not a holiday); reporter told

> /set mitigation <<END
> turn it off
>
> really
> END
ok: mitigation set (3 lines)

All 2 commands were applied.
`
	if got := r.Receipt.Text(); got != want {
		t.Errorf("receipt:\n%s\nwant:\n%s", got, want)
	}
	_, err := Apply(fix(t), "/fixed\n/disclose 2026-11-01\n", at(alice, mon), mon, env)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Line != 2 || ce.Verb != "disclose" {
		t.Fatalf("error %v, want a CommandError on line 2", err)
	}
	r, _ = Apply(fix(t), "/fixed\n/disclose 2026-11-01\n", at(alice, mon), mon, env)
	want = `Commands for SEC-2026-0001, signed by alice@ex.org, processed 2026-11-23 09:00 UTC (Monday).

> /fixed
not applied

> /disclose 2026-11-01
error (line 2): 2026-11-01 16:00 UTC (Sunday) is in the past (now is 2026-11-23 09:00 UTC (Monday))

Nothing was applied: line 2: /disclose: 2026-11-01 16:00 UTC (Sunday) is in the past (now is 2026-11-23 09:00 UTC (Monday))
Commands apply all together or not at all; send them again, corrected and freshly signed.
`
	if got := r.Receipt.Text(); got != want {
		t.Errorf("receipt:\n%s\nwant:\n%s", got, want)
	}
}

func TestDeadlines(t *testing.T) {
	inc := triage() // opened Monday 08:00
	ds := Deadlines(inc, nil)
	if len(ds) != 2 || ds[0].Name != "triage" || FormatInstant(ds[0].Due) != "2026-11-24 08:00 UTC (Tuesday)" ||
		ds[1].Name != "triage-escalation" || FormatInstant(ds[1].Due) != "2026-11-26 08:00 UTC (Thursday)" {
		t.Errorf("triage deadlines = %+v", ds)
	}
	n := notified(t)
	got := map[string]string{}
	for _, d := range Deadlines(n, nil) {
		got[d.Name] = FormatInstant(d.Due)
		if d.Name == "notice" && d.Open() {
			t.Error("notice deadline open after /notify")
		}
	}
	want := map[string]string{
		"triage": "2026-11-24 08:00 UTC (Tuesday)", "triage-escalation": "2026-11-26 08:00 UTC (Thursday)",
		"fix-team": "2026-11-24 08:00 UTC (Tuesday)", "fix": "2026-11-30 08:00 UTC (Monday)",
		"notice": "2026-11-26 16:00 UTC (Thursday)", "final-notice": "2026-12-02 16:00 UTC (Wednesday)",
		"approval": "2026-12-02 16:00 UTC (Wednesday)", "release": "2026-12-03 16:00 UTC (Thursday)",
		"stale": "2026-11-30 09:00 UTC (Monday)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("deadlines = %v\nwant %v", got, want)
	}
}

func TestReplay(t *testing.T) {
	if err := CheckSignatureTime(time.Time{}, mon); !errors.Is(err, ErrStaleSignature) {
		t.Errorf("CheckSignatureTime(zero) = %v, want ErrStaleSignature", err)
	}
	if err := CheckSignatureTime(mon.Add(-SignatureMaxAge), mon); err != nil {
		t.Errorf("CheckSignatureTime(exactly 24 h) = %v, want nil", err)
	}
	if a, b := ReplayKey([]byte("sig1")), ReplayKey([]byte("sig2")); a == b || len(a) != 64 {
		t.Errorf("ReplayKey: %q %q", a, b)
	}
	if e := ReplayExpiry(mon); !e.After(mon.Add(SignatureMaxAge + SignatureMaxSkew)) {
		t.Errorf("ReplayExpiry(%v) = %v: the entry must outlive the signature window", mon, e)
	}
	if got := NamedIDs("Re: [sec-2026-0001] see SEC-2026-00042 and XSEC-2026-0003"); fmt.Sprint(got) != "[SEC-2026-0001 SEC-2026-00042]" {
		t.Errorf("NamedIDs = %v", got)
	}
}

func TestJSONVersion1(t *testing.T) {
	// A record written by the intake (schema 1) reads, and Apply upgrades it.
	v1 := `{"v":1,"id":"SEC-2026-0001","phase":"triage","opened":"2026-11-23T08:00:00Z","updated":"2026-11-23T08:00:00Z","reporter":"rep@out.test","messages":1}`
	var inc Incident
	if err := json.Unmarshal([]byte(v1), &inc); err != nil {
		t.Fatal(err)
	}
	r := step(t, inc, "/accept\n", alice, mon)
	if r.Incident.Version != SchemaVersion {
		t.Errorf("version %d", r.Incident.Version)
	}
	b, _ := json.Marshal(inc)
	if string(b) != v1 {
		t.Errorf("schema 1 record re-encodes as\n%s\nwant\n%s", b, v1)
	}
}

// FuzzApply: Apply never panics, and a refused message changes nothing.
func FuzzApply(f *testing.F) {
	for _, s := range Commands() {
		for _, e := range s.Examples {
			f.Add(e + "\n")
		}
	}
	f.Add("/approve\n/disclose now\n")
	f.Fuzz(func(t *testing.T, text string) {
		base := Incident{ID: "SEC-2026-0001", Phase: PhaseFix, Opened: mon.Add(-time.Hour), Reporter: "rep@out.test",
			AcceptedAt: mon, FixLead: "alice@ex.org", CVSSVector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", CVEs: []string{"CVE-2026-1234"}}
		r, err := Apply(base, text, at(alice, mon), mon, env)
		if err != nil {
			if r.Applied || len(r.Actions) != 0 || !reflect.DeepEqual(r.Incident, base) {
				t.Fatalf("Apply(%q) failed with %v but changed something", text, err)
			}
			return
		}
		if _, err := json.Marshal(r.Incident); err != nil {
			t.Fatalf("Apply(%q): incident does not marshal: %v", text, err)
		}
		_ = r.Receipt.Text()
	})
}
