package governance

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

// TestMemberAddNeedsQuorum: adding an SRC member takes two distinct SRC
// signatures of the identical command with the same key.
func TestMemberAddNeedsQuorum(t *testing.T) {
	k := key('F', "frank@ex.org")
	r := apply(t, State{}, "/member add frank@ex.org src\n", 'A', t0, "", k)
	if _, ok := member(r.State, "frank@ex.org"); ok || r.Roster {
		t.Fatal("one signature added a member")
	}
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"mail:two-person-pending→src"}) {
		t.Errorf("actions %v", got)
	}
	if rc := r.Receipt.Text(); !strings.Contains(rc, "GOV-2026-0001 opened: approval recorded; GOV-2026-0001 has 1 of 2 SRC approvals") {
		t.Errorf("receipt:\n%s", rc)
	}
	st := r.State

	// The same member again, or with the key of another address on the
	// roster (one key, one member), or another key: no second approval.
	if r := apply(t, st, "/member add frank@ex.org src\n", 'A', t0.Add(time.Minute), "", k); len(r.State.Proposals[0].Approvals) != 1 {
		t.Error("the same member counted twice")
	}
	for _, tt := range []struct {
		text string
		k    KeyVerdict
		err  error
	}{
		{"/member add frank@ex.org src\n", key('9', "frank@ex.org"), ErrConflict},
		{"/member add frank@ex.org src,release-manager\n", k, ErrConflict},
		{"/member add frank@ex.org src\n", key('A', "frank@ex.org"), ErrConflict},
	} {
		if _, err := Apply(st, Request{Text: tt.text, Signer: signer('B', t0), Keys: []KeyVerdict{tt.k}}, t0, cfg); !errors.Is(err, tt.err) {
			t.Errorf("%q with key %s: %v, want %v", tt.text, tt.k.Fingerprint[:4], err, tt.err)
		}
	}

	r = apply(t, st, "/member add FRANK@ex.org src\n", 'B', t0.Add(time.Hour), "", k)
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"pin-key", "add-member", "mail:roster-change→frank@ex.org", "mail:roster-change→src"}) {
		t.Fatalf("second signature: %v", got)
	}
	e, ok := member(r.State, "frank@ex.org")
	if !ok || e.Origin != OriginCommand || !e.Has("src") || e.Key != k.Armored {
		t.Errorf("entry %+v", e)
	}
	m, _ := findMail(r.Actions, "roster-change")
	if m.Key != k.Armored || !strings.Contains(m.Fields["change"], "frank@ex.org joined the roster with the roles src") {
		t.Errorf("notice %+v", m)
	}
}

// TestKeyChangeNeedsQuorum (docs/threat-model.md D5): a key change signed by
// a non-member does nothing; by one of a quorum of two, it waits; by two, it
// pins the new key and tells both keys.
func TestKeyChangeNeedsQuorum(t *testing.T) {
	nk := key('9', "bob@ex.org")
	req := Request{Text: "/member key bob@ex.org\n", Signer: signer('7', t0), Keys: []KeyVerdict{nk}}
	if r, err := Apply(State{}, req, t0, cfg); !errors.Is(err, workflow.ErrNotAllowed) || r.Applied {
		t.Errorf("non-member: %v", err)
	}
	st := apply(t, State{}, "/member key bob@ex.org\n", 'A', t0, "", nk).State
	if e, _ := member(st, "bob@ex.org"); e.Fingerprint != fpr('B') {
		t.Fatal("one signature changed the key")
	}
	r := apply(t, st, "/admit\n", 'D', t0.Add(time.Minute), "GOV-2026-0001")
	e, _ := member(r.State, "bob@ex.org")
	if e.Fingerprint != fpr('9') || e.Origin != OriginFile || e.Change != "key" {
		t.Fatalf("after two: %+v", e)
	}
	var toBob []Mail
	for _, a := range r.Actions {
		if m, ok := a.(Mail); ok && m.To == "bob@ex.org" {
			toBob = append(toBob, m)
		}
	}
	if len(toBob) != 2 || toBob[0].Key != nk.Armored || toBob[1].Fingerprint != fpr('B') {
		t.Errorf("notices to bob: %+v", toBob)
	}
	if pk, ok := r.Actions[0].(PinKey); !ok || pk.Previous != fpr('B') {
		t.Errorf("first action %v", kinds(r.Actions))
	}
	if _, ok := SignerOf(file, r.State, fpr('B'), t0); ok {
		t.Error("the old key still signs for bob")
	}
	// The member proposes their own key: the SRC still decides.
	ann := key('8', "ann@ex.org")
	r = apply(t, r.State, "/member key me\n", 'C', t0.Add(time.Hour), "", ann)
	if e, _ := member(r.State, "ann@ex.org"); e.Fingerprint != fpr('C') || !strings.Contains(r.Receipt.Text(), "has 0 of 2 SRC approvals") {
		t.Errorf("self-proposed key applied at once: %+v\n%s", e, r.Receipt.Text())
	}
}

// TestRemoval: removing a distributor needs the quorum, tells them with
// the reason, CC the SRC; the removal shadows their file entry.
func TestRemoval(t *testing.T) {
	st := apply(t, State{}, "/member remove security@old-distro.test leaked an embargoed fix\n", 'A', t0, "").State
	r := apply(t, st, "/member remove security@old-distro.test\n", 'B', t0.Add(time.Minute), "")
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"remove-member", "mail:distributor-removal→security@old-distro.test+src"}) {
		t.Fatalf("actions %v", got)
	}
	m, _ := findMail(r.Actions, "distributor-removal")
	if m.Fields["kind"] != "removed" || m.Fields["reason"] != "leaked an embargoed fix" || m.Fingerprint != fpr('E') {
		t.Errorf("removal %+v", m)
	}
	if _, ok := member(r.State, "security@old-distro.test"); ok {
		t.Error("still a member")
	}
	if l := ListText(file, r.State, nil, t0); !strings.Contains(l, "security@old-distro.test: in the file, removed by GOV-2026-0001") {
		t.Errorf("list:\n%s", l)
	}
}

func TestLeaving(t *testing.T) {
	// A distributor leaves at once, signed by their own key (F2).
	r := apply(t, State{}, "/member remove me\n", 'E', t0, "")
	m, ok := findMail(r.Actions, "distributor-removal")
	if !ok || m.Fields["kind"] != "left" || !m.CCSRC || !r.Roster {
		t.Fatalf("leaving: %v", kinds(r.Actions))
	}
	// But not someone else, and not an SRC member below the quorum.
	if _, err := Apply(State{}, Request{Text: "/member remove bob@ex.org\n", Signer: signer('E', t0)}, t0, cfg); !errors.Is(err, workflow.ErrNotAllowed) {
		t.Errorf("distributor removing bob: %v", err)
	}
	three := cfg
	three.Quorum = 3
	if _, err := Apply(State{}, Request{Text: "/member remove me\n", Signer: signer('A', t0)}, t0, three); !errors.Is(err, workflow.ErrGuard) {
		t.Errorf("SRC below quorum: %v", err)
	}
}

func TestThreadRules(t *testing.T) {
	st := apply(t, State{}, "/member remove security@old-distro.test\n", 'A', t0, "").State
	st = apply(t, st, "/member add frank@ex.org associate\n", 'A', t0, "", key('F', "frank@ex.org")).State
	st = apply(t, st, "/member remove dave@ex.org\n", 'A', t0, "").State
	for _, tt := range []struct {
		name, text, thread string
		c                  byte
		at                 time.Time
		err                error
	}{
		{"admit outside a thread", "/admit\n", "", 'B', t0, workflow.ErrScope},
		{"admit naming another", "/admit GOV-2026-0002\n", "GOV-2026-0001", 'B', t0, ErrOtherProposal},
		{"text naming another", "/admit\n\n> about GOV-2026-0002\n", "GOV-2026-0001", 'B', t0, ErrOtherProposal},
		{"signed before it opened", "/admit\n", "GOV-2026-0001", 'B', t0.Add(-time.Hour), workflow.ErrStaleSignature},
		{"stale signature", "/admit\n", "GOV-2026-0001", 'B', t0.Add(-25 * time.Hour), workflow.ErrStaleSignature},
		{"no such proposal", "/admit\n", "GOV-2026-0099", 'B', t0, ErrNoProposal},
		{"associate votes", "/admit\n", "GOV-2026-0001", 'C', t0, workflow.ErrNotAllowed},
		{"distributor denies own removal", "/deny no\n", "GOV-2026-0001", 'E', t0, workflow.ErrNotAllowed},
		{"SRC member denies own removal", "/deny no\n", "GOV-2026-0003", 'D', t0, workflow.ErrNotAllowed},
		{"SRC member approves own removal", "/admit\n", "GOV-2026-0003", 'D', t0, workflow.ErrNotAllowed},
		{"incident command", "/accept\n", "GOV-2026-0001", 'B', t0, workflow.ErrScope},
		{"two keyed commands", "/member key bob@ex.org\n/member add x@ex.org src\n", "", 'B', t0, workflow.ErrSyntax},
		{"all or nothing", "/admit\n/member remove nobody@ex.org\n", "GOV-2026-0001", 'B', t0, ErrConflict},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Apply(st, Request{Text: tt.text, Signer: signer(tt.c, tt.at), Thread: tt.thread}, t0, cfg)
			if !errors.Is(err, tt.err) || r.Applied || len(r.Actions) != 0 || !reflect.DeepEqual(r.State, st) {
				t.Errorf("err %v (want %v), applied %v, actions %v", err, tt.err, r.Applied, kinds(r.Actions))
			}
			if r.Receipt.Refused == "" {
				t.Error("no refusal in the receipt")
			}
		})
	}
}

// TestMemberProposalExpires: a /member change without quorum by its
// deadline expires; the SRC is told.
func TestMemberProposalExpires(t *testing.T) {
	st := apply(t, State{}, "/member remove security@old-distro.test\n", 'A', t0, "").State
	r := Tick(st, t0.Add(DefaultLazyConsensus), cfg)
	if p, _ := r.State.Proposal("GOV-2026-0001"); p.Status != StatusExpired || r.Roster {
		t.Fatalf("%+v", p)
	}
	if got := kinds(r.Actions); !reflect.DeepEqual(got, []string{"mail:roster-change→src"}) {
		t.Errorf("actions %v", got)
	}
	// Signing it again opens a new proposal.
	r = apply(t, r.State, "/member remove security@old-distro.test\n", 'B', t0.Add(DefaultLazyConsensus+time.Hour), "")
	if len(r.State.Open()) != 1 || r.State.Open()[0].ID != "GOV-2026-0002" {
		t.Errorf("open %+v", r.State.Open())
	}
}

// TestQuorumOne: a committee of one decides alone.
func TestQuorumOne(t *testing.T) {
	one := cfg
	one.Quorum = 1
	r, err := Apply(State{}, Request{Text: "/member add frank@ex.org distributor\n", Signer: signer('A', t0), Keys: []KeyVerdict{key('F', "frank@ex.org")}}, t0, one)
	if err != nil || !r.Roster {
		t.Fatalf("%v %v", err, kinds(r.Actions))
	}
	if _, ok := findMail(r.Actions, "distributor-welcome"); !ok {
		t.Errorf("no welcome: %v", kinds(r.Actions))
	}
}

func TestListAndStatus(t *testing.T) {
	states := map[string]KeyVerdict{fpr('A'): {Fingerprint: fpr('A'), Expires: t0.AddDate(0, 0, 10)}, fpr('B'): {Fingerprint: fpr('B'), Problems: []string{"keys: key revoked"}}}
	st := apply(t, State{}, "/member key bob@ex.org\n", 'A', t0, "", key('9', "bob@ex.org")).State
	c := cfg
	c.KeyStates = states
	r, err := Apply(st, Request{Text: "/member list\n/status\n", Signer: signer('A', t0)}, t0, c)
	if err != nil {
		t.Fatal(err)
	}
	list, status := r.Actions[0].(Reply).Text, r.Actions[1].(Reply).Text
	for _, want := range []string{"Roster as of 2026-11-23 09:00 UTC (Monday): 5 member(s), 3 in the SRC.",
		"Alice <alice@ex.org>\n      roles:  src\n      key " + fpr('A') + ": valid until 2026-12-03 09:00 UTC (Thursday) (the key expires 2026-12-03",
		"key " + fpr('B') + ": UNUSABLE: keys: key revoked", "key " + fpr('D') + ": not loaded", "origin: file\n",
		"Open proposals:\n  GOV-2026-0001  /member key bob@ex.org  opened"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	if !strings.Contains(status, "Open roster proposals as of") || !strings.Contains(status, "GOV-2026-0001  /member key bob@ex.org") {
		t.Errorf("status:\n%s", status)
	}
	if _, err := Apply(st, Request{Text: "/member list\n", Signer: signer('E', t0)}, t0, c); !errors.Is(err, workflow.ErrNotAllowed) {
		t.Errorf("a distributor listed the roster: %v", err)
	}
}

// TestStateStores: the state survives JSON, and calls never alias it.
func TestStateStores(t *testing.T) {
	st := mustSubmit(t)
	st = apply(t, st, "/admit\n", 'A', t0.Add(time.Minute), "GOV-2026-0001").State
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, st)
	}
	before := st.Proposals[0].Approvals[0]
	apply(t, st, "/admit\n", 'B', t0.Add(2*time.Minute), "GOV-2026-0001")
	if st.Proposals[0].Status != StatusOpen || st.Proposals[0].Approvals[0] != before || len(st.Overrides) != 0 {
		t.Error("Apply changed the caller's state")
	}
}

// TestRemovedVoterDoesNotCount: an approval by a member who has left the
// SRC since does not count towards the quorum.
func TestRemovedVoterDoesNotCount(t *testing.T) {
	st := apply(t, mustSubmit(t), "/admit\n", 'A', t0.Add(time.Minute), "GOV-2026-0001").State
	st = apply(t, st, "/member remove alice@ex.org\n", 'B', t0.Add(2*time.Minute), "").State
	st = apply(t, st, "/admit\n", 'D', t0.Add(3*time.Minute), "GOV-2026-0002").State
	if _, ok := member(st, "alice@ex.org"); ok {
		t.Fatal("alice not removed")
	}
	r := apply(t, st, "/admit\n", 'B', t0.Add(4*time.Minute), "GOV-2026-0001")
	if _, ok := member(r.State, "security@new-distro.test"); ok {
		t.Fatal("a removed member's approval counted")
	}
	if !strings.Contains(r.Receipt.Text(), "has 1 of 2 SRC approvals") {
		t.Errorf("receipt:\n%s", r.Receipt.Text())
	}
}

// TestOneKeyOneMember: a key pinned for one member cannot be pinned for
// another.
func TestOneKeyOneMember(t *testing.T) {
	for _, text := range []string{"/member add frank@ex.org src\n", "/member key ann@ex.org\n"} {
		_, err := Apply(State{}, Request{Text: text, Signer: signer('B', t0), Keys: []KeyVerdict{key('A', "frank@ex.org")}}, t0, cfg)
		if !errors.Is(err, ErrConflict) {
			t.Errorf("%q with alice's key: %v", text, err)
		}
	}
}

// TestRoleChange: new roles for a member need no key; they need the quorum,
// and the key stays.
func TestRoleChange(t *testing.T) {
	st := apply(t, State{}, "/member add ann@ex.org src\n", 'A', t0, "").State
	if e, _ := member(st, "ann@ex.org"); e.Has("src") {
		t.Fatal("one signature changed roles")
	}
	r := apply(t, st, "/member add ann@ex.org src\n", 'B', t0.Add(time.Minute), "", key('C', "ann@ex.org"))
	e, _ := member(r.State, "ann@ex.org")
	if !e.Has("src") || e.Fingerprint != fpr('C') || e.Change != "roles" || e.Origin != OriginFile {
		t.Errorf("entry %+v", e)
	}
	if _, err := Apply(State{}, Request{Text: "/member add ann@ex.org src\n", Signer: signer('A', t0), Keys: []KeyVerdict{key('8', "ann@ex.org")}}, t0, cfg); !errors.Is(err, ErrConflict) {
		t.Errorf("role change with another key: %v", err)
	}
	// A pending addition whose address joins meanwhile with another key
	// is denied when it comes to pass: it never replaces a key.
	st = apply(t, State{}, "/member add security@new-distro.test distributor\n", 'A', t0, "", key('7', "security@new-distro.test")).State
	sub, _ := Submit(st, submission(), t0, cfg)
	st = apply(t, sub.State, "/admit\n", 'A', t0.Add(time.Minute), "GOV-2026-0002").State
	st = apply(t, st, "/admit\n", 'B', t0.Add(2*time.Minute), "GOV-2026-0002").State
	r = apply(t, st, "/admit\n", 'B', t0.Add(3*time.Minute), "GOV-2026-0001")
	if e, _ := member(r.State, "security@new-distro.test"); e.Fingerprint != fpr('1') {
		t.Errorf("key replaced by an addition: %+v", e)
	}
	if p, _ := r.State.Proposal("GOV-2026-0001"); p.Status != StatusDenied {
		t.Errorf("addition %s", p.Status)
	}
}

// TestMemberGoneMeanwhile: a key or role change for someone removed while
// it was open changes nothing when its votes arrive.
func TestMemberGoneMeanwhile(t *testing.T) {
	st := apply(t, State{}, "/member key security@old-distro.test\n", 'A', t0, "", key('9', "security@old-distro.test")).State
	st = apply(t, st, "/member add security@old-distro.test distributor,associate\n", 'A', t0, "").State
	st = apply(t, st, "/member remove me\n", 'E', t0.Add(time.Minute), "").State
	for _, id := range []string{"GOV-2026-0001", "GOV-2026-0002"} {
		r := apply(t, st, "/admit\n", 'B', t0.Add(2*time.Minute), id)
		if _, ok := member(r.State, "security@old-distro.test"); ok || r.Roster {
			t.Errorf("%s brought the member back", id)
		}
		if p, _ := r.State.Proposal(id); p.Status != StatusExpired {
			t.Errorf("%s: %s %s", id, p.Status, p.Outcome)
		}
	}
}
