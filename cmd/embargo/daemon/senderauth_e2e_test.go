package daemon_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/senderauth"
	"github.com/embargo-project/embargo/workflow"
)

// TestOwnSenderAuth is [intake] verify = "own" end to end over SMTP, with
// a fake DNS (no network): a reporter's key that arrives after a keyless
// report is pinned by itself only when embargo itself found the mail
// DKIM-signed by the From domain (or SPF-passed from the client's address
// for an aligned envelope domain); a forged Authentication-Results field
// under our own authserv-id, a tampered body or another domain's signature
// pin nothing. The archive keeps our own field on top, and no forged one.
func TestOwnSenderAuth(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	evilPub, evilPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	zone := &senderauth.Static{TXT: map[string][]string{
		"sel._domainkey.out.test":  {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
		"sel._domainkey.evil.test": {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(evilPub)},
		"_dmarc.out.test":          {"v=DMARC1; p=reject"},
		"spf.test":                 {"v=spf1 ip4:127.0.0.0/8 ip6:::1 -all"},
	}}
	h := daemontest.New(t, daemontest.Config{Extra: "\n[intake]\nverify = \"own\"\n"}, daemon.Options{Resolver: zone})
	g := daemontest.NewGPG(t)
	sign := func(domain string, key ed25519.PrivateKey, msg []byte) []byte {
		var out bytes.Buffer
		if err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: "sel", Signer: key}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	crlf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
	forgedAR := "Authentication-Results: ex.test; dkim=pass header.d=out.test; dmarc=pass header.from=out.test\n"

	for i, tc := range []struct {
		name     string
		domain   string // of the reporter's address
		envelope string // MAIL FROM of the later mail; "" the reporter's
		make     func(raw []byte) []byte
		pinned   bool
		how      string
	}{
		{name: "signed by the From domain", domain: "out.test", make: func(raw []byte) []byte { return sign("out.test", priv, raw) },
			pinned: true, how: "DMARC pass for out.test, checked by ex.test"},
		{name: "forged Authentication-Results under our id", domain: "out.test",
			make: func(raw []byte) []byte { return append(crlf(forgedAR), raw...) }},
		{name: "forged field above a tampered signature", domain: "out.test", make: func(raw []byte) []byte {
			s := sign("out.test", priv, raw)
			return append(crlf(forgedAR), bytes.Replace(s, []byte("my key"), []byte("my kez"), 1)...)
		}},
		{name: "signed by another domain", domain: "out.test", envelope: "mallory@evil.test", make: func(raw []byte) []byte { return sign("evil.test", evilPriv, raw) }},
		{name: "SPF pass for the From domain", domain: "spf.test", make: func(raw []byte) []byte { return raw },
			pinned: true, how: "SPF pass for spf.test, checked by ex.test"},
	} {
		rep := fmt.Sprintf("rep%d@%s", i, tc.domain)
		fpr := g.GenKey("Rep <" + rep + ">")
		h.MustSend(rep, []string{"security@ex.test"}, daemontest.Report(rep, "no key yet", "details"))
		id := fmt.Sprintf("SEC-2026-%04d", i+1)
		thread := "security+" + id + "@ex.test"
		raw := tc.make(crlf(mailWithKey(rep, thread, fmt.Sprintf("k%d@%s", i, tc.domain), g.Export(fpr))))
		env := tc.envelope
		if env == "" {
			env = rep
		}
		if err := daemontest.SendSMTP(h.Addr(), env, []string{thread}, raw); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var inc *workflow.Incident
		var archived []byte
		h.D.View(func(tx *bolt.Tx) error {
			if inc, err = incidentdb.Get(tx, workflow.ID(id)); err != nil {
				t.Fatal(err)
			}
			recs, err := incidentdb.Messages(tx, workflow.ID(id))
			if err != nil || len(recs) != 2 {
				t.Fatalf("%s: %d messages, %v", tc.name, len(recs), err)
			}
			archived, err = incidentdb.Raw(tx, recs[1].Seq)
			return err
		})
		if (inc.PinnedReporterKey == fpr) != tc.pinned {
			t.Errorf("%s: pinned %q, want pinned %v", tc.name, inc.PinnedReporterKey, tc.pinned)
		}
		if k, ok := inc.SeenReporterKey(fpr); !ok || k.Authenticated != tc.how {
			t.Errorf("%s: the key's record says authenticated %q, want %q", tc.name, k.Authenticated, tc.how)
		}
		if !bytes.HasPrefix(archived, []byte("Authentication-Results: ex.test;\r\n")) {
			t.Errorf("%s: the archived message does not start with our field:\n%.300s", tc.name, archived)
		}
		if n := bytes.Count(archived, []byte("Authentication-Results: ex.test;")); n != 1 {
			t.Errorf("%s: %d fields under our id in the archive, want ours alone:\n%.600s", tc.name, n, archived)
		}
		if bytes.Contains(archived, []byte("ex.test; dkim=pass header.d=out.test")) {
			t.Errorf("%s: the forged field is archived:\n%.600s", tc.name, archived)
		}
	}
	daemontest.MustContain(t, "the log", h.Logs.String(), "removed Authentication-Results fields claiming our authserv-id", "sender checked")
	// Ten messages checked: five reports and five later mails; three
	// authenticated (the signed mail, and both of spf.test's, report
	// included).
	for result, want := range map[string]float64{"authenticated": 3, "unauthenticated": 7, "unchecked": 0} {
		if got := daemon.CounterValue(h.D, "embargo_sender_checks_total", result); got != want {
			t.Errorf("embargo_sender_checks_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// TestOwnSenderAuthLimits: a committee member's reports, DKIM-signed by
// the member's domain and checked by embargo itself, are exempt from the
// per-sender intake limit (docs/threat-model.md B7); the same reports
// unsigned, or with a forged field under our authserv-id, are not.
func TestOwnSenderAuthLimits(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	zone := &senderauth.Static{TXT: map[string][]string{
		"sel._domainkey.ex.test": {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
	}}
	h := daemontest.New(t, daemontest.Config{Extra: "\n[intake]\nverify = \"own\"\nnew_incidents_per_sender_per_hour = 1\nnew_incidents_per_client_per_hour = 0\n"},
		daemon.Options{Resolver: zone})
	report := func(i int, signed bool, extra string) []byte {
		raw := []byte(strings.ReplaceAll(extra+daemontest.Report("alice@ex.test", fmt.Sprintf("finding %d", i), "details"), "\n", "\r\n"))
		if !signed {
			return raw
		}
		var out bytes.Buffer
		if err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{Domain: "ex.test", Selector: "sel", Signer: priv}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	for i := range 3 {
		if err := daemontest.SendSMTP(h.Addr(), "alice@ex.test", []string{"security@ex.test"}, report(i, true, "")); err != nil {
			t.Fatalf("signed report %d from a member: %v", i, err)
		}
	}
	refused := 0
	for i, extra := range []string{"", "Authentication-Results: ex.test; dkim=pass header.d=ex.test\n", ""} {
		if c, _ := daemontest.Code(daemontest.SendSMTP(h.Addr(), "alice@ex.test", []string{"security@ex.test"}, report(10+i, false, extra))); c == 450 {
			refused++
		}
	}
	if refused < 2 {
		t.Errorf("%d of 3 unsigned reports from a member refused beyond the limit of 1, want at least 2", refused)
	}
}

// TestOwnSenderAuthLMTP: over LMTP there is no client address, so embargo
// checks nothing itself (the MTA in front does): a DKIM-signed report is
// archived without our field, but a field claiming our authserv-id is
// still removed (RFC 8601 §5).
func TestOwnSenderAuthLMTP(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	zone := &senderauth.Static{TXT: map[string][]string{
		"sel._domainkey.out.test": {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
	}}
	h := daemontest.New(t, daemontest.Config{Extra: "[intake]\nverify = \"own\"\n[lmtp]\nlisten = \"127.0.0.1:0\"\n"}, daemon.Options{NoTick: true, Resolver: zone})
	raw := []byte(daemontest.CRLF("Authentication-Results: ex.test; dkim=pass header.d=out.test\n" + daemontest.Report("rep@out.test", "finding", "details")))
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, bytes.NewReader(raw), &dkim.SignOptions{Domain: "out.test", Selector: "sel", Signer: priv}); err != nil {
		t.Fatal(err)
	}
	tr, err := daemontest.Transact(h.D.LMTPAddr().String(), true, "rep@out.test", []string{"security@ex.test"}, signed.Bytes())
	if err == nil {
		err = tr.Data["security@ex.test"]
	}
	if err != nil {
		t.Fatal(err)
	}
	var archived []byte
	h.D.View(func(tx *bolt.Tx) error {
		recs, err := incidentdb.Messages(tx, "SEC-2026-0001")
		if err != nil || len(recs) != 1 {
			t.Fatalf("%d messages, %v", len(recs), err)
		}
		archived, err = incidentdb.Raw(tx, recs[0].Seq)
		return err
	})
	if bytes.Contains(archived, []byte("Authentication-Results: ")) {
		t.Errorf("over LMTP the archive has an Authentication-Results field under our id:\n%.400s", archived)
	}
	if len(zone.Asked()) != 0 {
		t.Errorf("over LMTP embargo looked up %v", zone.Asked())
	}
}

// panicResolver is a resolver with a bug: every lookup panics.
type panicResolver struct{ *senderauth.Static }

func (*panicResolver) LookupTXT(context.Context, string) ([]string, error) { panic("resolver bug") }

// TestOwnSenderAuthPanic: a panic in the checks (a library that chokes on
// a hostile signature) leaves the report unchecked, never lost: it is
// stored and answered 250, without our field.
func TestOwnSenderAuthPanic(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := daemontest.New(t, daemontest.Config{Extra: "\n[intake]\nverify = \"own\"\n"}, daemon.Options{Resolver: &panicResolver{&senderauth.Static{}}})
	var signed bytes.Buffer
	raw := []byte(daemontest.CRLF(daemontest.Report("rep@out.test", "finding", "details")))
	if err := dkim.Sign(&signed, bytes.NewReader(raw), &dkim.SignOptions{Domain: "out.test", Selector: "sel", Signer: priv}); err != nil {
		t.Fatal(err)
	}
	if err := daemontest.SendSMTP(h.Addr(), "rep@out.test", []string{"security@ex.test"}, signed.Bytes()); err != nil {
		t.Fatalf("the report was refused: %v", err)
	}
	h.D.View(func(tx *bolt.Tx) error {
		recs, err := incidentdb.Messages(tx, "SEC-2026-0001")
		if err != nil || len(recs) != 1 {
			t.Fatalf("%d messages, %v", len(recs), err)
		}
		return nil
	})
	daemontest.MustContain(t, "the log", h.Logs.String(), "sender authentication panicked")
	if got := daemon.CounterValue(h.D, "embargo_sender_checks_total", "unchecked"); got != 1 {
		t.Errorf("embargo_sender_checks_total{result=\"unchecked\"} = %v, want 1", got)
	}
}
