package senderauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// signer is a DKIM key published in a Static zone.
type signer struct {
	domain, selector string
	key              ed25519.PrivateKey
}

func newSigner(t testing.TB, z *Static, domain, selector string) signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if z.TXT == nil {
		z.TXT = map[string][]string{}
	}
	z.TXT[selector+"._domainkey."+domain] = []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
	return signer{domain: domain, selector: selector, key: priv}
}

// Sign returns msg (LF or CRLF line ends) with a DKIM-Signature on top.
func (s signer) Sign(t testing.TB, msg string) []byte {
	t.Helper()
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	var out bytes.Buffer
	if err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: s.domain, Selector: s.selector, Signer: s.key}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

const plainMsg = "From: Rep <rep@out.test>\nTo: security@ex.test\nSubject: my key\nMessage-ID: <1@out.test>\n\nhello\n"

// TestDKIM: a message signed by a key the fake DNS publishes passes; the
// same with its body or its From changed fails; an unknown selector is a
// permerror; a key server that fails is a temperror. None of the failures
// authenticates.
func TestDKIM(t *testing.T) {
	z := &Static{}
	s := newSigner(t, z, "out.test", "sel")
	v := New(Options{AuthservID: "mx.ex.test", Resolver: z})
	in := func(msg []byte) Input {
		return Input{IP: net.ParseIP("192.0.2.1"), Helo: "c.test", MailFrom: "bounce@elsewhere.test", Message: msg}
	}
	signed := s.Sign(t, plainMsg)
	r := v.Verify(context.Background(), in(signed))
	if r.DKIM != "pass" || r.How != "DKIM pass, d=out.test, checked by mx.ex.test" || r.FromDomain != "out.test" {
		t.Fatalf("signed: %+v", r)
	}
	if !strings.Contains(r.Field, "dkim=pass header.d=out.test") || !strings.HasPrefix(r.Field, "Authentication-Results: mx.ex.test;\r\n\t") {
		t.Errorf("our field:\n%s", r.Field)
	}

	for name, msg := range map[string][]byte{
		"tampered body": bytes.Replace(signed, []byte("hello"), []byte("hellO"), 1),
		"tampered From": bytes.Replace(signed, []byte("rep@out.test"), []byte("rap@out.test"), 1),
		"unsigned":      []byte(strings.ReplaceAll(plainMsg, "\n", "\r\n")),
	} {
		r := v.Verify(context.Background(), in(msg))
		if r.How != "" || r.DKIM == "pass" {
			t.Errorf("%s: %+v", name, r)
		}
	}

	other := &Static{TXT: map[string][]string{}}
	r = New(Options{AuthservID: "mx.ex.test", Resolver: other}).Verify(context.Background(), in(signed))
	if r.DKIM != "permerror" || r.How != "" {
		t.Errorf("no key published: %+v", r)
	}
	broken := &Static{Fail: map[string]bool{"sel._domainkey.out.test": true}}
	r = New(Options{AuthservID: "mx.ex.test", Resolver: broken}).Verify(context.Background(), in(signed))
	if r.DKIM != "temperror" || r.How != "" {
		t.Errorf("key server failing: %+v", r)
	}
}

// TestDKIMSecondFrom: a From field added above a signed message (the
// signature covers the one below; a reader shows the one above) is no
// single author: nothing is authenticated (RFC 7489 §6.6.1).
func TestDKIMSecondFrom(t *testing.T) {
	z := &Static{}
	s := newSigner(t, z, "evil.test", "sel")
	signed := s.Sign(t, strings.Replace(plainMsg, "rep@out.test", "me@evil.test", 1))
	forged := append([]byte("From: rep@out.test\r\n"), signed...)
	r := New(Options{AuthservID: "mx.ex.test", Resolver: z}).Verify(context.Background(), Input{Message: forged})
	if r.How != "" || r.FromDomain != "" {
		t.Errorf("two From fields: %+v", r)
	}
}

// TestDKIMUnaligned: a valid signature of another domain than From's
// authenticates nothing.
func TestDKIMUnaligned(t *testing.T) {
	z := &Static{}
	s := newSigner(t, z, "evil.test", "sel")
	r := New(Options{AuthservID: "mx.ex.test", Resolver: z}).Verify(context.Background(), Input{Message: s.Sign(t, plainMsg)})
	if r.DKIM != "pass" || r.How != "" {
		t.Errorf("d=evil.test for From out.test: %+v", r)
	}
}

// TestFromTooLong: a From field beyond 4 KiB is not parsed (docs/threat-model.md
// C4) and gets no verdict.
func TestFromTooLong(t *testing.T) {
	long := "From: " + strings.Repeat("a", 5000) + " <rep@out.test>\r\n\r\nbody\r\n"
	if d := fromDomain([]byte(long)); d != "" {
		t.Errorf("a %d-byte From was parsed: %q", len(long), d)
	}
	if d := fromDomain([]byte("From: Rep <rep@Out.Test>\r\n\r\nbody\r\n")); d != "out.test" {
		t.Errorf("From domain %q", d)
	}
}
