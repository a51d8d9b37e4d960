package workflow

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env2 is the test committee with the two-person rule on.
var env2 = func() Env { e := env; e.Quorum = 2; return e }()

func step2(t *testing.T, inc Incident, text string, s Signer, now time.Time, e Env) Result {
	t.Helper()
	r, err := Apply(inc, text, at(s, now), now, e)
	if err != nil {
		t.Fatalf("Apply(%q) by %s error: %v", text, s.Email, err)
	}
	return r
}

func approvedNotified(t *testing.T) Incident {
	return step(t, notified(t), "/approve\n", alice, mon).Incident
}

func hasKind(as []Action, kind string) bool {
	for _, a := range as {
		if a.Kind() == kind {
			return true
		}
	}
	return false
}

// TestDiscloseNowNeedsTwo: /disclose now by one member releases nothing;
// the same member again adds nothing; a second member releases, after the
// distributors are told the embargo is lifted.
func TestDiscloseNowNeedsTwo(t *testing.T) {
	inc := approvedNotified(t)
	r := step2(t, inc, "/disclose now\n", alice, mon.Add(time.Hour), env2)
	if hasKind(r.Actions, "release") || hasKind(r.Actions, "embargo-lifted") || r.Incident.Phase != PhaseEmbargo {
		t.Fatalf("one signature released: %v, phase %s", describe(r.Actions), r.Incident.Phase)
	}
	if got := describe(r.Actions); !reflect.DeepEqual(got, []string{"alert:two-person-pending"}) {
		t.Errorf("actions %v, want the pending notice only", got)
	}
	a := r.Actions[0].(AlertSRC)
	if a.Fields["awaited"] != "bob@ex.org, dave@ex.org" || a.Fields["needed"] != "1" || a.Fields["expires"] != "2026-11-24 10:00 UTC (Tuesday)" || a.Fields["command"] != "/disclose now" {
		t.Errorf("pending notice fields %v", a.Fields)
	}
	rc := r.Receipt.Text()
	for _, want := range []string{"pending: signature 1 of 2 recorded; nothing done yet", "Applied, except the 1 command(s) marked pending", "from bob@ex.org or dave@ex.org", "before 2026-11-24 10:00 UTC (Tuesday)", "signed by alice@ex.org"} {
		if !strings.Contains(rc, want) {
			t.Errorf("receipt lacks %q:\n%s", want, rc)
		}
	}
	inc = r.Incident
	if len(inc.Pending) != 1 || len(inc.History) == 0 || !strings.Contains(inc.History[len(inc.History)-1].What, "signature 1 of 2") {
		t.Fatalf("pending %+v", inc.Pending)
	}

	// The same member: by a second message, and with another key (rotated)
	// or another address on the same key.
	for _, s := range []Signer{alice, {Fingerprint: "A11CE2", Email: "ALICE@ex.org", Roles: []string{RoleSRC}}, {Fingerprint: "A11CE", Email: "dave@ex.org", Roles: []string{RoleSRC}}} {
		r = step2(t, inc, "/disclose now\n", s, mon.Add(2*time.Hour), env2)
		if hasKind(r.Actions, "release") || len(r.Actions) != 0 || len(r.Incident.Pending[0].Signers) != 1 {
			t.Fatalf("%+v counted twice: actions %v, pending %+v", s, describe(r.Actions), r.Incident.Pending)
		}
		if !strings.Contains(r.Receipt.Text(), "you already signed /disclose now") {
			t.Errorf("receipt:\n%s", r.Receipt.Text())
		}
	}

	// The status names the pending command and whose signature is awaited.
	st := step2(t, inc, "/status\n", bob, mon.Add(2*time.Hour), env2)
	text := strings.Join(strings.Fields(st.Actions[0].(StatusReply).Text), " ")
	if !strings.Contains(text, "Awaiting signatures (two-person rule): /disclose now: awaiting 1 more SRC signature (quorum 2) from bob@ex.org or dave@ex.org") {
		t.Errorf("status:\n%s", text)
	}
	plain := strings.Join(strings.Fields(StatusText(inc, mon.Add(2*time.Hour), nil)), " ")
	if !strings.Contains(plain, "/disclose now: awaiting 1 more SRC signature (quorum 2) from another SRC member") {
		t.Errorf("StatusText without the SRC:\n%s", plain)
	}

	// A second member, with emergency: the same command. It releases.
	r = step2(t, inc, "/disclose now emergency\n", bob, mon.Add(3*time.Hour), env2)
	if got := describe(r.Actions); !reflect.DeepEqual(got, []string{"embargo-lifted", "release:2026-11-23 12:00 UTC (Monday)", "reporter:disclosed"}) {
		t.Errorf("second signature: actions %v", got)
	}
	if r.Incident.Phase != PhaseDisclosed || len(r.Incident.Pending) != 0 || !r.Incident.Emergency {
		t.Errorf("after the second signature: phase %s, pending %v, emergency %v", r.Incident.Phase, r.Incident.Pending, r.Incident.Emergency)
	}
}

// TestTwoPersonExpiry: a signature older than ApprovalWindow no longer
// counts; the next one starts afresh.
func TestTwoPersonExpiry(t *testing.T) {
	inc := step2(t, approvedNotified(t), "/disclose now\n", alice, mon, env2).Incident
	r := step2(t, inc, "/disclose now\n", bob, mon.Add(ApprovalWindow), env2)
	if hasKind(r.Actions, "release") {
		t.Fatal("an expired signature counted")
	}
	if p := r.Incident.Pending; len(p) != 1 || len(p[0].Signers) != 1 || p[0].Signers[0].Email != "bob@ex.org" || !p[0].Expires.Equal(mon.Add(2*ApprovalWindow)) {
		t.Errorf("pending after expiry %+v", p)
	}
	if got := r.Incident.PendingAt(mon.Add(3 * ApprovalWindow)); len(got) != 0 {
		t.Errorf("PendingAt after expiry = %v", got)
	}
	r = step2(t, r.Incident, "/disclose now\n", alice, mon.Add(ApprovalWindow+time.Minute), env2)
	if !hasKind(r.Actions, "release") {
		t.Errorf("fresh pair did not release: %v", describe(r.Actions))
	}
}

// TestTwoPersonRemovedSigner: a signer no longer on the SRC does not count.
func TestTwoPersonRemovedSigner(t *testing.T) {
	inc := step2(t, approvedNotified(t), "/disclose now\n", alice, mon, env2).Incident
	e := env2
	e.SRC = []string{"bob@ex.org", "dave@ex.org"}
	r := step2(t, inc, "/disclose now\n", bob, mon.Add(time.Hour), e)
	if hasKind(r.Actions, "release") {
		t.Fatal("a removed member's signature counted")
	}
	if !strings.Contains(r.Receipt.Text(), "signature 1 of 2") {
		t.Errorf("receipt:\n%s", r.Receipt.Text())
	}
}

func TestTwoPersonPublicAndBreak(t *testing.T) {
	for _, cmd := range []string{"/public", "/embargo-break"} {
		inc := notified(t)
		r := step2(t, inc, cmd+"\n", alice, mon, env2)
		if r.Incident.Public || r.Incident.EmbargoBroken || len(r.Incident.Pending) != 1 || r.Incident.Pending[0].Command != cmd {
			t.Fatalf("%s by one: %+v", cmd, r.Incident.Pending)
		}
		r = step2(t, r.Incident, cmd+"\n", bob, mon.Add(time.Minute), env2)
		if !(r.Incident.Public || r.Incident.EmbargoBroken) || len(r.Incident.Pending) != 0 {
			t.Errorf("%s by two did not apply", cmd)
		}
		if cmd == "/embargo-break" && !reflect.DeepEqual(describe(r.Actions), []string{"alert:embargo-break"}) {
			t.Errorf("embargo-break actions %v", describe(r.Actions))
		}
	}
}

func TestTwoPersonRefusals(t *testing.T) {
	one := env2
	one.SRC = []string{"alice@ex.org"}
	three := env2
	three.Quorum = 3
	for _, tt := range []struct {
		name string
		inc  Incident
		by   Signer
		e    Env
		err  error
	}{
		{"guards first: unapproved", notified(t), alice, env2, ErrGuard},
		{"associate cannot sign", step(t, notified(t), "/severity low\n/approve\n", alice, mon).Incident, carol, env2, ErrNotAllowed},
		{"quorum above the SRC", approvedNotified(t), alice, one, ErrGuard},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Apply(tt.inc, "/disclose now\n", at(tt.by, mon), mon, tt.e)
			if !errors.Is(err, tt.err) || r.Applied || len(r.Incident.Pending) != 0 {
				t.Errorf("err %v, applied %v, pending %v; want %v", err, r.Applied, r.Incident.Pending, tt.err)
			}
		})
	}
	// Quorum 3 needs three distinct members.
	inc := approvedNotified(t)
	for i, s := range []Signer{alice, bob, {Fingerprint: "DA7E", Email: "dave@ex.org", Roles: []string{RoleSRC}}} {
		r := step2(t, inc, "/disclose now\n", s, mon.Add(time.Duration(i)*time.Minute), three)
		if released := hasKind(r.Actions, "release"); released != (i == 2) {
			t.Fatalf("signature %d: released %v", i+1, released)
		}
		inc = r.Incident
	}
}

// TestQuorumOneIsTheOldBehaviour: quorum 0 (unset) and 1 run at once.
func TestQuorumOneIsTheOldBehaviour(t *testing.T) {
	for _, q := range []int{0, 1} {
		e := env
		e.Quorum = q
		r := step2(t, approvedNotified(t), "/disclose now\n", alice, mon, e)
		if !hasKind(r.Actions, "release") || len(r.Incident.Pending) != 0 {
			t.Errorf("quorum %d: %v", q, describe(r.Actions))
		}
	}
}

// TestPendingSurvivesTheStore: the pending approval is part of the stored
// record, and the working copy never aliases the caller's.
func TestPendingSurvivesTheStore(t *testing.T) {
	inc := step2(t, approvedNotified(t), "/disclose now\n", alice, mon, env2).Incident
	b, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	var back Incident
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Pending, inc.Pending) {
		t.Errorf("pending after JSON %+v, want %+v", back.Pending, inc.Pending)
	}
	before := inc.Pending[0].Signers[0]
	step2(t, inc, "/disclose now\n", bob, mon.Add(time.Minute), env2)
	c := inc.clone()
	c.Pending[0].Signers[0].Email = "x"
	if inc.Pending[0].Signers[0] != before {
		t.Error("clone aliases the pending signers")
	}
}

func TestRosterCommandsNotForIncidents(t *testing.T) {
	for _, text := range []string{"/member list\n", "/admit\n", "/accept\n/member remove bob@ex.org\n", "/deny not maintained\n/status\n"} {
		_, err := Apply(triage(), text, at(alice, mon), mon, env)
		if !errors.Is(err, ErrScope) {
			t.Errorf("Apply(%q) = %v, want ErrScope", text, err)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		text string
		want Scope
		line int // of the error, 0 for none
	}{
		{"/status\n", ScopeIncident, 0},
		{"/accept\n/help\n", ScopeIncident, 0},
		{"/member list\n/status\n", ScopeRoster, 0},
		{"/admit\n", ScopeRoster, 0},
		{"/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/member list\n", 0, 3},
		{"/member list\n/member remove x@ex.org\n/accept\n", 0, 3},
	} {
		cmds, err := Parse(tt.text)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Classify(cmds)
		var ce *CommandError
		if tt.line != 0 {
			if !errors.As(err, &ce) || ce.Line != tt.line || !errors.Is(err, ErrScope) {
				t.Errorf("Classify(%q) = %v, want an error on line %d", tt.text, err, tt.line)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Classify(%q) = %v, %v; want %v", tt.text, got, err, tt.want)
		}
	}
}

func TestParseRosterCommands(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/member add Bob@Ex.org SRC", "/member add bob@ex.org src"},
		{"/member add x@v.test distributor,src", "/member add x@v.test src,distributor"},
		{"/member remove x@v.test   no longer\tmaintained", "/member remove x@v.test no longer maintained"},
		{"/member remove ME", "/member remove me"},
		{"/member key me", "/member key me"},
		{"/member LIST", "/member list"},
		{"/admit gov-2026-0003", "/admit GOV-2026-0003"},
		{"/deny gov-2026-0003  rebuild", "/deny GOV-2026-0003 rebuild"},
		{"/deny a rebuild", "/deny a rebuild"},
	} {
		cmds, err := Parse(tt.in + "\n")
		if err != nil || len(cmds) != 1 || cmds[0].String() != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %s", tt.in, cmds, err, tt.want)
			continue
		}
		again, err := Parse(cmds[0].String() + "\n")
		if err != nil || !reflect.DeepEqual(again[0].Args, cmds[0].Args) {
			t.Errorf("%q does not parse back: %v %v", tt.want, again, err)
		}
	}
	for _, bad := range []string{"/member", "/member add x@v.test", "/member add me src", "/member add x@v.test owner", "/member add x@v.test src extra",
		"/member key x@v.test extra", "/member list all", "/member evict x@v.test", "/admit now", "/admit GOV-2026-0001 GOV-2026-0002", "/deny", "/deny GOV-2026-0001",
		"/deny " + strings.Repeat("x", MaxReasonBytes+1)} {
		if _, err := Parse(bad + "\n"); !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrBadAddress) {
			t.Errorf("Parse(%q) = %v, want a syntax error", bad, err)
		}
	}
}
