package senderauth

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
)

// TestAligned is RFC 7489 §3.1 with the organizational domains of §3.2.
func TestAligned(t *testing.T) {
	for _, tc := range []struct {
		d, from string
		mode    dmarc.AlignmentMode
		want    bool
	}{
		{"example.org", "example.org", dmarc.AlignmentStrict, true},
		{"Example.ORG.", "example.org", dmarc.AlignmentStrict, true},
		{"mail.example.org", "example.org", dmarc.AlignmentStrict, false},
		{"mail.example.org", "example.org", dmarc.AlignmentRelaxed, true},
		{"example.org", "lists.example.org", dmarc.AlignmentRelaxed, true},
		{"a.example.org", "b.example.org", dmarc.AlignmentRelaxed, true}, // siblings share the organization
		{"example.org", "example.net", dmarc.AlignmentRelaxed, false},
		{"evilexample.org", "example.org", dmarc.AlignmentRelaxed, false},
		{"example.co.uk", "other.co.uk", dmarc.AlignmentRelaxed, false}, // a public suffix is no organization
		{"co.uk", "example.co.uk", dmarc.AlignmentRelaxed, false},
		{"alice.github.io", "bob.github.io", dmarc.AlignmentRelaxed, false}, // private suffixes too
		{"", "example.org", dmarc.AlignmentRelaxed, false},
	} {
		if got := aligned(tc.d, tc.from, tc.mode); got != tc.want {
			t.Errorf("aligned(%q, %q, %s) = %v", tc.d, tc.from, tc.mode, got)
		}
	}
}

// TestDMARC: the policy of the From domain, else of its organizational
// domain, decides the alignment modes; a DMARC pass names the From domain;
// a policy that cannot be fetched or read authenticates nothing.
func TestDMARC(t *testing.T) {
	const from = "From: rep@lists.out.test\nTo: security@ex.test\nSubject: s\n\nbody\n"
	for _, tc := range []struct {
		name    string
		signer  string // the d= of the signature
		policy  map[string][]string
		fail    bool // the policy's name server fails
		spfFrom string
		want    string // How, without ", checked by"
		dmarc   string
	}{
		{name: "no policy, relaxed DKIM", signer: "out.test", want: "DKIM pass, d=out.test", dmarc: "none"},
		{name: "no policy, sibling", signer: "mail.out.test", want: "DKIM pass, d=mail.out.test", dmarc: "none"},
		{name: "org policy, relaxed", signer: "out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject"}}, want: "DMARC pass for lists.out.test", dmarc: "pass"},
		{name: "org policy, strict", signer: "out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject; adkim=s"}}, dmarc: "fail"},
		{name: "own policy, strict, exact", signer: "lists.out.test", policy: map[string][]string{"_dmarc.lists.out.test": {"v=DMARC1; p=none; adkim=s"}}, want: "DMARC pass for lists.out.test", dmarc: "pass"},
		{name: "own policy before org", signer: "out.test", policy: map[string][]string{
			"_dmarc.lists.out.test": {"v=DMARC1; p=none; adkim=s"}, "_dmarc.out.test": {"v=DMARC1; p=none"}}, dmarc: "fail"},
		{name: "unaligned", signer: "evil.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject"}}, dmarc: "fail"},
		{name: "two records: no policy", signer: "out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject; adkim=s", "v=DMARC1; p=none"}}, want: "DKIM pass, d=out.test", dmarc: "none"},
		{name: "unreadable policy", signer: "out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=sometimes"}}, dmarc: "permerror"},
		{name: "policy server failing", signer: "out.test", fail: true, dmarc: "temperror"},
		{name: "SPF aligned, relaxed", signer: "evil.test", spfFrom: "bounces.out.test", want: "SPF pass for bounces.out.test", dmarc: "none"},
		{name: "SPF aligned, strict policy", signer: "evil.test", spfFrom: "bounces.out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject; aspf=s"}}, dmarc: "fail"},
		{name: "SPF with policy", signer: "evil.test", spfFrom: "out.test", policy: map[string][]string{"_dmarc.out.test": {"v=DMARC1; p=reject"}}, want: "DMARC pass for lists.out.test", dmarc: "pass"},
	} {
		z := &Static{TXT: map[string][]string{}, Fail: map[string]bool{}}
		for k, v := range tc.policy {
			z.TXT[k] = v
		}
		if tc.fail {
			z.Fail["_dmarc.lists.out.test"] = true
		}
		s := newSigner(t, z, tc.signer, "s1")
		mailFrom := "bounce@elsewhere.test"
		if tc.spfFrom != "" {
			mailFrom = "bounce@" + tc.spfFrom
			z.TXT[tc.spfFrom] = []string{"v=spf1 ip4:192.0.2.0/24 -all"}
		}
		v := New(Options{AuthservID: "mx.ex.test", Resolver: z, Budget: time.Second})
		r := v.Verify(context.Background(), Input{IP: net.ParseIP("192.0.2.1"), Helo: "c.test", MailFrom: mailFrom, Message: s.Sign(t, from)})
		want := tc.want
		if want != "" {
			want += ", checked by mx.ex.test"
		}
		if r.How != want || r.DMARC != tc.dmarc {
			t.Errorf("%s: How %q, DMARC %q; want %q, %q\n%s", tc.name, r.How, r.DMARC, want, tc.dmarc, r.Field)
		}
		if !strings.Contains(r.Field, "dmarc="+tc.dmarc+" header.from=lists.out.test") {
			t.Errorf("%s: field\n%s", tc.name, r.Field)
		}
	}
}
