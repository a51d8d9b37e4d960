package daemon_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// Governance by mail, end to end: real SMTP, real gpg on both sides
// (docs/design.md §1; docs/process.md §5, §7.9; docs/threat-model.md D5,
// E3, E4, F2, G4, G5).

var govRE = regexp.MustCompile(`GOV-\d{4}-\d{4}`)

// toCRLF turns any line ends into CRLF (gpg's armor uses LF).
func toCRLF(s string) string { return crlf(strings.ReplaceAll(s, "\r\n", "\n")) }

// withKey is a multipart/mixed entity: the text, and a public key attached
// as application/pgp-keys, CRLF.
func withKey(text string, key []byte) string {
	return toCRLF("Content-Type: multipart/mixed; boundary=\"mixed-b\"\n\n--mixed-b\nContent-Type: text/plain; charset=utf-8\n\n" + text +
		"\n--mixed-b\nContent-Type: application/pgp-keys; name=\"key.asc\"\nContent-Disposition: attachment; filename=\"key.asc\"\n\n" +
		string(key) + "\n--mixed-b--\n")
}

// pgpMIME signs entity (CRLF) with gpg as PGP/MIME (RFC 3156 §5) under
// headers, and returns the message, CRLF.
func pgpMIME(g *daemontest.GPG, fpr, headers, entity string) []byte {
	sig := g.Must([]byte(entity), "--detach-sign", "--armor", "--digest-algo", "SHA256", "-u", fpr)
	return []byte(toCRLF(headers) + "MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"signed-b\"\r\n\r\n" +
		"--signed-b\r\n" + entity + "\r\n--signed-b\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n" + toCRLF(string(sig)) + "\r\n--signed-b--\r\n")
}

// application is the form of docs/process.md §5 for alias, vouched for by
// voucher.
func application(alias, voucher string) string {
	return "Hello, we would like to join.\n\nAlias: " + alias + "\nProduct: New Distro\nVouched-By: " + voucher +
		"\nMaintained: monthly releases since 2019\nUsers: 40,000 installs\nRecord: https://newdistro.test/security\n" +
		"Not-A-Rebuild: our own packaging\nCommunity: we maintain two upstream packages\nEmbargo: we accept the embargo\n" +
		"Contributes: we review patches and report test results\n"
}

// applicant is a vendor applying to the distributors list, with gpg.
type applicant struct {
	g          *daemontest.GPG
	fpr, alias string
	from       string
}

func newApplicant(t *testing.T, f *cmdFixture, from, alias string) *applicant {
	a := &applicant{g: daemontest.NewGPG(t), alias: alias, from: from}
	a.fpr = a.g.GenKey("New Distro Security <" + alias + ">")
	for _, list := range []string{"security", "distributors"} {
		a.g.ImportKey(exportListKey(t, f.h, list))
	}
	return a
}

// apply sends the application, signed by the applicant's key, with the key
// attached, to distributors+apply@.
func (a *applicant) apply(t *testing.T, f *cmdFixture, text string) {
	t.Helper()
	headers := fmt.Sprintf("From: Person <%s>\nTo: distributors+apply@ex.test\nSubject: application\nMessage-ID: <%d@newdistro.test>\n", a.from, time.Now().UnixNano())
	if err := daemontest.SendSMTP(f.h.Addr(), a.from, []string{"distributors+apply@ex.test"}, pgpMIME(a.g, a.fpr, headers, withKey(text, a.g.Export(a.fpr)))); err != nil {
		t.Fatalf("application: %v", err)
	}
}

// decrypt decrypts the one message among msgs to addr whose plaintext has
// want, failing the test if there is none.
func decrypt(t *testing.T, g *daemontest.GPG, msgs []queuetest.Message, addr, want string) (string, queuetest.Message) {
	t.Helper()
	for _, m := range daemontest.To(msgs, addr) {
		block := daemontest.ArmorBlock.Find(m.Data)
		if block == nil {
			continue
		}
		plain, status, err := g.Run(block, "--decrypt")
		if err != nil && !strings.Contains(string(status), "DECRYPTION_OKAY") {
			continue // encrypted to another key (an old one, a new one)
		}
		if text := string(plain) + daemontest.MIMEText(plain); strings.Contains(text, want) {
			daemontest.MustContain(t, "the signature on mail to "+addr, string(status), "GOODSIG")
			if h := headerBytes(m); strings.Contains(h, "GOV-") || strings.Contains(h, "SEC-") {
				t.Errorf("an ID in the clear header of mail to %s:\n%s", addr, h)
			}
			return text, m
		}
	}
	t.Fatalf("no encrypted message to %s with %q among:\n%s", addr, want, daemontest.Summary(msgs))
	return "", queuetest.Message{}
}

// signed is a clear-signed message from a member to to, with extra header
// lines.
func (f *cmdFixture) signed(g *daemontest.GPG, fpr, from, to, headers, text string) string {
	out := g.Must([]byte(text), "--clearsign", "-u", fpr)
	return fmt.Sprintf("From: %s\nTo: %s\nSubject: Re: roster\nMessage-ID: <%d@ex.test>\n%s\n%s", from, to, time.Now().UnixNano(), headers,
		strings.ReplaceAll(string(out), "\r\n", "\n"))
}

// header is one field of an outbound message's header.
func header(t *testing.T, m queuetest.Message, name string) string {
	h := daemontest.Header(t, m)
	return h.Get(name)
}

// messageIDField is an outbound message's Message-ID field, angle brackets
// included.
func messageIDField(t *testing.T, m queuetest.Message) string { return header(t, m, "Message-Id") }

// members is `embargo members list` through the running daemon's control
// socket.
func members(t *testing.T, h *daemontest.Harness) string {
	t.Helper()
	var b strings.Builder
	if err := daemon.Read(h.Dir, nil, "members list", nil, &b); err != nil {
		t.Fatalf("members list: %v", err)
	}
	return b.String()
}

// onRoster reports whether addr is a member of the roster in force (not
// merely named in an open proposal).
func onRoster(t *testing.T, h *daemontest.Harness, addr string) bool {
	return strings.Contains(members(t, h), "\n  "+addr+"\n      roles:")
}

// TestDistributorAdmitted: an application with its key attached, two signed
// /admit (one by replying to the SRC's copy, one to the proposal's address),
// and the new distributor decrypts the next /notify with its own gpg.
func TestDistributorAdmitted(t *testing.T) {
	d1 := &distributor{addr: "one@vendor1.test"}
	f := newCmdFixtureWith(t, []*distributor{d1}, "")
	a := newApplicant(t, f, "person@newdistro.test", "security@newdistro.test")
	a.apply(t, f, application(a.alias, d1.addr))
	msgs := f.next(3) // the application to alice and bob, the acknowledgement
	ack, _ := decrypt(t, a.g, msgs, a.from, "has received the application")
	id := govRE.FindString(ack)
	daemontest.MustContain(t, "the acknowledgement", ack, "["+id+"]", a.fpr)
	copyText, copyMsg := decrypt(t, f.alice, msgs, "alice@ex.test", "A distributor application arrived")
	daemontest.MustContain(t, "the SRC's copy", copyText, id, "Signed:        yes, by the attached key", "ed25519",
		"a member of the distributors list: ask them to confirm", "/admit")
	if onRoster(t, f.h, a.alias) {
		t.Fatal("an application alone made a member")
	}

	// Alice replies to her copy: to security@, threaded by In-Reply-To.
	f.h.MustSend("alice@ex.test", []string{"security@ex.test"}, f.signed(f.alice, f.afpr, "alice@ex.test", "security@ex.test",
		"In-Reply-To: "+messageIDField(t, copyMsg)+"\n", "/admit\n\nThey qualify.\n"))
	msgs = f.next(4) // receipt, the pending notice to alice and bob, bob's copy of alice's message
	daemontest.MustContain(t, "alice's receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "approval recorded; "+id+" has 1 of 2 SRC approvals")
	fwd, _ := decrypt(t, f.bob, msgs, "bob@ex.test", "They qualify.")
	daemontest.MustContain(t, "bob's copy", fwd, id)
	if onRoster(t, f.h, a.alias) {
		t.Fatal("one approval of a quorum of 2 made a member")
	}

	// Bob writes to the proposal's address.
	f.h.MustSend("bob@ex.test", []string{"security+" + id + "@ex.test"}, f.signed(f.bob, f.bfpr, "bob@ex.test", "security+"+id+"@ex.test", "", "/admit "+id+"\n"))
	msgs = f.next(5) // receipt, alice's copy, the welcome, the roster change to alice and bob
	daemontest.MustContain(t, "bob's receipt", f.receipt(f.bob, msgs, "bob@ex.test"), id+" passed by quorum: 2 SRC approvals")
	welcome, wm := decrypt(t, a.g, msgs, a.alias, "Welcome to the")
	daemontest.MustContain(t, "the welcome", welcome, a.fpr, "distributors@ex.test", "/member remove me")
	if rt := header(t, wm, "Reply-To"); !strings.Contains(rt, "security@ex.test") || strings.Contains(rt, "+") {
		t.Errorf("the welcome's Reply-To %q: want the security list's plain address", rt)
	}
	change, _ := decrypt(t, f.alice, msgs, "alice@ex.test", "Roster change")
	daemontest.MustContain(t, "the SRC's notice", change, a.alias+" joined the roster with the roles distributor", "alice@ex.test, bob@ex.test")
	if !onRoster(t, f.h, a.alias) {
		t.Error("admitted, but not on the roster")
	}
	daemontest.MustContain(t, "members list", members(t, f.h), "application "+id, "key "+a.fpr+": valid until")

	// The next /notify reaches the new distributor, encrypted to its key.
	f.prepare(t)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n"))
	msgs = f.next(4) // receipt, bob's copy, the notice to d1 and to the new distributor
	notice, _ := decrypt(t, a.g, msgs, a.alias, "CVE-2026-12345")
	daemontest.MustContain(t, "the notice", notice, "EMBARGOED")
}

// TestDistributorDenied: one /deny ends the application; the applicant gets
// the refusal with the reason, encrypted to its key, and nothing changes.
func TestDistributorDenied(t *testing.T) {
	f := newCmdFixture(t)
	a := newApplicant(t, f, "person@newdistro.test", "security@newdistro.test")
	a.apply(t, f, application(a.alias, "nobody@nowhere.test"))
	msgs := f.next(3)
	copyText, _ := decrypt(t, f.alice, msgs, "alice@ex.test", "A distributor application arrived")
	id := govRE.FindString(copyText)
	daemontest.MustContain(t, "the SRC's copy", copyText, "NOT a member of the distributors list")
	f.h.MustSend("alice@ex.test", []string{"security+" + id + "@ex.test"}, f.signed(f.alice, f.afpr, "alice@ex.test", "security+"+id+"@ex.test", "",
		"/deny no public record of security fixes\n"))
	msgs = f.next(5) // receipt, bob's copy, the refusal to the applicant, the notice to alice and bob
	daemontest.MustContain(t, "alice's receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "denied by alice@ex.test", "the applicant is told")
	refusal, _ := decrypt(t, a.g, msgs, a.from, "was not accepted")
	daemontest.MustContain(t, "the refusal", refusal, id, "Reason: no public record of security fixes", "How to apply again", "distributors+apply@ex.test")
	if onRoster(t, f.h, a.alias) {
		t.Error("a denied applicant is on the roster")
	}
	// The applicant's reply in the thread reaches the SRC; a stranger's
	// mail to the proposal's address is a new report, like any other.
	reply := fmt.Sprintf("From: %s\nTo: security@ex.test\nSubject: Re: [%s] Your application\nMessage-ID: <r1@newdistro.test>\n\nWe do publish advisories.\n", a.from, id)
	f.h.MustSend(a.from, []string{"security@ex.test"}, reply)
	msgs = f.next(2)
	fwd, _ := decrypt(t, f.bob, msgs, "bob@ex.test", "We do publish advisories.")
	daemontest.MustContain(t, "the applicant's reply", fwd, "(the reporter)", id)
	f.h.MustSend("x@stranger.test", []string{"security+" + id + "@ex.test"}, daemontest.Report("x@stranger.test", "hello", "who is there"))
	msgs = f.next(3) // a new report: acknowledgement and two copies
	if ack := daemontest.To(msgs, "x@stranger.test"); len(ack) != 1 || !idRE.Match(ack[0].Data) {
		t.Errorf("a stranger's mail to a proposal's address is not a new report:\n%s", daemontest.Summary(msgs))
	}
}

// TestApplicationRefused: an expired key and a weak key are refused with
// the reason; the SRC hears nothing; the refusals to one sender are
// rate-limited like acknowledgements.
func TestApplicationRefused(t *testing.T) {
	f := newCmdFixture(t)
	expired := &applicant{g: daemontest.NewGPG(t), alias: "security@old.test", from: "a@old.test"}
	past := fmt.Sprintf("%d!", time.Now().AddDate(-2, 0, 0).Unix())
	expired.g.Must(nil, "--faked-system-time", past, "--quick-gen-key", "Old <security@old.test>", "ed25519", "sign,cert", "1y")
	expired.fpr = expired.g.Fingerprint("security@old.test")
	expired.g.Must(nil, "--faked-system-time", past, "--quick-add-key", expired.fpr, "cv25519", "encr", "1y")
	weak := &applicant{g: daemontest.NewGPG(t), alias: "security@weak.test", from: "b@weak.test"}
	weak.g.Must(nil, "--quick-gen-key", "Weak <security@weak.test>", "rsa1024", "default", "1y")
	weak.fpr = weak.g.Fingerprint("security@weak.test")

	for _, tt := range []struct {
		a    *applicant
		want string
	}{
		{expired, "key expired"},
		{weak, "weak public-key algorithm: RSA 1024 bits"},
	} {
		headers := fmt.Sprintf("From: %s\nTo: distributors+apply@ex.test\nSubject: application\nMessage-ID: <%d@x.test>\n", tt.a.from, time.Now().UnixNano())
		entity := withKey(application(tt.a.alias, ""), tt.a.g.Export(tt.a.fpr))
		if err := daemontest.SendSMTP(f.h.Addr(), tt.a.from, []string{"distributors+apply@ex.test"}, []byte(toCRLF(headers)+"MIME-Version: 1.0\r\n"+entity)); err != nil {
			t.Fatalf("application: %v", err)
		}
		msgs := f.next(1) // the refusal, and nothing to the SRC
		if len(daemontest.To(msgs, tt.a.from)) != 1 {
			t.Fatalf("want the refusal to %s alone:\n%s", tt.a.from, daemontest.Summary(msgs))
		}
		st := f.reporter.VerifySigned(msgs[0].Data) // signed only: the key cannot be used
		daemontest.MustContain(t, "the refusal's signature", st, "GOODSIG")
		daemontest.MustContain(t, "the refusal", daemontest.Body(t, msgs[0]), "could not be taken", tt.want, tt.a.fpr, "Alias:")
	}
	// The same sender again the same day: nothing.
	headers := fmt.Sprintf("From: %s\nTo: distributors+apply@ex.test\nSubject: again\nMessage-ID: <again@x.test>\n", weak.from)
	f.h.MustSend(weak.from, []string{"distributors+apply@ex.test"}, headers+"\nAlias: security@weak.test\n")
	f.next(0)
	if m := members(t, f.h); strings.Contains(m, "Open proposals") {
		t.Errorf("a refused application opened a proposal:\n%s", m)
	}
}

// fakeClock is the real clock moved forward by a settable offset, for
// daemon.Options.Now: gpg signs on the real clock, and a signature from the
// daemon's future would not count.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// TestLazyConsensus: an application with one /admit and no /deny passes by
// itself lazy_consensus_days after it arrived, on the scheduler's tick.
func TestLazyConsensus(t *testing.T) {
	clk := &fakeClock{}
	f := newCmdFixtureOpts(t, nil, "[governance]\nlazy_consensus_days = 3\n", daemon.Options{Now: clk.Now, NoTick: true})
	a := newApplicant(t, f, "person@newdistro.test", "security@newdistro.test")
	a.apply(t, f, application(a.alias, ""))
	copyText, _ := decrypt(t, f.alice, f.next(3), "alice@ex.test", "A distributor application arrived")
	id := govRE.FindString(copyText)
	daemontest.MustContain(t, "the SRC's copy", copyText, "by lazy consensus at", "(3 days after it arrived)")
	f.h.MustSend("alice@ex.test", []string{"security+" + id + "@ex.test"}, f.signed(f.alice, f.afpr, "alice@ex.test", "security+"+id+"@ex.test", "", "/admit\n"))
	f.next(4)
	ctx := context.Background()
	clk.Add(3*24*time.Hour - time.Minute)
	f.h.D.Tick(ctx, clk.Now())
	if onRoster(t, f.h, a.alias) {
		t.Fatal("admitted before the lazy-consensus deadline")
	}
	clk.Add(2 * time.Minute)
	f.h.D.Tick(ctx, clk.Now())
	msgs := drained(t, f.h) // the welcome and the notices, and the incident's reminders: 3 days passed
	decrypt(t, a.g, msgs, a.alias, "Welcome to the")
	change, _ := decrypt(t, f.bob, msgs[f.seen:], "bob@ex.test", "joined the roster")
	daemontest.MustContain(t, "the SRC's notice", change, "lazy consensus: 1 SRC approval(s) (alice@ex.test) and no objection")
	if !onRoster(t, f.h, a.alias) {
		t.Error("admitted by lazy consensus, but not on the roster")
	}
	f.h.D.Tick(ctx, clk.Now()) // decided once: nothing more
	f.seen = len(msgs)
	f.next(0)
}

// drained waits until the queue has sent every row, and returns what the
// relay got.
func drained(t *testing.T, h *daemontest.Harness) []queuetest.Message {
	t.Helper()
	daemontest.WaitFor(t, "the queue to drain", func() bool {
		var c queue.Counts
		h.D.View(func(tx *bolt.Tx) error { c, _ = queue.Stats(tx); return nil })
		return c.Queued == 0 && c.Sending == 0
	})
	return h.Settle(len(h.Rec.Messages()))
}

// TestTwoPersonRule (docs/threat-model.md G4, G5): /disclose now by one
// member releases nothing; the same member again, or a replay of their
// signature, or their signature under another member's From, does not
// count twice; a second member's releases.
func TestTwoPersonRule(t *testing.T) {
	f := newCmdFixture(t)
	f.prepare(t)
	first := f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/disclose now\n")
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, first)
	msgs := f.next(4) // receipt, bob's copy, the pending notice to alice and bob
	daemontest.MustContain(t, "alice's receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "pending: signature 1 of 2 recorded; nothing done yet", "bob@ex.test")
	pending, _ := decrypt(t, f.bob, msgs, "bob@ex.test", "Your signature is awaited")
	daemontest.MustContain(t, "the pending notice", pending, "/disclose now", "alice@ex.test")
	notYet := func(what string) {
		t.Helper()
		if inc := f.incident(); inc.Phase == workflow.PhaseDisclosed || len(inc.Pending) != 1 || len(inc.Pending[0].Signers) != 1 {
			t.Fatalf("%s: phase %s, pending %+v", what, inc.Phase, inc.Pending)
		}
	}
	notYet("one signature")

	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/disclose now\n\nSigned again.\n"))
	daemontest.MustContain(t, "alice signing again", f.receipt(f.alice, f.next(2), "alice@ex.test"), "you already signed /disclose now")
	notYet("the same member twice")

	f.h.MustSend("bob@ex.test", []string{"security+" + f.id + "@ex.test"}, strings.Replace(first, "Message-ID: <", "Message-ID: <replayed", 1))
	daemontest.MustContain(t, "a replayed signature", f.receipt(f.alice, f.next(2), "alice@ex.test"), "replay")
	notYet("a replayed signature")

	forged := strings.Replace(f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/disclose now\n\nBob agrees.\n"), "From: alice@ex.test", "From: bob@ex.test", 1)
	f.h.MustSend("bob@ex.test", []string{"security+" + f.id + "@ex.test"}, forged)
	daemontest.MustContain(t, "alice's signature under bob's From", f.receipt(f.alice, f.next(2), "alice@ex.test"), "you already signed")
	notYet("alice's signature under bob's From")

	f.h.MustSend("bob@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.bob, f.bfpr, "bob@ex.test", "/disclose now\n"))
	// receipt, alice's copy, "disclosed" to the reporter, the release pack
	// to alice and bob, and to each the alert that the keyless distributor
	// got no advisory
	msgs = f.next(7)
	if r := f.receipt(f.bob, msgs, "bob@ex.test"); strings.Contains(r, "refused") || strings.Contains(r, "pending") {
		t.Fatalf("the second signature:\n%s", r)
	}
	if inc := f.incident(); inc.Phase != workflow.PhaseDisclosed || len(inc.Pending) != 0 {
		t.Errorf("after two signatures: phase %s, pending %+v", inc.Phase, inc.Pending)
	}
}

// TestAdmitReplayedElsewhere (docs/threat-model.md E3): a signed /admit that
// names no proposal, carried into another proposal's thread, counts for
// nothing there: the replay cache stands in front of the governance core.
func TestAdmitReplayedElsewhere(t *testing.T) {
	f := newCmdFixture(t)
	one := newApplicant(t, f, "person@one.test", "security@one.test")
	one.apply(t, f, application(one.alias, ""))
	text, _ := decrypt(t, f.alice, f.next(3), "alice@ex.test", "A distributor application arrived")
	id1 := govRE.FindString(text)
	two := newApplicant(t, f, "person@two.test", "security@two.test")
	two.apply(t, f, application(two.alias, ""))
	text, _ = decrypt(t, f.alice, f.next(3), "alice@ex.test", "A distributor application arrived")
	id2 := govRE.FindString(text)

	admit := f.signed(f.alice, f.afpr, "alice@ex.test", "security+"+id2+"@ex.test", "", "/admit\n")
	f.h.MustSend("alice@ex.test", []string{"security+" + id2 + "@ex.test"}, admit)
	daemontest.MustContain(t, "the /admit of "+id2, f.receipt(f.alice, f.next(4), "alice@ex.test"), "approval recorded; "+id2+" has 1 of 2")
	replay := strings.Replace(admit, "Message-ID: <", "Message-ID: <replayed", 1)
	f.h.MustSend("mallory@evil.test", []string{"security+" + id1 + "@ex.test"}, replay)
	daemontest.MustContain(t, "the replay", f.receipt(f.alice, f.next(2), "alice@ex.test"), "replay")
	daemontest.MustContain(t, "members list", members(t, f.h), id1+"  the distributor application of "+one.alias, ", 0 approval(s)")
}
