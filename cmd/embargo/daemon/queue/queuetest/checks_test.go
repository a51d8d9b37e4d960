package queuetest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

const good = "From: \"Alice via security\" <security@ex.test>\r\n" +
	"To: bob@ex.test\r\n" +
	"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n" +
	"Message-ID: <19ad5e3c2a4aaa1@ex.test>\r\n" +
	"Subject: [SEC-2026-0001] copy\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Alice wrote on Monday:\r\n" +
	"> /accept\r\n" +
	"  /lead me\r\n"

func msg(from, data string, to ...string) Message {
	if len(to) == 0 {
		to = []string{"bob@ex.test"}
	}
	return Message{From: from, To: to, Data: []byte(data)}
}

// problems runs the rules over msgs as the recorder's cleanup does.
func problems(p Policy, allowed map[Rule]string, msgs ...Message) []string {
	r := &Recorder{policy: p, allowed: allowed, msgs: msgs}
	if r.allowed == nil {
		r.allowed = map[Rule]string{}
	}
	return r.Problems()
}

// TestRules: each rule passes the message embargo composes and fails the
// same message with its control broken, and only that rule fails.
func TestRules(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sign := func(data, domain string) string {
		var out bytes.Buffer
		err := dkim.Sign(&out, strings.NewReader(data), &dkim.SignOptions{Domain: domain, Selector: "embargo", Signer: priv,
			HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"}})
		if err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	policy := Policy{Domain: "ex.test", DKIM: &DKIMKey{Selector: "embargo", Public: pub},
		Encrypted: []string{"distributors+bounces-"}, Committee: []string{"bob@ex.test"}}
	bounce := "security+bounces-AAAA@ex.test"
	encrypted := strings.Replace(good, "text/plain; charset=utf-8\r\n\r\n",
		"multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n"+
			"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"+
			"--b\r\nContent-Type: application/octet-stream\r\n\r\n/not read\r\n--b--\r\n", 1)
	resent := strings.Replace(good, "  /lead me", "  /lead me, sealed anew", 1)

	if p := problems(policy, nil, msg(bounce, sign(good, "ex.test")), msg(bounce, sign(resent, "ex.test")),
		msg("distributors+bounces-B@ex.test", sign(strings.Replace(encrypted, "aaa1@", "aaa2@", 1), "ex.test"), "dist@vendor.test"),
		msg("", sign(strings.Replace(good, "aaa1@", "aaa3@", 1), "ex.test"))); len(p) != 0 {
		t.Fatalf("embargo's own mail breaks rules:\n%s", strings.Join(p, "\n"))
	}

	for _, tc := range []struct {
		rule Rule
		msgs []Message
	}{
		{RuleFormat, []Message{msg(bounce, sign(good, "ex.test")+"bare\nLF\r\n")}},
		{RuleFormat, []Message{msg(bounce, sign(good, "ex.test")+"NUL\x00\r\n")}},
		{RuleFormat, []Message{msg(bounce, sign(good, "ex.test")+strings.Repeat("x", 999)+"\r\n")}},
		{RuleHeader, []Message{msg(bounce, sign(strings.Replace(good, "Date: ", "X-Date: ", 1), "ex.test"))}},
		{RuleHeader, []Message{msg(bounce, sign("From: a@ex.test\r\n"+good, "ex.test"))}},
		{RuleHeader, []Message{msg(bounce, sign("Message-ID: <9@ex.test>\r\n"+good, "ex.test"))}},
		{RuleMessageID, []Message{msg(bounce, sign(good, "ex.test")),
			msg(bounce, sign(strings.Replace(good, "] copy", "] another", 1), "ex.test"))}},
		{RuleMessageID, []Message{msg(bounce, sign(good, "ex.test")), msg("security+bounces-BBBB@ex.test", sign(good, "ex.test"))}},
		{RuleOpaqueID, []Message{msg(bounce, sign(strings.Replace(good, "aaa1@", "aaa1.distributor-final@", 1), "ex.test"))}},
		{RuleDomain, []Message{msg("security+bounces-AAAA@evil.test", sign(good, "ex.test"))}},
		{RuleDomain, []Message{msg(bounce, sign(strings.Replace(good, "<security@ex.test>", "<alice@alice.test>", 1), "ex.test"))}},
		{RuleDKIM, []Message{msg(bounce, good)}},
		{RuleDKIM, []Message{msg(bounce, sign(good, "other.test"))}},
		{RuleDKIM, []Message{msg(bounce, strings.Replace(sign(good, "ex.test"), "] copy", "] c0py", 1))}},
		{RuleEncrypted, []Message{msg("distributors+bounces-B@ex.test", sign(good, "ex.test"), "dist@vendor.test")}},
		{RuleCommands, []Message{msg(bounce, sign(good+"/disclose now\r\n", "ex.test"))}},
	} {
		// A message broken after it was signed fails DKIM too: the format
		// cases leave that rule out.
		allowed := func(rules ...Rule) map[Rule]string {
			m := map[Rule]string{}
			if tc.rule == RuleFormat {
				m[RuleDKIM] = "signed before it was broken"
			}
			for _, r := range rules {
				m[r] = "test"
			}
			return m
		}
		p := problems(policy, allowed(), tc.msgs...)
		if len(p) == 0 {
			t.Errorf("rule %s: no problem found in\n%s", tc.rule, tc.msgs[len(tc.msgs)-1].Data)
			continue
		}
		for _, line := range p {
			if !strings.Contains(line, "rule \""+string(tc.rule)+"\"") {
				t.Errorf("rule %s: another rule broken: %s", tc.rule, line)
			}
		}
		if p := problems(policy, allowed(tc.rule), tc.msgs...); len(p) != 0 {
			t.Errorf("rule %s allowed, still: %v", tc.rule, p)
		}
	}

	// A rule whose policy field is empty checks nothing; the others still do.
	if p := problems(Policy{}, nil, msg("x@evil.test", good)); len(p) != 0 {
		t.Errorf("empty policy: %v", p)
	}
	// Commands in an attachment or a mail to somebody else are not
	// committee text.
	attached := strings.Replace(good, "text/plain; charset=utf-8\r\n", "text/plain; charset=utf-8\r\nContent-Disposition: attachment\r\n", 1) + "/x\r\n"
	if p := problems(Policy{Committee: []string{"bob@ex.test"}}, nil, msg(bounce, attached),
		msg(bounce, strings.Replace(good, "aaa1@", "aaa2@", 1)+"/x\r\n", "rep@out.test")); len(p) != 0 {
		t.Errorf("attachment or reporter mail: %v", p)
	}
}

// TestRecorderReportsAtCleanup: a recorder fails its test at the end for a
// message that breaks a rule, and Allow needs a reason.
func TestRecorderReportsAtCleanup(t *testing.T) {
	ft := &fakeT{TB: t}
	r := &Recorder{t: ft, allowed: map[Rule]string{}, msgs: []Message{msg("", "Subject: no From\r\n\r\nx\r\n")}}
	r.report()
	if len(ft.errs) == 0 {
		t.Fatal("a message without From, Date and Message-ID failed nothing")
	}
	ft.errs = nil
	r.Allow("a test of the report", RuleHeader)
	r.report()
	if len(ft.errs) != 0 || len(ft.logs) == 0 {
		t.Errorf("allowed: errors %v, logs %v", ft.errs, ft.logs)
	}
	func() {
		defer func() { recover() }()
		r.Allow(" ", RuleFormat)
	}()
	if !ft.fatal {
		t.Error("Allow without a reason was taken")
	}
}

type fakeT struct {
	testing.TB
	errs, logs []string
	fatal      bool
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Errorf(format string, a ...any) { f.errs = append(f.errs, format) }
func (f *fakeT) Logf(format string, a ...any)   { f.logs = append(f.logs, format) }
func (f *fakeT) Fatal(a ...any)                 { f.fatal = true; panic("fatal") }
