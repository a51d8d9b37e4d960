package listd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
)

// onCallValues are what FuzzOnCallRender takes from the fuzzer: the
// committee members' display names in the roster (a /member command or
// the configuration sets them), the subject of the report whose incident
// the handover moves, the argument of alice's /oncall and the prose of her
// message after its command block.
type onCallValues struct {
	alice, bob, subject, arg, note string
}

// onCallStep is one message of onCallWalk: from signer, into the
// incident's thread or to the security list alone, at at; or, with no
// text, the service's tick at at.
type onCallStep struct {
	at       time.Time
	signer   string // "alice" or "bob"
	inThread bool
	text     string
	digest   bool // a tick that must send the Monday digest
}

// onCallSteps: a tick; alice asks for a handover with the fuzzed argument, in the
// incident's thread; bob acknowledges outside any thread; alice takes
// over again at once, and bob asks who is on call; the Monday digest
// names the on-call. On realistic values that is a handover requested,
// taken (the incident moved to bob) and taken back (moved to alice).
func onCallSteps(v onCallValues) []onCallStep {
	day := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	return []onCallStep{
		{at: day(23, 9)}, // the first tick records the week: the digest is next Monday's
		{at: day(24, 10), signer: "alice", inThread: true, text: "/oncall " + v.arg + "\n\n" + v.note + "\n"},
		{at: day(24, 11), signer: "bob", text: "/oncall ack\n"},
		{at: day(25, 9), signer: "alice", inThread: true, text: "/oncall me\n"},
		{at: day(25, 10), signer: "bob", text: "/oncall\n"},
		{at: day(30, 0), digest: true},
	}
}

// FuzzOnCallRender walks an on-call handover (onCallSteps) with the
// members' names, the incident's subject, the /oncall argument and prose
// from the fuzzer: the handover request and the "on call" notices to the
// SRC, the receipts in and outside a thread, the committee's copies of
// the command mail, the Monday digest. Every row queued is made as the
// delivery worker makes it and checked by checkQueued
// (docs/threat-model.md B2, B10, D6, E5); each message must queue its
// signer a receipt. TestOnCallWalk shows that realistic values reach
// every on-call mail.
func FuzzOnCallRender(f *testing.F) {
	k := newStoreKeys(f)
	f.Add("Alice Example", "Bob Example", "heap overflow in the parser", "bob@ex.test", "Away until Thursday.")
	// More in testdata/fuzz/FuzzOnCallRender: hostile names (CR and LF,
	// header lines, encoded words, "/" lines, quotes and angle brackets,
	// long lines, invalid UTF-8, control and bidi characters) and
	// arguments.
	f.Fuzz(func(t *testing.T, alice, bob, subject, arg, note string) {
		onCallWalk(t, k, onCallValues{alice, bob, subject, arg, note})
	})
}

// TestOnCallWalk: onCallWalk, with realistic values, renders the
// handover request, both take-overs and the digest, so that
// FuzzOnCallRender's executions check them.
func TestOnCallWalk(t *testing.T) {
	k := newStoreKeys(t)
	got := onCallWalk(t, k, onCallValues{"Alice Example", "Bob Example", "heap overflow in the parser", "Bob@Ex.test", "Away until Thursday."})
	t.Logf("queued: %v", got)
	for kind, n := range map[string]int{"oncall": 6, "receipt": 4, "digest": 2} {
		if got[kind] < n {
			t.Errorf("%d rows of %s, want at least %d (all: %v)", got[kind], kind, n, got)
		}
	}
}

// onCallWalk runs onCallSteps on a service whose roster names alice and
// bob as v says and whose clock moves, checks every row each step queues
// with checkQueued, and returns how many rows of each kind were queued.
// A message must queue its signer's receipt; a tick that sent the digest,
// one to each member.
func onCallWalk(t *testing.T, k *storeKeys, v onCallValues) map[string]int {
	now := mon
	s, db := storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.Mono = func() time.Duration { return now.Sub(mon) }
		r := *o.Roster
		r.Members = append([]lists.Member(nil), r.Members...)
		r.Members[0].Name, r.Members[1].Name = v.alice, v.bob
		o.Roster = &r
	})
	total := map[string]int{}
	after := uint64(0)
	queuedNow := func() map[string]int {
		kinds := map[string]int{}
		for _, c := range checkQueued(t, s, db, after, k.readers()) {
			kinds[c.Kind]++
			total[c.Kind]++
			after = max(after, c.ID)
		}
		return kinds
	}
	env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}, Client: "192.0.2.1"}
	if raw, ok := fuzzReport(v.subject, "Rep Orter", "Steps to reproduce.\n", ""); !ok || s.Handle(context.Background(), env, raw) != nil {
		openIncident(t, s, db, nil)
	}
	queuedNow()
	signers := map[string]*keys.Key{"alice": k.alice, "bob": k.bob}
	for i, st := range onCallSteps(v) {
		now = st.at
		where := fmt.Sprintf("step %d (%q)", i+1, st.text)
		if st.text == "" {
			if err := s.Tick(context.Background(), now); err != nil {
				t.Fatalf("%s: tick: %v", where, err)
			}
			if kinds := queuedNow(); st.digest && kinds["digest"] != 2 {
				t.Fatalf("%s queued %v, want the digest to each member", where, kinds)
			}
			continue
		}
		key := signers[st.signer]
		to, subject := "security@ex.test", "on call"
		if st.inThread {
			to, subject = fuzzThread, "Re: [SEC-2026-0001]"
		}
		raw, ok := memberMailTo(k, key, now, to, fmt.Sprintf("oncall%d.fuzz@ex.test", i), subject, st.text, i%2 == 1)
		if !ok {
			t.Fatalf("%s: the mail cannot be written", where)
		}
		if err := s.Handle(context.Background(), Envelope{From: key.Email(), To: []string{to}}, raw); err != nil {
			t.Fatalf("%s: refused: %v", where, err)
		}
		if kinds := queuedNow(); kinds["receipt"] != 1 {
			t.Fatalf("%s queued %v, want a receipt", where, kinds)
		}
	}
	return total
}
