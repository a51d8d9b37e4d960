package listd

import (
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/lists/inbound"
)

// TestAuthenticatedFrom: only a trusted authserv-id's passing, aligned
// result authenticates the From domain.
func TestAuthenticatedFrom(t *testing.T) {
	trusted := []string{"mx.ex.test"}
	tests := []struct {
		name, from string
		fields     []string
		want       string // "" not authenticated, else a substring
	}{
		{"no field", "rep@out.test", nil, ""},
		{"DKIM pass, aligned", "rep@out.test", []string{"mx.ex.test; dkim=pass header.d=out.test header.i=@out.test"}, "DKIM pass, d=out.test, checked by mx.ex.test"},
		{"OpenDKIM's comment with a semicolon", "rep@out.test", []string{"mx.ex.test; dkim=pass (2048-bit key; unprotected) header.d=out.test header.i=@out.test header.b=abcd"}, "DKIM pass"},
		{"DKIM pass for a parent domain (relaxed)", "rep@mail.out.test", []string{"mx.ex.test; dkim=pass header.d=out.test"}, "DKIM pass"},
		{"DKIM pass for another domain", "rep@out.test", []string{"mx.ex.test; dkim=pass header.d=evil.test"}, ""},
		{"DKIM pass for a child domain", "rep@out.test", []string{"mx.ex.test; dkim=pass header.d=sub.out.test"}, ""},
		{"DKIM pass for a one-label domain", "rep@out.test", []string{"mx.ex.test; dkim=pass header.d=test"}, ""},
		{"DKIM fail", "rep@out.test", []string{"mx.ex.test; dkim=fail header.d=out.test"}, ""},
		{"SPF pass, aligned", "rep@out.test", []string{"mx.ex.test; spf=pass smtp.mailfrom=bounce@out.test"}, "SPF pass for out.test"},
		{"SPF pass, not aligned", "rep@out.test", []string{"mx.ex.test; spf=pass smtp.mailfrom=evil.test"}, ""},
		{"DMARC pass", "rep@out.test", []string{"mx.ex.test 1; dmarc=pass (p=reject dis=none) header.from=out.test"}, "DMARC pass for out.test"},
		{"DMARC pass for another From", "rep@out.test", []string{"mx.ex.test; dmarc=pass header.from=evil.test"}, ""},
		{"untrusted authserv-id", "rep@out.test", []string{"evil.test; dkim=pass header.d=out.test"}, ""},
		{"trusted id in a comment only", "rep@out.test", []string{"evil.test (mx.ex.test); dkim=pass header.d=out.test"}, ""},
		{"case of the authserv-id", "rep@out.test", []string{"MX.EX.TEST; dkim=pass header.d=OUT.TEST"}, "DKIM pass, d=out.test"},
		{"a forged field below the trusted one", "rep@out.test", []string{"mx.ex.test; dkim=none", "evil.test; dkim=pass header.d=out.test"}, ""},
		{"unsupported version", "rep@out.test", []string{"mx.ex.test 2; dkim=pass header.d=out.test"}, ""},
		{"oversized field", "rep@out.test", []string{"mx.ex.test; dkim=pass header.d=out.test" + strings.Repeat(" x=y", 2000)}, ""},
	}
	for _, tc := range tests {
		var h mail.Header
		for _, f := range tc.fields {
			h.Add("Authentication-Results", f)
		}
		got := authenticatedFrom(h, tc.from, trusted)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if got := authenticatedFrom(h, tc.from, nil); got != "" {
			t.Errorf("%s: with no trusted authserv-id: %q", tc.name, got)
		}
	}
}

// TestSenderAuthenticatedOwn: embargo's own verdict (Envelope.Auth) counts
// only for the domain of the From address listd read; without it, or for
// another domain, a trusted MTA's fields decide as before.
func TestSenderAuthenticatedOwn(t *testing.T) {
	s := &Service{o: Options{TrustedAuthservIDs: []string{"mx.ex.test"}}}
	open := func(hdr string) *inbound.Message {
		m, err := inbound.Open([]byte(strings.ReplaceAll(hdr+"Subject: s\n\nbody\n", "\n", "\r\n")), inbound.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	own := &SenderAuth{FromDomain: "out.test", How: "DKIM pass, d=out.test, checked by ex.test"}
	for _, tc := range []struct {
		name string
		auth *SenderAuth
		hdr  string
		want string
	}{
		{"own verdict", own, "From: rep@out.test\n", own.How},
		{"own verdict, From domain in upper case", own, "From: rep@OUT.test\n", own.How},
		{"own verdict for another domain", own, "From: rep@evil.test\n", ""},
		{"own check found nothing", &SenderAuth{FromDomain: "out.test"}, "From: rep@out.test\n", ""},
		{"no own check, trusted MTA", nil, "Authentication-Results: mx.ex.test; dkim=pass header.d=out.test\nFrom: rep@out.test\n", "DKIM pass, d=out.test, checked by mx.ex.test"},
		{"own found nothing, trusted MTA did", &SenderAuth{FromDomain: "out.test"}, "Authentication-Results: mx.ex.test; dkim=pass header.d=out.test\nFrom: rep@out.test\n", "DKIM pass, d=out.test, checked by mx.ex.test"},
	} {
		d := &delivery{env: Envelope{Auth: tc.auth}, msg: open(tc.hdr)}
		if got := s.senderAuthenticated(d); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
