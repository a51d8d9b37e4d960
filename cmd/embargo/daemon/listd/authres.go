package listd

import (
	"strings"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-msgauth/authres"

	"github.com/embargo-project/embargo/lists/message"
)

// maxAuthResults bounds the Authentication-Results fields read from one
// message, and maxAuthResultBytes each one (docs/threat-model.md C1, C4).
const (
	maxAuthResults     = 20
	maxAuthResultBytes = 4 << 10
)

// authenticatedFrom says how the domain of from, the message's From
// address, was authenticated according to the Authentication-Results
// fields (RFC 8601) of a trusted authserv-id: DMARC pass for that domain,
// or DKIM or SPF pass for a domain aligned with it (RFC 7489 §3.1, relaxed:
// the same domain or a parent of it). "" when none says so. Only fields
// whose authserv-id is in trusted count; the MTA with that id removes
// fields claiming it from the mail it receives (RFC 8601 §5), so a sender
// cannot forge one.
func authenticatedFrom(h mail.Header, from string, trusted []string) string {
	if len(trusted) == 0 {
		return ""
	}
	_, domain, ok := strings.Cut(strings.ToLower(from), "@")
	if !ok || domain == "" {
		return ""
	}
	vals := h.Values("Authentication-Results")
	if len(vals) > maxAuthResults {
		vals = vals[:maxAuthResults]
	}
	for _, v := range vals {
		if len(v) > maxAuthResultBytes {
			continue
		}
		// go-msgauth splits at ";" without reading comments, and MTAs
		// write comments with semicolons ("(2048-bit key; unprotected)").
		id, results, err := authres.Parse(message.StripComments(v))
		if err != nil || !trustedID(id, trusted) {
			continue
		}
		if how := alignedPass(results, domain); how != "" {
			return how + ", checked by " + strings.ToLower(id)
		}
	}
	return ""
}

// senderAuthenticated says how the From domain of d's message was
// authenticated: by embargo's own checks at arrival (Envelope.Auth), else
// by a trusted MTA's Authentication-Results. "" when by neither. Our own
// verdict counts only for the domain of the From address listd read.
func (s *Service) senderAuthenticated(d *delivery) string {
	from := d.msg.From()
	if a := d.env.Auth; a != nil && a.How != "" {
		if _, domain, ok := strings.Cut(strings.ToLower(from), "@"); ok && domain == strings.ToLower(a.FromDomain) {
			return a.How
		}
	}
	return authenticatedFrom(d.msg.Outer().Header, from, s.o.TrustedAuthservIDs)
}

// alignedPass finds a passing result for the From domain.
func alignedPass(results []authres.Result, domain string) string {
	for _, r := range results {
		switch r := r.(type) {
		case *authres.DMARCResult:
			if r.Value == authres.ResultPass && strings.EqualFold(strings.TrimSuffix(r.From, "."), domain) {
				return "DMARC pass for " + domain
			}
		case *authres.DKIMResult:
			if r.Value == authres.ResultPass && aligned(r.Domain, domain) {
				return "DKIM pass, d=" + strings.ToLower(r.Domain)
			}
		case *authres.SPFResult:
			d := r.From
			if _, after, ok := strings.Cut(d, "@"); ok {
				d = after
			}
			if r.Value == authres.ResultPass && aligned(d, domain) {
				return "SPF pass for " + strings.ToLower(d)
			}
		}
	}
	return ""
}

func trustedID(id string, trusted []string) bool {
	for _, t := range trusted {
		if strings.EqualFold(id, t) {
			return true
		}
	}
	return false
}

// aligned reports whether an authenticated domain d covers the From domain:
// the same, or a parent with at least two labels (a one-label "org" is no
// organisation).
func aligned(d, from string) bool {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if d == "" || !strings.Contains(d, ".") {
		return false
	}
	return from == d || strings.HasSuffix(from, "."+d)
}
