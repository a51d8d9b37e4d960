package listd

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/lists"
)

// The address kinds of TestRecipientPairs, with governance on.
var pairAddrs = []struct{ name, addr string }{
	{"security@", "security@ex.test"},
	{"security+ID@", "security+SEC-2026-0001@ex.test"},
	{"security+ID2@", "security+SEC-2026-0002@ex.test"},
	{"security+GOV@", "security+GOV-2026-0001@ex.test"},
	{"security+GOV2@", "security+GOV-2026-0002@ex.test"},
	{"distributors@", "distributors@ex.test"},
	{"distributors+apply@", "distributors+apply@ex.test"},
	{"announce+subscribe@", "announce+subscribe@ex.test"},
	{"announce+unsubscribe@", "announce+unsubscribe@ex.test"},
	{"announce+confirm@", "announce+confirm-abcdef@ex.test"},
	{"security+bounces@", "security+bounces@ex.test"},
	{"distributors+bounces@", "distributors+bounces@ex.test"},
	{"announce+bounces-JOB@", "announce+bounces-sec-2026-0001@ex.test"},
}

// pairDecision is the rule of recipients.go written out by kind name: "" the
// second recipient shares the transaction, else the 452 text it gets.
func pairDecision(a, b string) string {
	alone := map[string]bool{"distributors@": true, "distributors+apply@": true, "security+GOV@": true, "security+GOV2@": true}
	incident := map[string]bool{"security+ID@": true, "security+ID2@": true}
	switch {
	case a == b:
		return ""
	case a == "distributors@" || b == "distributors@":
		return "Mail for the embargo list distributors@ex.test travels in a message of its own; send it to this recipient in a separate message"
	case a == "distributors+apply@" || b == "distributors+apply@":
		return "An application to the embargo list travels in a message of its own; send it to this recipient in a separate message"
	case alone[a] || alone[b]:
		return "Mail about a roster proposal travels in a message of its own; send it to this recipient in a separate message"
	case incident[a] && incident[b]:
		return "One message goes to one incident address; send it to this recipient in a separate message"
	}
	return ""
}

func pairService(t *testing.T, governance, announceOpen bool) *Service {
	t.Helper()
	o := Options{Roster: &lists.Roster{Governance: governance, Lists: []lists.List{
		{Name: lists.Security, Address: "security@ex.test"},
		{Name: lists.Distributors, Address: "distributors@ex.test"},
		{Name: lists.Announce, Address: "announce@ex.test"},
	}}}
	if announceOpen {
		o.AnnounceOptions = &announce.Options{}
	}
	return New(o)
}

// TestRecipientPairs: for every ordered pair of address kinds, the second
// RCPT is accepted into the transaction or refused with 452 4.5.3 and a
// fixed sentence; the first is always accepted. The same envelope at DATA
// without the RCPT check is refused whole (554 5.5.3), never half handled.
func TestRecipientPairs(t *testing.T) {
	s := pairService(t, true, true)
	ctx := context.Background()
	for _, a := range pairAddrs {
		for _, b := range pairAddrs {
			if err := s.Recipient(ctx, "x@out.test", a.addr); err != nil {
				t.Fatalf("%s alone: %v", a.name, err)
			}
			err := s.Recipient(ctx, "x@out.test", b.addr, a.addr)
			want := pairDecision(a.name, b.name)
			var r *lists.Refusal
			switch {
			case want == "" && err != nil:
				t.Errorf("%s then %s: %v, want accepted", a.name, b.name, err)
			case want != "" && (!errors.As(err, &r) || r.Code != 452 || r.Enhanced != "4.5.3" || r.Text != want):
				t.Errorf("%s then %s: %v, want 452 4.5.3 %q", a.name, b.name, err, want)
			}
			ts := []lists.Target{}
			for _, x := range []string{a.addr, b.addr} {
				tt, _ := s.o.Roster.Route(x)
				ts = append(ts, tt)
			}
			err = s.checkTogether(ts)
			if want == "" && err != nil || want != "" && (!errors.As(err, &r) || r.Code != 554 || r.Enhanced != "5.5.3") {
				t.Errorf("%s and %s at DATA: %v", a.name, b.name, err)
			}
		}
	}
}

// TestRecipientThird: a third recipient is judged against both before it.
func TestRecipientThird(t *testing.T) {
	s := pairService(t, false, true)
	ctx := context.Background()
	if err := s.Recipient(ctx, "", "security+SEC-2026-0002@ex.test", "security@ex.test", "announce+subscribe@ex.test"); err != nil {
		t.Errorf("security@, announce+subscribe@, security+ID@: %v", err)
	}
	err := s.Recipient(ctx, "", "security+SEC-2026-0002@ex.test", "security@ex.test", "security+SEC-2026-0001@ex.test")
	if c, _ := refusalCode(err); c != 452 {
		t.Errorf("a second incident after security@ and a first: %v, want 452", err)
	}
	// An unroutable earlier recipient (a roster reloaded since) is ignored.
	if err := s.Recipient(ctx, "", "security@ex.test", "gone@ex.test"); err != nil {
		t.Errorf("after an address no longer routed: %v", err)
	}
}

// TestRecipientAnnounceClosed: without subscription by mail, the announce
// sub-addresses are refused at RCPT (550 5.7.1), so that they never ride
// along with a report to be refused at DATA.
func TestRecipientAnnounceClosed(t *testing.T) {
	s := pairService(t, false, false)
	for _, a := range []string{"announce+subscribe@ex.test", "announce+unsubscribe@ex.test", "announce+confirm-abc@ex.test"} {
		if c, e := refusalCode(s.Recipient(context.Background(), "", a, "security@ex.test")); c != 550 || e != "5.7.1" {
			t.Errorf("%s with subscription closed: %d %s, want 550 5.7.1", a, c, e)
		}
	}
	if err := s.Recipient(context.Background(), "", "announce+bounces-x@ex.test"); err != nil {
		t.Errorf("a release bounce with subscription closed: %v", err)
	}
}

func refusalCode(err error) (int, string) {
	var r *lists.Refusal
	if errors.As(err, &r) {
		return r.Code, r.Enhanced
	}
	return 0, fmt.Sprint(err)
}

// TestSeenKey: the duplicate key is the bytes and the set of recipients.
func TestSeenKey(t *testing.T) {
	a, b := [32]byte{1}, [32]byte{2}
	k := seenKey(a, []string{"security@ex.test", "announce+subscribe@ex.test"})
	if k != seenKey(a, []string{"ANNOUNCE+subscribe@ex.test", "security@ex.test", "security@ex.test"}) {
		t.Error("the key depends on recipient order, case or repetition")
	}
	if k == seenKey(a, []string{"security@ex.test"}) || k == seenKey(b, []string{"security@ex.test", "announce+subscribe@ex.test"}) {
		t.Error("other recipients or other bytes give the same key")
	}
}
