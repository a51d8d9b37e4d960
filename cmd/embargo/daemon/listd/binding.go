package listd

import (
	"fmt"
	"strings"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// Commands whose signed text names the list and the incident ([commands]
// require_binding; docs/threat-model.md E3). A signature proves who wrote
// a text, not where it was meant to go: a signed command read by anyone
// (a member of this or another committee, a relay that saw it in clear)
// can be sent again, to another incident's address here or to another
// project's embargo list where the same member sits. The replay cache
// stops the same signature applying twice on this list only, and only once
// it came here; the 24-hour age bounds the window, not the place.
//
// With the switch on, a signed command applies only if what the signature
// covers names this list (its address, or any local+detail@ form of it,
// such as security+SEC-2026-0001@example.org) and, in an incident's
// thread, that incident's ID, in a proposal's thread that proposal's ID.
// Roster commands outside a proposal's thread and /oncall need the list
// alone: they act on this list, not on one incident. What the signature
// covers is the signed text, quoted lines included, and the protected
// To, Cc and Subject fields of the signed entity (RFC 9788 §2,
// inbound.Message.SignedHeader). Every mail embargo sends the committee
// names the incident's address in its body ("Reply to
// security+SEC-…@… with signed commands."), so a reply quoting it, above
// or below the quote, binds without the member doing anything.
//
// Every entry point that authorises commands by a signature asks
// bindingMissing after the signature counted and encryption was checked,
// and before the replay cache records it: the incident thread
// (commands.go), roster and proposal commands (governance.go
// rosterCommands), and /oncall (tick.go). A refused message records
// nothing, so the member can send a corrected text. Distributors'
// /affected answers (answers.go) must be encrypted to the list key, which
// binds them to this list, and their notice names the incident: they are
// not asked.

// bindingMissing reports what a signed message's text fails to name when
// the committee requires binding: "" when it is bound (or binding is off).
// want is the incident or proposal ID the commands are for, "" for
// commands that act on the list alone (roster commands outside a
// proposal's thread, /oncall).
func (s *Service) bindingMissing(sec lists.List, msg *inbound.Message, want workflow.ID) string {
	if !s.o.RequireBinding {
		return ""
	}
	texts := append([]string{msg.Text()}, msg.SignedHeader()...)
	list, id := false, want == ""
	for _, t := range texts {
		list = list || namesList(t, sec.Address)
		id = id || namesID(t, want)
	}
	switch {
	case !list && !id:
		return fmt.Sprintf("the list address %s or %s", sec.Address, want)
	case !list:
		return "the list address " + sec.Address
	case !id:
		return string(want)
	}
	return ""
}

// namesID reports whether text names the incident or proposal ID as a
// whole word, in any case (workflow.NamedIDs, NamedProposals).
func namesID(text string, want workflow.ID) bool {
	ids := workflow.NamedProposals(text)
	for _, n := range workflow.NamedIDs(text) {
		ids = append(ids, string(n))
	}
	for _, n := range ids {
		if strings.EqualFold(n, string(want)) {
			return true
		}
	}
	return false
}

// namesList reports whether text names the list address addr, or a
// local+detail@domain form of it, as a whole address: not inside a longer
// local part (xsecurity@) or domain (example.org.evil.test). Case is
// ignored (the domain's always, the local part's as every MTA here
// delivers it).
func namesList(text, addr string) bool {
	local, domain, ok := strings.Cut(strings.ToLower(addr), "@")
	if !ok || local == "" || domain == "" {
		return false
	}
	low := strings.ToLower(text)
	at := "@" + domain
	for from := 0; ; {
		i := strings.Index(low[from:], at)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(at)
		from = i + 1
		if end < len(low) && domainByte(low[end]) || end+1 < len(low) && low[end] == '.' && domainByte(low[end+1]) {
			continue // a longer domain
		}
		start := i
		for start > 0 && localByte(low[start-1]) {
			start--
		}
		lp := low[start:i]
		if lp == local || strings.HasPrefix(lp, local+"+") && len(lp) > len(local)+1 {
			return true
		}
	}
}

// domainByte is a byte that may continue a domain name (RFC 5321 §4.1.2).
func domainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// localByte is a byte of a dot-atom local part (RFC 5322 §3.2.3 atext and
// the dot).
func localByte(c byte) bool {
	return domainByte(c) || c >= 'A' && c <= 'Z' || strings.IndexByte(".!#$%&'*+/=?^`{|}~", c) >= 0
}

// bindingRefusal is the receipt for a member's message whose signature
// counts but whose signed text does not name what the committee requires:
// nothing applied, what the text lacked, and how a normal reply names it.
// Like every receipt it is encrypted to the member's pinned key; the log
// line names the thread and the signer's fingerprint only.
func (s *Service) bindingRefusal(sec lists.List, mem lists.Member, id workflow.ID, thread string, msg *inbound.Message, now time.Time, missing string, want workflow.ID) ([]queue.Msg, error) {
	v := msg.Signature()
	s.log.Info("commands refused: the signed text does not name the list and the thread ([commands] require_binding)", "thread", id, "signer", v.Fingerprint)
	addr := sec.Address
	need := "this list's address (" + sec.Address + ", or a " + sec.Local() + "+TAG@" + sec.Domain() + " form of it)"
	if want != "" {
		addr = sec.SubAddress(string(want))
		need += " and " + string(want)
	}
	why := fmt.Sprintf("Nothing applied: this committee requires the text your signature covers to name %s ([commands] require_binding), "+
		"so that a signed command cannot be sent again to another incident or another project's list. Your signed text does not name %s.", need, missing)
	fix := fmt.Sprintf("Reply to embargo's mail about it and keep the quoted text (above or below your commands, as your mail client puts it): "+
		"that text names %s. Or write %s anywhere in the signed text, for example in a line \"For %s\" above the commands. "+
		"Then sign it again and send it. Your signature was not recorded as used: a corrected message, signed anew, counts.", addr, addr, addr)
	return s.commandRefusal(sec, mem, id, thread, msg, now, why, fix)
}
