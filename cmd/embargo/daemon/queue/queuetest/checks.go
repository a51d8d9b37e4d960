package queuetest

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/dkim"
)

// Rule names one of the checks the recorder makes of every transaction it
// keeps (docs/threat-model.md §2.2). A test that sends odd mail on purpose
// turns a rule off with Allow, saying why.
type Rule string

const (
	// RuleFormat: CRLF line ends only, no NUL, lines of at most 998 octets
	// (RFC 5322 §2.1.1).
	RuleFormat Rule = "format"
	// RuleHeader: a header that parses, with exactly one From, Date and
	// Message-ID field (RFC 5322 §3.6).
	RuleHeader Rule = "header"
	// RuleMessageID: no Message-ID names two different messages. A copy may
	// go out again with its Message-ID (a resend after a crash, or the
	// announce fan-out's next batch: docs/threat-model.md A3), so a repeat
	// is allowed when the envelope sender and the From, To, Date and Subject
	// fields are those of the first transaction.
	RuleMessageID Rule = "message-id"
	// RuleOpaqueID: a Message-ID at Policy.Domain is a bare token of hex
	// digits: it says nothing of the kind of mail it names, in a header
	// that travels in clear (docs/threat-model.md D7).
	RuleOpaqueID Rule = "opaque-id"
	// RuleDomain: the From field's address and a non-null envelope sender
	// are in Policy.Domain (docs/threat-model.md B4).
	RuleDomain Rule = "domain"
	// RuleDKIM: a valid DKIM-Signature with d=Policy.Domain under
	// Policy.DKIM's key (RFC 6376 §6).
	RuleDKIM Rule = "dkim"
	// RuleEncrypted: mail sent from a Policy.Encrypted envelope sender is
	// PGP/MIME-encrypted at its top level (RFC 3156 §4).
	RuleEncrypted Rule = "encrypted"
	// RuleCommands: no line of the text a Policy.Committee address gets in
	// clear starts with "/" (docs/threat-model.md E5).
	RuleCommands Rule = "commands"
)

// AllRules is every rule, for a recorder that takes mail which is not
// embargo's.
var AllRules = []Rule{RuleFormat, RuleHeader, RuleMessageID, RuleOpaqueID, RuleDomain, RuleDKIM, RuleEncrypted, RuleCommands}

// Policy is what the recorder knows of the sender's configuration; the rules
// that need a field it leaves empty are not checked.
type Policy struct {
	// Domain is the configured domain.
	Domain string
	// DKIM, when set, is the public key of the configured DKIM selector.
	DKIM *DKIMKey
	// Encrypted lists envelope-sender prefixes (e.g.
	// "distributors+bounces-") whose every message must be encrypted.
	Encrypted []string
	// Committee lists the committee members' addresses.
	Committee []string
}

// DKIMKey is a selector and its public key (RSA or Ed25519).
type DKIMKey struct {
	Selector string
	Public   crypto.PublicKey
}

// Expect sets the policy the rules check against.
func (r *Recorder) Expect(p Policy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.policy = p
}

// Allow turns rules off for this recorder; reason, which must be given, is
// logged at the end of the test.
func (r *Recorder) Allow(reason string, rules ...Rule) {
	r.t.Helper()
	if strings.TrimSpace(reason) == "" || len(rules) == 0 {
		r.t.Fatal("queuetest: Allow needs a reason and at least one rule")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rule := range rules {
		r.allowed[rule] = reason
	}
}

// Problems runs every rule not allowed over the transactions kept so far and
// returns what they found, one line per problem. The recorder reports them
// itself when the test ends.
func (r *Recorder) Problems() []string {
	r.mu.Lock()
	p, allowed, msgs := r.policy, make(map[Rule]string, len(r.allowed)), r.msgs
	for k, v := range r.allowed {
		allowed[k] = v
	}
	r.mu.Unlock()
	c := checker{p: p, allowed: allowed, seen: make(map[string]int)}
	for i := range msgs {
		c.check(i, msgs)
	}
	return c.problems
}

// report is the recorder's cleanup: after the server stopped, every problem
// fails the test.
func (r *Recorder) report() {
	for rule, reason := range r.allowed {
		r.t.Logf("queuetest: rule %q off: %s", rule, reason)
	}
	for _, p := range r.Problems() {
		r.t.Errorf("queuetest: %s", p)
	}
}

type checker struct {
	p        Policy
	allowed  map[Rule]string
	seen     map[string]int // Message-ID → first transaction
	problems []string
}

func (c *checker) on(rule Rule) bool {
	_, off := c.allowed[rule]
	return !off
}

func (c *checker) fail(i int, m Message, rule Rule, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("transaction %d (MAIL FROM:<%s> to %v) breaks rule %q: %s",
		i, m.From, m.To, rule, fmt.Sprintf(format, args...)))
}

func (c *checker) check(i int, msgs []Message) {
	m := msgs[i]
	if c.on(RuleFormat) {
		if err := CheckCRLF(m.Data); err != nil {
			c.fail(i, m, RuleFormat, "%v", err)
		}
	}
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(m.Data)))
	if err != nil {
		if c.on(RuleHeader) {
			c.fail(i, m, RuleHeader, "header does not parse: %v", err)
		}
		return
	}
	h := mail.Header{Header: message.Header{Header: th}}
	if c.on(RuleHeader) {
		for _, k := range []string{"From", "Date", "Message-Id"} {
			if n := len(th.Values(k)); n != 1 {
				c.fail(i, m, RuleHeader, "%d %s fields, want 1", n, k)
			}
		}
		if _, err := h.Date(); err != nil {
			c.fail(i, m, RuleHeader, "the Date field does not parse: %v", err)
		}
	}
	c.checkMessageID(i, msgs, h)
	c.checkDomain(i, m, h)
	if c.p.DKIM != nil && c.p.Domain != "" && c.on(RuleDKIM) {
		if err := verifyDKIM(m.Data, c.p.Domain, c.p.DKIM); err != nil {
			c.fail(i, m, RuleDKIM, "%v", err)
		}
	}
	encrypted := isEncrypted(h)
	if c.on(RuleEncrypted) && !encrypted {
		for _, prefix := range c.p.Encrypted {
			if prefix != "" && strings.HasPrefix(strings.ToLower(m.From), strings.ToLower(prefix)) {
				c.fail(i, m, RuleEncrypted, "sent from %s in clear", prefix)
			}
		}
	}
	if c.on(RuleCommands) && !encrypted && c.toCommittee(m) {
		if line, err := commandLine(m.Data); err != nil {
			c.fail(i, m, RuleCommands, "body does not parse: %v", err)
		} else if line != "" {
			c.fail(i, m, RuleCommands, "a line starts with %q outside quoted text", line)
		}
	}
}

func (c *checker) checkMessageID(i int, msgs []Message, h mail.Header) {
	m := msgs[i]
	id, err := h.MessageID()
	if err != nil || id == "" || !c.on(RuleMessageID) {
		if c.on(RuleHeader) && (err != nil || id == "") {
			c.fail(i, m, RuleHeader, "Message-ID missing or malformed (%v)", err)
		}
		return
	}
	if c.p.Domain != "" && c.on(RuleOpaqueID) {
		if local, ok := strings.CutSuffix(strings.ToLower(id), "@"+strings.ToLower(c.p.Domain)); ok && !isHex(local) {
			c.fail(i, m, RuleOpaqueID, "Message-ID <%s> is more than a token: it may say what kind of mail this is", id)
		}
	}
	first, ok := c.seen[id]
	if !ok {
		c.seen[id] = i
		return
	}
	if !sameMessage(msgs[first], m) {
		c.fail(i, m, RuleMessageID, "Message-ID <%s> of transaction %d names another message", id, first)
	}
}

func isHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return s != ""
}

// sameMessage: the envelope sender and the fields that make a message what
// it is are equal; the body may differ (a resend is sealed anew).
func sameMessage(a, b Message) bool {
	if a.From != b.From {
		return false
	}
	ha, hb := headerOf(a.Data), headerOf(b.Data)
	for _, k := range []string{"From", "To", "Date", "Subject"} {
		if ha.Get(k) != hb.Get(k) {
			return false
		}
	}
	return true
}

func headerOf(data []byte) textproto.Header {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
	return h
}

func (c *checker) checkDomain(i int, m Message, h mail.Header) {
	if c.p.Domain == "" || !c.on(RuleDomain) {
		return
	}
	if m.From != "" && !inDomain(m.From, c.p.Domain) {
		c.fail(i, m, RuleDomain, "envelope sender %q is not in %s", m.From, c.p.Domain)
	}
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 {
		c.fail(i, m, RuleDomain, "From is not one address (%v)", err)
		return
	}
	if !inDomain(from[0].Address, c.p.Domain) {
		c.fail(i, m, RuleDomain, "From address %q is not in %s", from[0].Address, c.p.Domain)
	}
}

func inDomain(addr, domain string) bool {
	at := strings.LastIndexByte(addr, '@')
	return at > 0 && strings.EqualFold(addr[at+1:], domain)
}

func (c *checker) toCommittee(m Message) bool {
	for _, to := range m.To {
		for _, member := range c.p.Committee {
			if strings.EqualFold(to, member) {
				return true
			}
		}
	}
	return false
}

// isEncrypted: the top level is multipart/encrypted with the OpenPGP
// protocol (RFC 3156 §4).
func isEncrypted(h mail.Header) bool {
	t, params, err := h.ContentType()
	return err == nil && t == "multipart/encrypted" && strings.EqualFold(params["protocol"], "application/pgp-encrypted")
}

// commandLine returns the first line starting with "/" in the inline
// text/plain parts of a message in clear ("" if none). Attachments are not
// read for commands (docs/threat-model.md E5), nor are signatures.
func commandLine(data []byte) (string, error) {
	e, err := message.Read(bytes.NewReader(data))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return "", err
	}
	var found string
	err = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) {
			return err
		}
		t, _, _ := part.Header.ContentType()
		if disp, _, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition")); t != "text/plain" || disp == "attachment" {
			return nil
		}
		body, err := io.ReadAll(part.Body)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
			if strings.HasPrefix(line, "/") && found == "" {
				found = line
			}
		}
		return nil
	})
	return found, err
}

// verifyDKIM checks that a signature by domain verifies with key, resolving
// the selector to key alone.
func verifyDKIM(data []byte, domain string, key *DKIMKey) error {
	record, err := dkimRecord(key.Public)
	if err != nil {
		return err
	}
	name := key.Selector + "._domainkey." + domain
	lookup := func(q string) ([]string, error) {
		if strings.EqualFold(q, name) {
			return []string{record}, nil
		}
		return nil, fmt.Errorf("no DKIM key at %s", q)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range verifs {
		if v.Err == nil && strings.EqualFold(v.Domain, domain) {
			return nil
		}
		if v.Err != nil {
			errs = append(errs, v.Err)
		}
	}
	if len(verifs) == 0 {
		return errors.New("no DKIM-Signature")
	}
	return fmt.Errorf("no valid DKIM signature by %s: %v", domain, errors.Join(errs...))
}

func dkimRecord(pub crypto.PublicKey) (string, error) {
	if ed, ok := pub.(ed25519.PublicKey); ok {
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(ed), nil
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
}
