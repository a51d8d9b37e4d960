package senderauth

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
)

func ips(s ...string) []net.IPAddr {
	var out []net.IPAddr
	for _, x := range s {
		out = append(out, net.IPAddr{IP: net.ParseIP(x)})
	}
	return out
}

// spfZone is the fake DNS of the SPF tests.
func spfZone() *Static {
	return &Static{
		TXT: map[string][]string{
			"pass.test":     {"v=spf1 ip4:192.0.2.0/24 -all"},
			"fail.test":     {"v=spf1 ip4:198.51.100.1 -all"},
			"soft.test":     {"v=spf1 ~all"},
			"neutral.test":  {"v=spf1 ?all"},
			"v6.test":       {"v=spf1 ip6:2001:db8::/32 -all"},
			"inc.test":      {"v=spf1 include:pass.test -all"},
			"redir.test":    {"v=spf1 redirect=pass.test"},
			"a.test":        {"v=spf1 a -all"},
			"mx.test":       {"v=spf1 mx -all"},
			"two.test":      {"v=spf1 -all", "v=spf1 +all"},
			"slow.test":     {"v=spf1 include:never.test -all"},
			"void.test":     {"v=spf1 a:nx1.test a:nx2.test a:nx3.test ip4:192.0.2.1 -all"},
			"loop.test":     {"v=spf1 include:loop.test -all"},
			"many.test":     {"v=spf1 " + strings.Repeat("a:pass.test ", 11) + "ip4:192.0.2.1 -all"},
			"ten.test":      {"v=spf1 " + strings.Repeat("a:pass.test ", 10) + "ip4:192.0.2.1 -all"},
			"tempfail.test": {"v=spf1 include:broken.test -all"},
			"bad.test":      {"v=spf1 ip4:999.1.1.1 -all"},
		},
		IP: map[string][]net.IPAddr{
			"a.test":    ips("192.0.2.7"),
			"mail.test": ips("192.0.2.8"),
			"pass.test": ips("203.0.113.9"),
		},
		MX:   map[string][]*net.MX{"mx.test": {{Host: "mail.test.", Pref: 10}}},
		Slow: map[string]bool{"never.test": true},
		Fail: map[string]bool{"broken.test": true},
	}
}

// TestSPF evaluates RFC 7208 records through the bounded resolver: each
// result, each mechanism, and the limits of §4.6.4.
func TestSPF(t *testing.T) {
	for _, tc := range []struct {
		domain, ip string
		want       spf.Result
	}{
		{"pass.test", "192.0.2.5", spf.Pass},
		{"pass.test", "198.51.100.5", spf.Fail},
		{"fail.test", "192.0.2.5", spf.Fail},
		{"soft.test", "192.0.2.5", spf.SoftFail},
		{"neutral.test", "192.0.2.5", spf.Neutral},
		{"none.test", "192.0.2.5", spf.None},
		{"v6.test", "2001:db8::25", spf.Pass},
		{"v6.test", "2001:db9::25", spf.Fail},
		{"inc.test", "192.0.2.5", spf.Pass},
		{"inc.test", "198.51.100.5", spf.Fail},
		{"redir.test", "192.0.2.5", spf.Pass},
		{"redir.test", "198.51.100.5", spf.Fail},
		{"a.test", "192.0.2.7", spf.Pass},
		{"a.test", "192.0.2.8", spf.Fail},
		{"mx.test", "192.0.2.8", spf.Pass},
		{"mx.test", "192.0.2.7", spf.Fail},
		{"two.test", "192.0.2.5", spf.PermError},  // §4.5: one record
		{"void.test", "192.0.2.1", spf.PermError}, // §4.6.4: a third void lookup
		{"loop.test", "192.0.2.1", spf.PermError}, // §4.6.4: an include loop runs out of lookups
		{"many.test", "192.0.2.1", spf.PermError}, // §4.6.4: an 11th DNS mechanism
		{"ten.test", "192.0.2.1", spf.Pass},       // the 10 allowed, the record's own lookup aside
		{"tempfail.test", "192.0.2.1", spf.TempError},
		{"bad.test", "192.0.2.1", spf.PermError},
	} {
		v := New(Options{AuthservID: "mx.ex.test", Resolver: spfZone()})
		b := &budget{r: v.o.Resolver, perQuery: time.Second}
		got, dom, _ := v.checkSPF(context.Background(), b, Input{IP: net.ParseIP(tc.ip), Helo: "client.test", MailFrom: "someone@" + tc.domain})
		if got != tc.want || dom != tc.domain {
			t.Errorf("SPF of %s for %s: %s for %q, want %s", tc.domain, tc.ip, got, dom, tc.want)
		}
	}
}

// TestSPFTimeout: a name server that never answers is a temperror once the
// message's budget is spent, and the whole check takes the budget, not the
// DATA timeout.
func TestSPFTimeout(t *testing.T) {
	z := spfZone()
	v := New(Options{AuthservID: "mx.ex.test", Resolver: z, Budget: 300 * time.Millisecond, QueryTimeout: 200 * time.Millisecond})
	start := time.Now()
	r := v.Verify(context.Background(), Input{IP: net.ParseIP("192.0.2.5"), Helo: "c.test", MailFrom: "x@slow.test", Message: []byte("From: x@slow.test\r\n\r\nhi\r\n")})
	if r.SPF != string(spf.TempError) {
		t.Errorf("SPF with a silent name server: %s, want temperror", r.SPF)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the check took %v, beyond its budget", took)
	}
	if r.How != "" {
		t.Errorf("a temperror authenticated: %q", r.How)
	}
}

// TestBudgetCount: past maxQueries, every lookup is refused as temporary.
func TestBudgetCount(t *testing.T) {
	b := &budget{r: spfZone(), perQuery: time.Second}
	ctx := context.Background()
	for i := 0; i < maxQueries; i++ {
		if _, err := b.LookupTXT(ctx, "pass.test"); err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	_, err := b.LookupTXT(ctx, "pass.test")
	de, ok := err.(*net.DNSError)
	if !ok || !de.Temporary() || !b.exhausted() {
		t.Fatalf("lookup %d: %v, want a temporary DNS error", maxQueries+1, err)
	}
}

// TestSPFNullSender: the null sender is checked as postmaster@HELO (RFC
// 7208 §2.4), and named smtp.helo in our field.
func TestSPFNullSender(t *testing.T) {
	v := New(Options{AuthservID: "mx.ex.test", Resolver: spfZone()})
	r := v.Verify(context.Background(), Input{IP: net.ParseIP("192.0.2.5"), Helo: "pass.test", Message: []byte("From: x@pass.test\r\n\r\nhi\r\n")})
	if r.SPF != "pass" || !strings.Contains(r.Field, "spf=pass smtp.helo=pass.test") {
		t.Errorf("null sender: %s\n%s", r.SPF, r.Field)
	}
}
