package listd

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"

	"github.com/embargo-project/embargo/lists"
)

// The recipients of one SMTP or LMTP transaction. A message comes once, with
// every recipient of its transaction (a peer, or Postfix over LMTP, sends
// mail for several of our addresses as one transaction), and one reply
// answers for all of them (per recipient in LMTP, but all with the same
// status here). The rule: every recipient of an accepted transaction is
// handled, in the message's one bbolt transaction, or the whole transaction
// is refused and nothing is stored. Recipients that cannot be handled
// together are never in one transaction: at RCPT, a recipient that cannot
// share the transaction with one accepted before it gets 452 4.5.3, and the
// client sends it in another transaction (RFC 5321 §4.5.3.1.10; Postfix
// defers that recipient and retries it alone). The first recipient is
// always judged alone, so every retry delivers at least one.
//
//	security@ and one security+SEC-…@      together: one message to that incident (a reply that copies the list)
//	security+SEC-A@ and security+SEC-B@    split: one message goes to one incident
//	security… and announce requests        together: the report and the request, in one bbolt transaction
//	anything and a bounce address          together (distributors@, applications, proposals aside): archived once
//	announce requests among themselves     together: each request handled
//	distributors@                          alone: its own key, its own refusals and alerts
//	distributors+apply@, security+GOV-…@   alone: handled by the governance core
//
// Mail to distributors@ is decrypted with that list's key and refused with
// an alert to the SRC for reasons that say nothing about the other
// recipients; sharing a transaction, a refusal would have to refuse them
// too (SMTP has one reply after DATA), or be kept from its sender.

// rcptKind is what handles a recipient.
type rcptKind int

const (
	kindIntake       rcptKind = iota // security@, security+SEC-…@
	kindProposal                     // security+GOV-…@ (a roster proposal's thread)
	kindDistributors                 // distributors@
	kindApply                        // distributors+apply@
	kindAnnounce                     // announce+subscribe@, +unsubscribe@, +confirm-…@
	kindBounce                       // every list's +bounces@, announce+bounces-…@
)

func kindOf(t lists.Target) rcptKind {
	d := strings.ToLower(t.Detail)
	switch {
	case d == lists.DetailBounces || strings.HasPrefix(d, lists.DetailBounces+"-"):
		return kindBounce
	case t.List == lists.Announce:
		return kindAnnounce
	case t.List == lists.Distributors && d == lists.DetailApply:
		return kindApply
	case t.List == lists.Distributors:
		return kindDistributors
	case strings.HasPrefix(d, "gov-"):
		return kindProposal
	}
	return kindIntake
}

// alone reports whether recipients of kind k share a transaction only with
// the same address.
func (k rcptKind) alone() bool {
	return k == kindDistributors || k == kindApply || k == kindProposal
}

// apart says why b cannot share a transaction with a, "" when it can. The
// sentence is fixed text for the 452 reply (docs/threat-model.md B4: no
// echo of what the client sent).
func apart(a, b lists.Target, r *lists.Roster) string {
	ka, kb := kindOf(a), kindOf(b)
	sameAddress := a.List == b.List && strings.EqualFold(a.Detail, b.Detail)
	switch {
	case ka.alone() || kb.alone():
		if sameAddress {
			return ""
		}
		switch {
		case ka == kindDistributors || kb == kindDistributors:
			return "Mail for the embargo list " + r.List(lists.Distributors).Address + " travels in a message of its own"
		case ka == kindApply || kb == kindApply:
			return "An application to the embargo list travels in a message of its own"
		}
		return "Mail about a roster proposal travels in a message of its own"
	case ka == kindIntake && kb == kindIntake:
		if a.Detail != "" && b.Detail != "" && !strings.EqualFold(a.Detail, b.Detail) {
			return "One message goes to one incident address"
		}
	}
	return ""
}

// Recipient decides at RCPT time whether we take mail for rcpt in a
// transaction that has accepted the recipients in accepted (smtpd.Accepted).
func (s *Service) Recipient(_ context.Context, _ string, rcpt string, accepted ...string) error {
	s = s.current()
	t, err := s.o.Roster.Route(rcpt)
	if err != nil {
		return err
	}
	if kindOf(t) == kindAnnounce && s.o.AnnounceOptions == nil {
		return &lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: "Subscribing by mail is not open on this list"}
	}
	var before []lists.Target
	for _, a := range accepted {
		if at, err := s.o.Roster.Route(a); err == nil {
			before = append(before, at)
		}
	}
	return s.together(append(before, t))
}

// together refuses a set of recipients of which the last cannot share a
// transaction with one before it: at RCPT with 452 (the client sends it
// again, alone); at DATA, where the RCPT check was not made (a caller other
// than smtpd), the whole transaction is refused permanently, for a 4xx there
// would bring the same set back forever.
func (s *Service) together(ts []lists.Target) error {
	if len(ts) < 2 {
		return nil
	}
	last := ts[len(ts)-1]
	for _, a := range ts[:len(ts)-1] {
		if why := apart(a, last, s.o.Roster); why != "" {
			// RFC 3463 X.5.3: too many recipients, the status of a recipient
			// the client may send in another transaction.
			return &lists.Refusal{Code: 452, Enhanced: "4.5.3", Text: why + "; send it to this recipient in a separate message"}
		}
	}
	return nil
}

// checkTogether is together over a whole envelope, at DATA.
func (s *Service) checkTogether(ts []lists.Target) error {
	for i := 1; i < len(ts); i++ {
		if err := s.together(ts[:i+1]); err != nil {
			return &lists.Refusal{Code: 554, Enhanced: "5.5.3", Text: err.Error()}
		}
	}
	return nil
}

// has reports whether any recipient is of one of the kinds.
func has(ts []lists.Target, kinds ...rcptKind) bool {
	for _, t := range ts {
		if slices.Contains(kinds, kindOf(t)) {
			return true
		}
	}
	return false
}

// seenKey is the duplicate-delivery key of a message (RFC 1047): its bytes
// and its recipients. The same bytes for other recipients are another
// delivery: the recipients split off at RCPT come back with the same
// bytes, and must not be taken for a duplicate.
func seenKey(sum [32]byte, rcpts []string) [32]byte {
	rs := make([]string, len(rcpts))
	for i, r := range rcpts {
		rs[i] = strings.ToLower(r)
	}
	slices.Sort(rs)
	rs = slices.Compact(rs)
	h := sha256.New()
	h.Write([]byte("embargo delivery\x00"))
	h.Write(sum[:])
	for _, r := range rs {
		h.Write([]byte("\x00" + r))
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}
