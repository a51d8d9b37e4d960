// Package senderauth is embargo's own sender authentication, for the
// deployment where embargo is the MX itself ([intake] verify = "own",
// docs/design.md §1): at arrival on the SMTP listener it checks the
// message's DKIM signatures (RFC 6376), SPF for the envelope sender against
// the client's address (RFC 7208) and DMARC (RFC 7489) for the From
// domain, and says how the From domain was authenticated, exactly as a
// trusted MTA's Authentication-Results would (listd's authenticatedFrom).
// It writes its findings as an Authentication-Results field (RFC 8601)
// under its own authserv-id for the archive, and removes fields that claim
// that authserv-id from the mail it receives (RFC 8601 §5): only our own
// results may bear our name.
//
// A result only ever adds trust (a reporter's later key pinned by itself, a
// committee member's report exempt from the intake limits,
// docs/threat-model.md D5, B7); no result refuses mail. Every lookup goes
// through one Resolver, bounded per message (resolver.go): what does not
// answer in time is a temperror, which never authenticates.
package senderauth

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/mail"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
)

// Options configures a Verifier.
type Options struct {
	// AuthservID names our results (RFC 8601 §2.2): [intake] authserv_id.
	AuthservID string
	// Resolver does every lookup; default net.DefaultResolver.
	Resolver Resolver
	// Budget is all the DNS time of one message (default DefaultBudget);
	// QueryTimeout one lookup's (default 2 s).
	Budget, QueryTimeout time.Duration
}

// Verifier checks the senders of messages. It is safe for concurrent use.
type Verifier struct{ o Options }

// New returns a Verifier.
func New(o Options) *Verifier {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = queryTimeout
	}
	return &Verifier{o: o}
}

// AuthservID is the name our results bear.
func (v *Verifier) AuthservID() string { return v.o.AuthservID }

// Input is one message as it arrived over SMTP.
type Input struct {
	IP       net.IP // the SMTP client's address
	Helo     string // the name it gave in HELO or EHLO, unverified
	MailFrom string // the reverse-path, "" for the null sender
	Message  []byte // the message as received
}

// Result is what Verify found.
type Result struct {
	// Field is the Authentication-Results header field (CRLF-terminated,
	// folded) to prepend to the archived message.
	Field string
	// FromDomain is the domain of the message's one From address, lower
	// case; "" when there is not exactly one (RFC 7489 §6.6.1).
	FromDomain string
	// How says how FromDomain was authenticated, as listd's
	// authenticatedFrom does ("DKIM pass, d=example.org, checked by
	// mx.example.org"); "" when it was not.
	How string
	// SPF, DKIM and DMARC are the results for the log: pass, fail, none,
	// temperror, ...
	SPF, DKIM, DMARC string
}

// maxFromBytes is the longest From field parsed, as lists/message's limit
// on address fields (docs/threat-model.md C4: net/mail is slow on long
// ones).
const maxFromBytes = 4 << 10

// maxSignatures bounds the DKIM signatures verified in one message (each
// costs a key lookup and a hash of the body).
const maxSignatures = 5

// Verify checks in's sender. It never fails: what cannot be checked is a
// temperror or permerror in the Result, and authenticates nothing.
func (v *Verifier) Verify(ctx context.Context, in Input) Result {
	ctx, cancel := context.WithTimeout(ctx, v.o.Budget)
	defer cancel()
	b := &budget{r: v.o.Resolver, perQuery: v.o.QueryTimeout}
	var res Result
	res.FromDomain = fromDomain(in.Message)

	spfRes, spfDomain, spfAR := v.checkSPF(ctx, b, in)
	dkimPass, dkimARs := v.checkDKIM(ctx, b, in.Message)
	res.SPF, res.DKIM = string(spfRes), summary(dkimARs)

	var dm dmarcResult
	if res.FromDomain != "" {
		dm = evaluateDMARC(ctx, b, res.FromDomain, dkimPass, spfDomain, spfRes == spf.Pass)
		res.How = dm.how
		if res.How != "" {
			res.How += ", checked by " + v.o.AuthservID
		}
	}
	results := append(dkimARs, spfAR)
	if dm.value != "" {
		results = append(results, &authres.DMARCResult{Value: dm.value, From: safeDomain(res.FromDomain)})
		res.DMARC = string(dm.value)
	}
	res.Field = formatField(v.o.AuthservID, results)
	return res
}

// checkSPF evaluates the SPF policy of the envelope sender's domain, or of
// the HELO name for the null sender (RFC 7208 §2.4), for the client's
// address, with the RFC's limits of 10 DNS-querying mechanisms and 2 void
// lookups (RFC 7208 §4.6.4, the library's defaults). It returns the result,
// the domain checked, and its Authentication-Results entry.
func (v *Verifier) checkSPF(ctx context.Context, b *budget, in Input) (spf.Result, string, authres.Result) {
	helo := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(in.Helo), "."))
	sender, domain := in.MailFrom, ""
	if _, d, ok := strings.Cut(in.MailFrom, "@"); ok {
		domain = strings.ToLower(d)
	}
	if in.MailFrom == "" && helo != "" {
		sender, domain = "postmaster@"+helo, helo
	}
	ar := &authres.SPFResult{Value: authres.ResultNone}
	if in.MailFrom == "" {
		ar.Helo = safeDomain(domain)
	} else {
		ar.From = safeDomain(domain)
	}
	if domain == "" || in.IP == nil {
		return spf.None, "", ar
	}
	r, _ := spf.CheckHostWithSender(in.IP, helo, sender, spf.WithContext(ctx), spf.WithResolver(b))
	if r == spf.PermError && b.exhausted() {
		r = spf.TempError // out of time, not a broken record
	}
	ar.Value = authres.ResultValue(r)
	return r, domain, ar
}

// checkDKIM verifies up to maxSignatures DKIM signatures (RFC 6376 §6).
// go-msgauth refuses the insecure l= tag, rsa-sha1 (RFC 8301 §3.1), RSA
// keys under 1024 bits (RFC 8301 §3.2), and signatures that do not cover
// From. It returns the domains (d=) of the signatures that passed.
func (v *Verifier) checkDKIM(ctx context.Context, b *budget, msg []byte) ([]string, []authres.Result) {
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return b.LookupTXT(ctx, name) },
		MaxVerifications: maxSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return nil, []authres.Result{&authres.DKIMResult{Value: authres.ResultPermError}}
	}
	if len(verifs) == 0 {
		return nil, []authres.Result{&authres.DKIMResult{Value: authres.ResultNone}}
	}
	var pass []string
	var out []authres.Result
	for _, vf := range verifs {
		d := strings.ToLower(strings.TrimSuffix(vf.Domain, "."))
		r := &authres.DKIMResult{Domain: safeDomain(d)}
		switch {
		case vf.Err == nil:
			r.Value = authres.ResultPass
			pass = append(pass, d)
		case dkim.IsTempFail(vf.Err):
			r.Value = authres.ResultTempError
		case dkim.IsPermFail(vf.Err):
			r.Value = authres.ResultPermError
		default:
			r.Value = authres.ResultFail
		}
		out = append(out, r)
	}
	return pass, out
}

// summary is the DKIM results in one word for the log: pass if any passed.
func summary(rs []authres.Result) string {
	best := ""
	for _, r := range rs {
		d, ok := r.(*authres.DKIMResult)
		if !ok {
			continue
		}
		if d.Value == authres.ResultPass {
			return "pass"
		}
		if best == "" {
			best = string(d.Value)
		}
	}
	return best
}

// fromDomain is the domain of the message's From address when it has
// exactly one From field holding exactly one address; otherwise "" and no
// DMARC (RFC 7489 §6.6.1: such a message names no single author domain,
// and one whose first From a reader shows differs from the one a DKIM
// signature covers must not pass).
func fromDomain(msg []byte) string {
	m, err := mail.ReadMessage(bytes.NewReader(headerOf(msg)))
	if err != nil {
		return ""
	}
	from := m.Header["From"]
	if len(from) != 1 || len(from[0]) > maxFromBytes {
		return "" // listd refuses such a From later; never parse it (docs/threat-model.md C4)
	}
	addrs, err := mail.ParseAddressList(from[0])
	if err != nil || len(addrs) != 1 {
		return ""
	}
	i := strings.LastIndexByte(addrs[0].Address, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addrs[0].Address[i+1:], "."))
}

// headerOf is msg's header section with its blank line (the body is never
// needed to read From).
func headerOf(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+2]
	}
	return append(append([]byte(nil), msg...), "\r\n\r\n"...)
}

// safeDomain is d when it is a plain host name, else "" (nothing a sender
// wrote reaches our header field unless it is letters, digits, dots,
// hyphens and underscores).
func safeDomain(d string) string {
	if d == "" || len(d) > 253 {
		return ""
	}
	for _, c := range d {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return ""
		}
	}
	return d
}

// formatField is the Authentication-Results field, one result a line.
// Nothing in it can break a line: the authserv-id comes from the checked
// configuration and must be a host name, the domains pass safeDomain, and
// the results are go-msgauth's fixed tokens.
func formatField(id string, results []authres.Result) string {
	if safeDomain(id) == "" {
		id = "embargo.invalid" // never: config refuses such an authserv_id
	}
	parts := strings.Split(authres.Format(id, results), "; ")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return "Authentication-Results: " + strings.Join(parts, ";\r\n\t") + "\r\n"
}
