package listd

import (
	"context"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// The canaries of the distributors' answers: one distributor's note must
// reach the SRC and never the other distributor.
const (
	canaryDist  = "CANARY-dist-note"
	canaryOther = "CANARY-other-note"
)

// answerWorld is a storeService with a second distributor, other, and an
// incident whose notice reached both dist and other.
type answerWorld struct {
	s     *Service
	db    *bolt.DB
	k     *storeKeys
	other *keys.Key
	after uint64 // the last row queued before the answers
}

func newAnswerWorld(t *testing.T) *answerWorld {
	t.Helper()
	k := newStoreKeys(t)
	other, err := keys.GenerateListKey("Other", "security@other.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	w := &answerWorld{k: k, other: other}
	w.s, w.db = storeService(t, k, func(o *Options) {
		o.Roster.Members = append(o.Roster.Members, lists.Member{Email: "security@other.test", Roles: []string{"distributor"}, Fingerprint: other.Fingerprint()})
		o.Members = keys.NewKeyring(k.alice, k.bob, k.dist, other)
	})
	openIncident(t, w.s, w.db, nil)
	notify, ok := memberMail(k, k.alice, "n1@ex.test", "Re: [SEC-2026-0001]",
		"/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/set summary heap overflow\n/set actor A remote attacker\n"+
			"/set impact execute code\n/set mitigation Disable the parser.\n/disclose 2026-12-10\n/notify\n", false)
	if !ok {
		t.Fatal("alice's /notify")
	}
	w.handle(t, "alice@ex.test", fuzzThread, notify)
	inc := getIncident(t, w.db, fuzzIncident)
	if inc.Phase != workflow.PhaseEmbargo || len(inc.Distributors) != 2 {
		t.Fatalf("after /notify: phase %s, distributors %+v", inc.Phase, inc.Distributors)
	}
	w.after = w.last(t)
	return w
}

func (w *answerWorld) readers() map[string]*keys.Key {
	r := w.k.readers()
	r["security@other.test"] = w.other
	return r
}

func (w *answerWorld) handle(t *testing.T, from, to string, raw []byte) {
	t.Helper()
	if err := w.s.Handle(context.Background(), Envelope{From: from, To: []string{to}}, raw); err != nil {
		t.Fatalf("mail from %s to %s: %v", from, to, err)
	}
}

func (w *answerWorld) last(t *testing.T) uint64 {
	t.Helper()
	var last uint64
	if err := w.db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			last = max(last, r.ID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

// noticeTo is the Message-ID of the notice a distributor received.
func (w *answerWorld) noticeTo(t *testing.T, addr string) string {
	t.Helper()
	for _, r := range rowsOf(t, w.db, "distributor-notice") {
		if r.To[0] == addr {
			return r.MessageID
		}
	}
	t.Fatalf("no notice to %s", addr)
	return ""
}

// answerMail is signer's mail to to, in reply to inReplyTo (if set),
// signed, and encrypted to enc (nil: signed only).
func answerMail(t *testing.T, signer, enc *keys.Key, to, msgid, inReplyTo, text string) []byte {
	t.Helper()
	h := outerHeader(signer.Email(), to, "...", msgid)
	if inReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{inReplyTo})
	}
	body := []byte("Subject: Re: [EMBARGOED] heap overflow\r\n" + textEntity + strings.ReplaceAll(text, "\n", "\r\n"))
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	var raw []byte
	var err error
	if enc != nil {
		raw, err = keys.Encrypt(h, body, enc, signer, sko)
	} else {
		h.SetSubject("Re: [EMBARGOED] heap overflow")
		raw, err = keys.Sign(h, []byte(textEntity+strings.ReplaceAll(text, "\n", "\r\n")), signer, sko)
	}
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// queued is what was queued since the last call, made and read as each
// recipient's client reads it (checkQueued: a committee copy that reads as
// commands fails the test).
func (w *answerWorld) queued(t *testing.T) []madeCopy {
	t.Helper()
	out := checkQueued(t, w.s, w.db, w.after, w.readers())
	w.after = w.last(t)
	return out
}

// TestDistributorAnswerByReply: a distributor answers the notice by
// replying to it, at distributors@ (its Reply-To). The answer is recorded,
// the distributor gets a receipt from that list, encrypted to their key
// and signed by the list; the SRC gets a copy, each encrypted to its
// member, whose note runs as no command even carried unquoted in a
// member's signed reply; the post reaches the SRC as every post does; the
// other distributor gets nothing, and never the note.
func TestDistributorAnswerByReply(t *testing.T) {
	w := newAnswerWorld(t)
	// A "/" paragraph in the note: a command block, were it not made inert.
	note := canaryDist + "\n\n/disclose now\n/accept"
	w.handle(t, "dist@vendor.test", "distributors@ex.test", answerMail(t, w.k.dist, w.k.dists, "distributors@ex.test", "a1@vendor.test",
		w.noticeTo(t, "dist@vendor.test"), "/affected fixed <<END\n"+note+"\nEND\n\nThanks for the heads-up.\n"))

	inc := getIncident(t, w.db, fuzzIncident)
	d := inc.Distributors[0]
	if d.Email != "dist@vendor.test" || d.Status != workflow.AffectedFixed || d.Note != note || !d.At.Equal(mon) || inc.Distributors[1].Status != workflow.AffectedUnset {
		t.Fatalf("distributors %+v", inc.Distributors)
	}
	if c := inc.History[len(inc.History)-1]; c.Email != "dist@vendor.test" || c.Fingerprint != w.k.dist.Fingerprint() || c.MessageID != "a1@vendor.test" {
		t.Errorf("history %+v", c)
	}
	kinds := map[string][]string{}
	for _, c := range w.queued(t) {
		kinds[c.Kind] = append(kinds[c.Kind], c.To[0])
		if c.To[0] == "security@other.test" {
			t.Errorf("%s queued to the other distributor", c.Kind)
		}
		switch c.Kind {
		case "receipt":
			if c.To[0] != "dist@vendor.test" || !c.Sealed || lists.Name(c.Seal.Signer) != lists.Distributors ||
				!strings.Contains(c.Text, "ok: your status: affected, fix ready") || !strings.Contains(c.Text, "The command was applied.") {
				t.Errorf("receipt to %s (%s):\n%s", c.To[0], c.Seal.Signer, c.Text)
			}
			// A reply that carries the receipt along unquoted runs nothing.
			if cmds, err := workflow.Parse("Thanks.\n\n" + c.Text); len(cmds) > 0 || err != nil {
				t.Errorf("the receipt runs as commands (%v, %v):\n%s", cmds, err, c.Text)
			}
		case "distributor-answer":
			if !committee[c.To[0]] || !c.Sealed || !strings.Contains(c.Text, canaryDist) || !strings.Contains(c.Subject, "dist@vendor.test: affected, fix ready") {
				t.Errorf("SRC copy to %s %q:\n%s", c.To[0], c.Subject, c.Text)
			}
			// Carried below a member's own line, as some clients send it.
			if cmds, err := workflow.Parse("Agreed.\n\n" + c.Text); len(cmds) > 0 || err != nil {
				t.Errorf("the SRC's copy runs as commands (%v, %v):\n%s", cmds, err, c.Text)
			}
		}
	}
	if len(kinds["receipt"]) != 1 || len(kinds["distributor-answer"]) != 2 || len(kinds["distributors-copy"]) != 2 || len(kinds) != 3 {
		t.Errorf("queued %v", kinds)
	}
}

// TestDistributorAnswerInThread: at the incident's address an answer must
// be encrypted to the security key whatever require_encryption says; a
// signed answer in clear is refused with a receipt, and the same signed
// text counts once it comes encrypted (its signature was not recorded).
// One distributor's answer and note never reach the other's receipt.
func TestDistributorAnswerInThread(t *testing.T) {
	w := newAnswerWorld(t)
	w.handle(t, "security@other.test", fuzzThread, answerMail(t, w.other, w.k.list, fuzzThread, "o1@other.test", "", "/affected yes "+canaryOther+"\n"))
	for _, c := range w.queued(t) {
		if c.Kind == "receipt" && (c.To[0] != "security@other.test" || lists.Name(c.Seal.Signer) != lists.Security || !strings.Contains(c.Text, "your status: affected")) {
			t.Errorf("other's receipt to %v:\n%s", c.To, c.Text)
		}
	}

	text := "/affected no\n"
	w.handle(t, "dist@vendor.test", fuzzThread, answerMail(t, w.k.dist, nil, fuzzThread, "d1@vendor.test", "", text))
	got := w.queued(t)
	if len(got) != 1 || got[0].Kind != "receipt" || got[0].To[0] != "dist@vendor.test" || !strings.Contains(got[0].Text, "must be encrypted to the list key") ||
		!strings.Contains(got[0].Text, "> /affected no\nnot applied") {
		t.Fatalf("a signed answer in clear: %d rows, %v", len(got), kindsOf(got))
	}
	if cmds, err := workflow.Parse("Thanks.\n\n" + got[0].Text); len(cmds) > 0 || err != nil {
		t.Errorf("the refusal runs as commands (%v, %v):\n%s", cmds, err, got[0].Text)
	}
	if inc := getIncident(t, w.db, fuzzIncident); inc.Distributors[0].Status != workflow.AffectedUnset {
		t.Fatalf("applied in clear: %+v", inc.Distributors[0])
	}

	w.handle(t, "dist@vendor.test", fuzzThread, answerMail(t, w.k.dist, w.k.list, fuzzThread, "d2@vendor.test", "", text))
	inc := getIncident(t, w.db, fuzzIncident)
	if inc.Distributors[0].Status != workflow.AffectedNo || inc.Distributors[1].Status != workflow.AffectedYes {
		t.Fatalf("after the encrypted answer: %+v", inc.Distributors)
	}
	for _, c := range w.queued(t) {
		if strings.Contains(c.Text, canaryOther) && !committee[c.To[0]] {
			t.Errorf("the other distributor's note reached %s in a %s", c.To[0], c.Kind)
		}
		if c.Kind == "receipt" && (strings.Contains(c.Text, "security@other.test") || !strings.Contains(c.Text, "your status: not affected")) {
			t.Errorf("receipt:\n%s", c.Text)
		}
	}
	// The same signature again is a replay: refused, nothing changes.
	w.handle(t, "dist@vendor.test", fuzzThread, answerMail(t, w.k.dist, w.k.list, fuzzThread, "d3@vendor.test", "", text))
	if got := w.queued(t); len(got) != 1 || !strings.Contains(got[0].Text, "already processed") {
		t.Errorf("replay: %v", kindsOf(got))
	}
}

// TestDistributorAnswerOnlyAffected: a notified distributor's other
// commands are refused with a receipt, nothing applied; an SRC member may
// not set a distributor's status.
func TestDistributorAnswerOnlyAffected(t *testing.T) {
	w := newAnswerWorld(t)
	w.handle(t, "dist@vendor.test", fuzzThread, answerMail(t, w.k.dist, w.k.list, fuzzThread, "d1@vendor.test", "", "/status\n"))
	got := w.queued(t)
	if len(got) != 1 || got[0].Kind != "receipt" || !strings.Contains(got[0].Text, "distributors may run /affected alone") {
		t.Fatalf("/status by a distributor: %v", kindsOf(got))
	}
	cmd, _ := memberMail(w.k, w.k.alice, "c9@ex.test", "Re: [SEC-2026-0001]", "/affected yes\n", false)
	w.handle(t, "alice@ex.test", fuzzThread, cmd)
	if inc := getIncident(t, w.db, fuzzIncident); inc.Distributors[0].Status != workflow.AffectedUnset || inc.Distributors[1].Status != workflow.AffectedUnset {
		t.Fatalf("the SRC set a status: %+v", inc.Distributors)
	}
	for _, c := range w.queued(t) {
		if c.Kind == "receipt" && !strings.Contains(c.Text, "you may not run /affected") {
			t.Errorf("alice's receipt:\n%s", c.Text)
		}
	}
}

// TestDistributorNotNotified: a distributor the notice did not reach (one
// admitted since) is treated as anybody: at the incident's address their
// signed, encrypted answer is a new report, acknowledged as any, exactly
// as the same answer to an incident that does not exist; a reply to
// another distributor's notice is a post and nothing more. No receipt,
// and the incident does not change.
func TestDistributorNotNotified(t *testing.T) {
	answer := "/affected yes late note\n"
	// outcome sends late's answer to to, in a world of its own (the
	// acknowledgement limit counts per sender), and returns what was
	// queued, by kind.
	outcome := func(to string) (*answerWorld, *keys.Key, map[string]int) {
		w, late := newLateWorld(t)
		w.handle(t, "late@joiner.test", to, answerMail(t, late, w.k.list, to, "l1@joiner.test", "", answer))
		kinds := map[string]int{}
		for _, c := range w.queued(t) {
			kinds[c.Kind]++
			if c.Kind == "ack" && strings.Contains(string(c.Inner), "SEC-2026-0001") {
				t.Errorf("the acknowledgement names the incident:\n%s", c.Inner)
			}
		}
		if _, err := getIncidentErr(w.db, "SEC-2026-0002"); err != nil {
			t.Errorf("the answer to %s opened no report: %v", to, err)
		}
		return w, late, kinds
	}
	w, late, existing := outcome(fuzzThread)
	_, _, missing := outcome("security+SEC-2026-0099@ex.test")
	if existing["receipt"] != 0 || existing["ack"] != 1 || existing["report-copy"] != 2 || len(existing) != 2 ||
		existing["ack"] != missing["ack"] || existing["report-copy"] != missing["report-copy"] || len(missing) != 2 {
		t.Errorf("to the incident: %v; to an incident that does not exist: %v", existing, missing)
	}
	before := getIncident(t, w.db, fuzzIncident)
	w.handle(t, "late@joiner.test", "distributors@ex.test", answerMail(t, late, w.k.dists, "distributors@ex.test", "l3@joiner.test", w.noticeTo(t, "dist@vendor.test"), answer))
	for _, c := range w.queued(t) {
		if c.Kind != "distributors-copy" {
			t.Errorf("a reply to another's notice queued a %s to %v", c.Kind, c.To)
		}
	}
	after := getIncident(t, w.db, fuzzIncident)
	if len(after.Distributors) != 2 || after.Distributors[0].Status != workflow.AffectedUnset || len(after.History) != len(before.History) {
		t.Errorf("the incident changed: %+v", after.Distributors)
	}
}

// newLateWorld is an answerWorld whose roster, after the notice, admitted
// a third distributor, late, whom the notice did not reach.
func newLateWorld(t *testing.T) (*answerWorld, *keys.Key) {
	t.Helper()
	w := newAnswerWorld(t)
	late, err := keys.GenerateListKey("Late", "late@joiner.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	o := w.s.sh.base // the same store, the roster after late was admitted
	r := *o.Roster
	r.Members = append(append([]lists.Member(nil), r.Members...), lists.Member{Email: "late@joiner.test", Roles: []string{"distributor"}, Fingerprint: late.Fingerprint()})
	o.Roster, o.Members = &r, keys.NewKeyring(w.k.alice, w.k.bob, w.k.dist, w.other, late)
	w.s = New(o)
	return w, late
}

func kindsOf(cs []madeCopy) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Kind+" to "+c.To[0]+":\n"+c.Text)
	}
	return out
}

func getIncidentErr(db *bolt.DB, id workflow.ID) (*workflow.Incident, error) {
	var inc *workflow.Incident
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		inc, err = incidentdb.Get(tx, id)
		return err
	})
	return inc, err
}
