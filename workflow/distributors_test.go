package workflow

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// other is a second distributor; stranger a distributor no notice reached.
var (
	other    = Signer{Fingerprint: "0743", Email: "security@other.test", Roles: []string{RoleDistributor}}
	stranger = Signer{Fingerprint: "5724", Email: "late@joiner.test", Roles: []string{RoleDistributor}}
	// dists is the env of a daemon whose notice reaches dist and other.
	dists = func() Env { e := env; e.Distributors = []string{"Vendor@Distro.test", "security@other.test"}; return e }()
)

// notifiedTo is ready(t) after a /notify that reached dist and other.
func notifiedTo(t *testing.T) Incident {
	t.Helper()
	r, err := Apply(ready(t), "/notify\n", at(alice, mon), mon, dists)
	if err != nil {
		t.Fatal(err)
	}
	return r.Incident
}

// answer applies text signed by s at now with the distributors' env.
func answer(inc Incident, text string, s Signer, now time.Time) (Result, error) {
	return Apply(inc, text, at(s, now), now, dists)
}

func TestNoticeRecordsDistributors(t *testing.T) {
	inc := notifiedTo(t)
	if len(inc.Distributors) != 2 || inc.Distributors[0].Email != "vendor@distro.test" || !inc.Distributors[0].NotifiedAt.Equal(mon) ||
		inc.Distributors[1].Email != "security@other.test" || inc.Distributors[0].Status != AffectedUnset {
		t.Fatalf("distributors after /notify: %+v", inc.Distributors)
	}
	if !inc.Notified("VENDOR@distro.test") || inc.Notified(stranger.Email) || inc.Notified("") {
		t.Error("Notified")
	}
	// A message without a notice records nobody, even with distributors.
	plain, err := Apply(ready(t), "/set credit Rep Orter\n", at(alice, mon), mon, dists)
	if err != nil || len(plain.Incident.Distributors) != 0 {
		t.Fatalf("no notice, yet recorded: %v %+v", err, plain.Incident.Distributors)
	}
	// A re-notification reaches a distributor admitted since: recorded then,
	// the others keep their first instant.
	later := mon.Add(time.Hour)
	e := dists
	e.Distributors = append(e.Distributors, stranger.Email)
	r, err := Apply(inc, "/disclose 2026-12-07\n", at(alice, later), later, e)
	if err != nil || len(r.Actions) == 0 {
		t.Fatal(err, r.Actions)
	}
	ds := r.Incident.Distributors
	if len(ds) != 3 || !ds[0].NotifiedAt.Equal(mon) || ds[2].Email != stranger.Email || !ds[2].NotifiedAt.Equal(later) {
		t.Fatalf("after the re-notification: %+v", ds)
	}
	// The final notice at T-25 h records whom it reaches too.
	approved := step(t, inc, "/approve\n", alice, mon).Incident
	final := approved.T.Add(-FinalNoticeWindow).Add(time.Minute)
	tr := Tick(approved, final, e)
	if !noticeIn(tr.Actions) || len(tr.Incident.Distributors) != 3 || !tr.Incident.Distributors[2].NotifiedAt.Equal(final) {
		t.Fatalf("final notice: %v %+v", describe(tr.Actions), tr.Incident.Distributors)
	}
}

func TestAffectedPermissions(t *testing.T) {
	inc := notifiedTo(t)
	now := mon.Add(2 * time.Hour)

	r, err := answer(inc, "/affected yes\n", dist, now)
	if err != nil || !r.Applied {
		t.Fatalf("a notified distributor: %v", err)
	}
	if d := r.Incident.Distributors[0]; d.Status != AffectedYes || !d.At.Equal(now) {
		t.Errorf("state %+v", d)
	}

	// Nothing else, not even /status or /help, and not with /affected.
	for _, text := range []string{"/status\n", "/help\n", "/set credit Vendor\n", "/affected yes\n/status\n", "/close fixed\n"} {
		r, err := answer(inc, text, dist, now)
		if !errors.Is(err, ErrNotAllowed) || r.Applied || len(r.Actions) != 0 || !strings.Contains(r.Receipt.Refused, "distributors may run /affected alone") {
			t.Errorf("%q by a distributor: %v %q", text, err, r.Receipt.Refused)
		}
	}

	// The SRC may not set a distributor's status, nor may the fix team.
	for _, s := range []Signer{alice, eng, rep} {
		r, err := answer(inc, "/affected no\n", s, now)
		if !errors.Is(err, ErrNotAllowed) || r.Applied || r.Incident.Distributors[0].Status != AffectedUnset {
			t.Errorf("/affected by %s: %v", s.Email, err)
		}
	}

	// A distributor the notice did not reach is refused as anybody with no
	// right is: the same words, which say nothing of the incident.
	rs, errS := answer(inc, "/affected yes\n", stranger, now)
	nobody := Signer{Fingerprint: "FFFF", Email: "nobody@nowhere.test"}
	rn, errN := answer(inc, "/affected yes\n", nobody, now)
	if !errors.Is(errS, ErrNotAllowed) || !errors.Is(errN, ErrNotAllowed) || rs.Receipt.Refused != rn.Receipt.Refused {
		t.Errorf("not notified: %v %q; nobody: %v %q", errS, rs.Receipt.Refused, errN, rn.Receipt.Refused)
	}
	for _, w := range []string{"notice", "notified", "vendor@", "other.test", "phase"} {
		if strings.Contains(rs.Receipt.Refused, w) && w != "notice" {
			t.Errorf("the refusal of a distributor not notified says %q: %q", w, rs.Receipt.Refused)
		}
	}

	// Before any notice: nobody was notified, so nobody may answer.
	if _, err := answer(ready(t), "/affected yes\n", dist, now); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("before /notify: %v", err)
	}
}

func TestAffectedPhases(t *testing.T) {
	inc := notifiedTo(t)
	rel := step(t, inc, "/approve\n/disclose now\n", alice, mon.Add(time.Hour)).Incident
	if rel.Phase != PhaseDisclosed {
		t.Fatal(rel.Phase)
	}
	now := mon.Add(2 * time.Hour)
	if _, err := answer(rel, "/affected fixed\n", dist, now); err != nil {
		t.Errorf("disclosed: %v", err)
	}
	closed := step(t, rel, "/close\n", alice, now).Incident
	r, err := answer(closed, "/affected fixed\n", dist, now)
	if !errors.Is(err, ErrPhase) || r.Applied || !strings.Contains(r.Receipt.Refused, "closed") {
		t.Errorf("closed: %v %q", err, r.Receipt.Refused)
	}
	// Reopened, it takes answers again.
	reopened := step(t, closed, "/reopen\n", alice, now).Incident
	if _, err := answer(reopened, "/affected fixed\n", dist, now); err != nil {
		t.Errorf("reopened: %v", err)
	}
}

func TestAffectedLatestWins(t *testing.T) {
	inc := notifiedTo(t)
	t1, t2, t3 := mon.Add(time.Hour), mon.Add(2*time.Hour), mon.Add(3*time.Hour)
	r, err := answer(inc, "/affected yes\n", dist, t1)
	if err != nil {
		t.Fatal(err)
	}
	h := len(r.Incident.History)
	r, err = answer(r.Incident, "/affected fixed <<END\nbuilt 1.2.4-1\n/accept\nEND\n", dist, t2)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Incident.Distributors[0]
	if d.Status != AffectedFixed || !d.At.Equal(t2) || d.Note != "built 1.2.4-1\n/accept" {
		t.Fatalf("latest: %+v", d)
	}
	a, ok := r.Actions[0].(DistributorAnswer)
	if len(r.Actions) != 1 || !ok || a.Distributor != "vendor@distro.test" || a.Status != AffectedFixed || a.Previous != AffectedYes ||
		a.Note != d.Note || a.Answered != 1 || a.Notified != 2 {
		t.Fatalf("actions %#v", r.Actions)
	}
	// The history names the signer and the message.
	c := r.Incident.History[len(r.Incident.History)-1]
	if len(r.Incident.History) != h+1 || c.Fingerprint != dist.Fingerprint || c.Email != dist.Email || c.MessageID != env.MessageID ||
		!strings.HasPrefix(c.Command, "/affected fixed <<END") || !strings.Contains(c.What, "affected, fix ready (was affected)") {
		t.Errorf("history %+v", c)
	}
	// The same answer again changes nothing and tells nobody.
	r2, err := answer(r.Incident, "/affected fixed <<END\nbuilt 1.2.4-1\n/accept\nEND\n", dist, t3)
	if err != nil || len(r2.Actions) != 0 || len(r2.Incident.History) != h+1 || !r2.Incident.Distributors[0].At.Equal(t2) {
		t.Errorf("unchanged: %v %v", err, r2.Actions)
	}
	// Without the note, the note goes.
	r3, err := answer(r.Incident, "/affected fixed\n", dist, t3)
	if err != nil || r3.Incident.Distributors[0].Note != "" || len(r3.Actions) != 1 {
		t.Errorf("note cleared: %v %+v", err, r3.Incident.Distributors[0])
	}
	// Two answers in one message: one copy to the SRC, of the last.
	r4, err := answer(inc, "/affected unknown\n/affected no not shipped\n", dist, t1)
	if err != nil || len(r4.Actions) != 1 {
		t.Fatal(err, r4.Actions)
	}
	if a := r4.Actions[0].(DistributorAnswer); a.Status != AffectedNo || a.Previous != AffectedUnset || a.Note != "not shipped" {
		t.Errorf("coalesced %+v", a)
	}
	// One distributor's answer is theirs: the other's stays unanswered.
	if r4.Incident.Distributors[1].Status != AffectedUnset {
		t.Error("other distributor changed")
	}
}

// TestAffectedReceiptOwnStateOnly: a distributor's receipt says their own
// answer and nothing of another's.
func TestAffectedReceiptOwnStateOnly(t *testing.T) {
	inc := notifiedTo(t)
	r, err := answer(inc, "/affected yes CANARY-OTHER-NOTE\n", other, mon.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := answer(r.Incident, "/affected no\n", dist, mon.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	text := mine.Receipt.Text()
	if strings.Contains(text, "CANARY") || strings.Contains(text, other.Email) || !strings.Contains(text, "your status: not affected") {
		t.Errorf("receipt:\n%s", text)
	}
}

func TestParseAffected(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/affected YES\n", "/affected yes"},
		{"/affected no   not shipped  \n", "/affected no not shipped"},
		{"/affected fixed <<END\nEND\n", "/affected fixed"},
		{"/affected unknown <<END\n one\n\ntwo\nEND\n", "/affected unknown <<END\n one\n\ntwo\nEND"},
	} {
		cmds, err := Parse(c.in)
		if err != nil || len(cmds) != 1 || cmds[0].String() != c.want {
			t.Errorf("%q: %v %q", c.in, err, cmds)
		}
	}
	for _, in := range []string{"/affected\n", "/affected maybe\n", "/affected yes x <<END\ny\nEND\n",
		"/affected yes " + strings.Repeat("x", MaxNoteBytes+1) + "\n"} {
		if _, err := Parse(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("%.40q: %v", in, err)
		}
	}
}

func TestDistributorsInStatusAndDigest(t *testing.T) {
	inc := notifiedTo(t)
	at1 := mon.Add(time.Hour)
	r, err := answer(inc, "/affected yes <<END\nour 3.x is\n/disclose now\nEND\n", dist, at1)
	if err != nil {
		t.Fatal(err)
	}
	st := statusText(r.Incident, at1, env)
	for _, w := range []string{"Distributors the notice reached (1 of 2 answered",
		"vendor@distro.test: affected since " + FormatInstant(at1) + "; notified " + FormatInstant(mon),
		"security@other.test: no answer; notified", "      our 3.x is", "      /disclose now"} {
		if !strings.Contains(st, w) {
			t.Errorf("status lacks %q:\n%s", w, st)
		}
	}
	for _, l := range strings.Split(st, "\n") {
		if strings.HasPrefix(l, "/") {
			t.Errorf("status line reads as a command: %q", l)
		}
	}
	dg := WeeklyDigest([]Incident{r.Incident}, at1, env)
	if len(dg.Distributors) != 2 || !strings.HasPrefix(dg.Distributors[0], "SEC-2026-0001 vendor@distro.test: affected since") ||
		!strings.Contains(dg.Distributors[1], "no answer") || strings.Contains(strings.Join(dg.Distributors, "\n"), "3.x") {
		t.Errorf("digest %q", dg.Distributors)
	}
}

func TestDistributorThread(t *testing.T) {
	inc := notifiedTo(t)
	look := Lookup{
		Incident:  func(id ID) (*Incident, bool) { return &inc, id == inc.ID },
		MessageID: func(string) (ID, bool) { return inc.ID, true },
		IsSRC:     func(a string) bool { return a == "alice@ex.org" },
	}
	in := Inbound{Detail: "SEC-2026-0001"}
	if got := DistributorThread(in, look, dist.Email); got == nil || got.ID != inc.ID {
		t.Errorf("notified: %v", got)
	}
	if got := DistributorThread(Inbound{Refs: []string{"notice@x"}}, look, dist.Email); got == nil {
		t.Error("by In-Reply-To")
	}
	if got := DistributorThread(in, look, stranger.Email); got != nil {
		t.Error("a distributor not notified found the incident")
	}
	// The SRC's own membership does not carry over: only the notice counts.
	if got := DistributorThread(Inbound{Detail: "SEC-2026-0001", Sender: "alice@ex.org"}, look, ""); got != nil {
		t.Error("sender membership counted")
	}
	// Ordinary mail from a distributor is no thread mail.
	if got := Thread(Inbound{Detail: "SEC-2026-0001", Sender: dist.Email}, look); got != nil {
		t.Error("Thread took a distributor's mail")
	}
}
