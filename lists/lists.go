// Package lists owns list policy: which addresses are ours, who may post where,
// who receives which copies. It is a pure core (docs/design.md §1): no I/O, no
// clock, no SMTP — refusals carry their SMTP status as data so that smtpd can
// answer without this package knowing SMTP.
//
// Address conventions follow RFC 5233 (sub-addressing with "+") and RFC 5321
// §2.4 (the domain is case-insensitive; we also compare our own local parts
// without case, as Postfix does).
package lists

import (
	"slices"
	"strings"
)

// Name identifies one of the three lists.
type Name string

// The lists embargo runs (docs/design.md, table of people and addresses).
const (
	Security     Name = "security"
	Distributors Name = "distributors"
	Announce     Name = "announce"
)

// List is one configured list.
type List struct {
	Name       Name
	Address    string // e.g. security@example.org, lower case
	Encryption string // "optional" or "required"
	// OuterSubject is what relays see as the Subject of encrypted mail.
	OuterSubject string
}

// EncryptionRequired reports whether members without a usable key get no copy.
func (l List) EncryptionRequired() bool { return l.Encryption == "required" }

// Local returns the local part of the list address.
func (l List) Local() string { l1, _, _ := strings.Cut(l.Address, "@"); return l1 }

// Domain returns the domain of the list address.
func (l List) Domain() string { _, d, _ := strings.Cut(l.Address, "@"); return d }

// ListID is the list's List-Id field value (RFC 2919 §2), e.g.
// "<security.example.org>".
func (l List) ListID() string { return "<" + l.Local() + "." + l.Domain() + ">" }

// SubAddress returns local+detail@domain.
func (l List) SubAddress(detail string) string {
	return l.Local() + "+" + detail + "@" + l.Domain()
}

// Member is a person on the roster.
type Member struct {
	Email       string
	Name        string
	Roles       []string
	Fingerprint string // pinned primary key fingerprint, upper-case hex; may be empty
}

// Has reports whether the member holds role.
func (m Member) Has(role string) bool { return slices.Contains(m.Roles, role) }

// Roster is the configured set of lists and people.
type Roster struct {
	Lists   []List
	Members []Member

	// Governance routes the addresses of governance by mail
	// (lists/governance): distributors+apply@ for applications and
	// security+GOV-YYYY-NNNN@ for a proposal's thread. Off, they are
	// unknown recipients, as for a daemon that does not handle them.
	Governance bool
}

// List returns the list with that name.
func (r *Roster) List(n Name) List {
	for _, l := range r.Lists {
		if l.Name == n {
			return l
		}
	}
	return List{Name: n}
}

// Member finds a member by address.
func (r *Roster) Member(addr string) (Member, bool) {
	for _, m := range r.Members {
		if strings.EqualFold(m.Email, addr) {
			return m, true
		}
	}
	return Member{}, false
}

// WithRole lists the members holding role, in roster order.
func (r *Roster) WithRole(role string) []Member {
	var out []Member
	for _, m := range r.Members {
		if m.Has(role) {
			out = append(out, m)
		}
	}
	return out
}

// IsCommittee reports whether addr belongs to the SRC (full members or associates).
func (r *Roster) IsCommittee(addr string) bool {
	m, ok := r.Member(addr)
	return ok && (m.Has("src") || m.Has("associate"))
}

// IsOurs reports whether addr is one of our list addresses or their
// sub-addresses, so automatic mail is never sent to ourselves (docs/threat-model.md B9).
func (r *Roster) IsOurs(addr string) bool {
	_, err := r.Route(addr)
	return err == nil || strings.HasSuffix(strings.ToLower(addr), "@"+r.List(Security).Domain())
}

// Refusal refuses an SMTP transaction on purpose: the reply code, the RFC
// 3463 enhanced status code and a sentence the sender should read. Routing
// (Route), parsing (lists/message) and the list daemon return it. smtpd
// answers with any error that has SMTPStatus (smtpd/reply.go), so it needs
// no import of this package; listd keeps any error that is Permanent from
// being taken for a storage failure.
type Refusal struct {
	Code     int    // RFC 5321 §4.2 reply code, 4xx or 5xx
	Enhanced string // RFC 3463 enhanced status code, e.g. "5.7.1"
	Text     string // one line of ASCII for the sender
}

// The methods smtpd and listd look for (errors.As).
var _ interface {
	error
	SMTPStatus() (code int, enhanced string)
	Permanent() bool
} = (*Refusal)(nil)

func (e *Refusal) Error() string { return e.Text }

// SMTPStatus gives the reply code and RFC 3463 enhanced status code.
func (e *Refusal) SMTPStatus() (int, string) { return e.Code, e.Enhanced }

// Permanent reports whether retrying the same message cannot help.
func (e *Refusal) Permanent() bool { return e.Code >= 500 }

// Target is where one recipient address leads.
type Target struct {
	List   Name
	Detail string // the sub-address detail, "" for the plain list address
}

// Sub-address details with a fixed meaning.
const (
	DetailBounces     = "bounces"     // envelope sender of our own mail
	DetailSubscribe   = "subscribe"   // announce+subscribe@
	DetailUnsubscribe = "unsubscribe" // announce+unsubscribe@
	DetailApply       = "apply"       // distributors+apply@: applications to join the list (docs/process.md §5)
)

// VERP (docs/design.md §4): each copy the private lists send has its own
// envelope sender, <list>+bounces-<token>@, so that a delivery status
// notification (RFC 3464), which goes to the envelope sender (RFC 5321
// §4.5.5), names the copy it is about. The token is VERPTokenLen
// characters of lower-case base32 (RFC 4648 §6, no padding): one
// encrypted block that daemon/listd opens and checks. Only the shape is
// checked here.
const (
	DetailVERPPrefix = DetailBounces + "-"
	VERPTokenLen     = 26 // 128 bits
)

// IsVERP reports whether detail (without the "+") has the shape of a
// private list's per-copy bounce address: bounces-<token>.
func IsVERP(detail string) bool {
	tok, ok := strings.CutPrefix(strings.ToLower(detail), DetailVERPPrefix)
	if !ok || len(tok) != VERPTokenLen {
		return false
	}
	for _, c := range tok {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// Route maps a recipient to a list, or refuses it. RFC 5321 §3.3: the answer to
// RCPT says whether we take mail for that address; unknown addresses get 550 5.1.1
// (RFC 3463 "bad destination mailbox address").
func (r *Roster) Route(rcpt string) (Target, error) {
	local, domain, ok := strings.Cut(rcpt, "@")
	unknown := &Refusal{Code: 550, Enhanced: "5.1.1", Text: "No such recipient here"}
	if !ok {
		return Target{}, unknown
	}
	base, detail, hasDetail := strings.Cut(local, "+")
	if hasDetail && detail == "" {
		return Target{}, unknown
	}
	for _, l := range r.Lists {
		if !strings.EqualFold(domain, l.Domain()) || !strings.EqualFold(base, l.Local()) {
			continue
		}
		t := Target{List: l.Name, Detail: detail}
		switch l.Name {
		case Security:
			// security+<incident>@, security+<proposal>@ (a roster change
			// or distributor application: GOV-YYYY-NNNN) and our bounce
			// addresses, plain and per copy (IsVERP). Any well-formed ID or
			// token is accepted whether or not it exists, so the answer
			// reveals nothing (docs/design.md §2).
			if hasDetail && strings.ToLower(detail) != DetailBounces && !IsVERP(detail) && !looksLikeID(detail) && !(r.Governance && looksLikeProposal(detail)) {
				return Target{}, unknown
			}
			if strings.EqualFold(detail, DetailBounces) || IsVERP(detail) {
				t.Detail = strings.ToLower(detail)
			}
		case Announce:
			// Output only (docs/threat-model.md F5): nobody posts to the announce list.
			d := strings.ToLower(detail)
			if !hasDetail {
				return Target{}, &Refusal{Code: 550, Enhanced: "5.7.1", Text: "The announce list is output only; to subscribe, write to " + l.SubAddress(DetailSubscribe)}
			}
			if d != DetailSubscribe && d != DetailUnsubscribe && d != DetailBounces && !strings.HasPrefix(d, "confirm-") && !strings.HasPrefix(d, DetailBounces+"-") {
				return Target{}, unknown
			}
			t.Detail = d
		case Distributors:
			d := strings.ToLower(detail)
			if hasDetail && d != DetailBounces && !IsVERP(d) && !(r.Governance && d == DetailApply) {
				return Target{}, unknown
			}
			t.Detail = d
		}
		return t, nil
	}
	return Target{}, unknown
}

func looksLikeID(s string) bool { return looksLikeTagged(s, "SEC-") }

// looksLikeProposal matches a roster proposal's ID, GOV-YYYY-NNNN (the
// governance core's; workflow.ParseProposalID).
func looksLikeProposal(s string) bool { return looksLikeTagged(s, "GOV-") }

func looksLikeTagged(s, prefix string) bool {
	s = strings.ToUpper(s)
	if !strings.HasPrefix(s, prefix) || len(s) < len("SEC-2026-0001") || len(s) > 18 {
		return false
	}
	for i, c := range s[4:] {
		if i == 4 {
			if c != '-' {
				return false
			}
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
