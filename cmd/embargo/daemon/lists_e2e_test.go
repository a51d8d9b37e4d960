package daemon_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

const distCanary = "CANARY-dist-summary"

// prepare takes the fixture's incident to an approved, scheduled advisory
// with a CVE and returns T.
func (f *cmdFixture) prepare(t *testing.T) time.Time {
	t.Helper()
	T := workflow.NextSlot(time.Now().UTC().Add(10*24*time.Hour), nil)
	cmds := "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n" +
		"/set summary <<END\n" + distCanary + " heap overflow\nEND\n/set actor <<END\nA remote attacker\nEND\n" +
		"/set impact <<END\nexecute code\nEND\n/set affected <<END\nparser v1.0.0 - v1.4.2\nEND\n" +
		"/set fixed <<END\nparser v1.4.3\nEND\n/set mitigation <<END\nDisable the parser.\n-----BEGIN PGP SIGNATURE-----\nEND\n" +
		"/fixed\n/disclose " + T.Format("2006-01-02") + "\n/approve\n"
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", cmds))
	msgs := f.next(5) // receipt, accepted, fixed, date (reporter), bob's copy
	if r := f.receipt(f.alice, msgs, "alice@ex.test"); strings.Contains(r, "refused") {
		t.Fatalf("preparing commands refused:\n%s", r)
	}
	return T
}

// headerBytes returns the top-level header section of a message.
func headerBytes(m queuetest.Message) string {
	i := bytes.Index(m.Data, []byte("\r\n\r\n"))
	return string(m.Data[:i])
}

// TestDistributorNotice: /notify sends one copy per distributor, each
// encrypted to that distributor only, with nothing telling in clear.
func TestDistributorNotice(t *testing.T) {
	d1, d2 := &distributor{addr: "one@vendor1.test"}, &distributor{addr: "two@vendor2.test"}
	f := newCmdFixtureWith(t, []*distributor{d1, d2}, "")
	T := f.prepare(t)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n"))
	msgs := f.next(4) // receipt, bob's copy, two notices
	for _, d := range []*distributor{d1, d2} {
		got := daemontest.To(msgs, d.addr)
		if len(got) != 1 {
			t.Fatalf("%s got %d notices", d.addr, len(got))
		}
		hdr := headerBytes(got[0])
		for _, leak := range []string{"CVE-2026", distCanary, "SEC-", d1.addr, d2.addr, "EMBARGOED"} {
			if strings.Contains(hdr, leak) {
				t.Errorf("outer header of %s's copy holds %q:\n%s", d.addr, leak, hdr)
			}
		}
		if !strings.Contains(hdr, "To: <distributors@ex.test>") && !strings.Contains(hdr, "To: distributors@ex.test") {
			t.Errorf("copy is not addressed To: the list:\n%s", hdr)
		}
		plain, st := d.g.DecryptMIME(got[0].Data)
		daemontest.MustContain(t, d.addr+"'s decrypted notice", st, "DECRYPTION_OKAY", "GOODSIG")
		text := daemontest.MIMEText(plain)
		daemontest.MustContain(t, d.addr+"'s decrypted notice", text, "EMBARGOED", "CVE-2026-12345", workflow.FormatInstant(T), "- -----BEGIN PGP SIGNATURE-----")
		other := d2
		if d == d2 {
			other = d1
		}
		if _, _, err := other.g.Run(daemontest.ArmorBlock.Find(got[0].Data), "--decrypt"); err == nil {
			t.Errorf("%s could decrypt %s's copy", other.addr, d.addr)
		}
		if strings.Contains(string(plain), other.addr) {
			t.Errorf("%s's copy names the other distributor", d.addr)
		}
	}
	canaryFree(t, f.h.Rec.Messages(), distCanary)
}

// TestDistributorsLeakGuard: a member's post to distributors@ with an outside
// Cc is refused at the end of DATA, the SRC alerted, nothing sent to the
// distributors, and the outside address in no outbound byte (docs/threat-model.md G1).
// A plaintext post is refused the same way, and its sender, a distributor,
// gets one encrypted warning an hour (G2).
func TestDistributorsLeakGuard(t *testing.T) {
	d1 := &distributor{addr: "one@vendor1.test"}
	f := newCmdFixtureWith(t, []*distributor{d1}, "")
	dfpr := d1.g.Fingerprint("distributors@ex.test")
	const outside = "oss-security@lists.invalid"
	post := d1.g.Must([]byte("We see it too.\n"), "--sign", "--encrypt", "--armor", "-u", d1.fpr, "-r", dfpr)
	err := f.h.Send(d1.addr, []string{"distributors@ex.test"}, "From: "+d1.addr+"\nTo: distributors@ex.test\nCc: "+outside+"\nSubject: x\n\n"+string(post))
	if c, e := daemontest.Code(err); c != 550 || e != "5.7.1" {
		t.Fatalf("post with an outside Cc: %v, want 550 5.7.1", err)
	}
	msgs := f.next(2) // the encrypted alert to alice and bob
	for _, m := range msgs {
		if m.To[0] != "alice@ex.test" && m.To[0] != "bob@ex.test" {
			t.Errorf("the refused post caused mail to %v", m.To)
		}
		if bytes.Contains(m.Data, []byte(outside)) {
			t.Error("the outside address appears in an outbound message")
		}
		plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
		if strings.Contains(string(plain), outside) {
			t.Error("the outside address appears inside the alert")
		}
	}

	// A plaintext reply carrying the canary: refused, the SRC alerted, and
	// the distributor warned, encrypted to their pinned key (G2); the
	// canary goes nowhere, in clear or inside the encryption.
	f.plaintextWarned(t, d1, dfpr)

	// Again within the hour: refused and alerted, but no second warning
	// (one a member per hour, whoever forges their address).
	err = f.h.Send(d1.addr, []string{"distributors@ex.test"}, "From: "+d1.addr+"\nTo: distributors@ex.test\nSubject: again\n\nCANARY-plain-reply again\n")
	if c, _ := daemontest.Code(err); c != 550 {
		t.Fatalf("second plaintext post: %v, want 550", err)
	}
	for _, m := range f.next(2) {
		if m.To[0] != "alice@ex.test" && m.To[0] != "bob@ex.test" {
			t.Errorf("the second plaintext post caused mail to %v", m.To)
		}
	}
	if n := daemon.CounterValue(f.h.D, "embargo_distributor_warnings_total", "held"); n != 1 {
		t.Errorf(`embargo_distributor_warnings_total{result="held"} = %v, want 1`, n)
	}
	canaryFree(t, f.h.Rec.Messages(), "CANARY-plain-reply")

	// A distributor's good post (encrypted, signed, To: the list) reaches the
	// SRC only.
	f.h.MustSend(d1.addr, []string{"distributors@ex.test"}, "From: "+d1.addr+"\nTo: distributors@ex.test\nSubject: x\n\n"+string(post))
	msgs = f.next(2)
	for _, m := range msgs {
		if m.To[0] != "alice@ex.test" && m.To[0] != "bob@ex.test" {
			t.Errorf("a distributor's post went to %v", m.To)
		}
	}
	plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
	daemontest.MustContain(t, "alice's copy of the distributor's post", daemontest.MIMEText(plain), "We see it too.", d1.addr)
}

// plaintextWarned sends a plaintext post with a canary in its Subject and
// text from d to distributors@ and checks what follows: 550, the SRC's two
// alerts and one warning to d, which d decrypts with gpg and which says
// why and how to post; the canary is in no outbound message, and in none
// of them decrypted by its recipient.
func (f *cmdFixture) plaintextWarned(t *testing.T, d *distributor, listFpr string) {
	t.Helper()
	const canary = "CANARY-plain-reply"
	err := f.h.Send(d.addr, []string{"distributors@ex.test"}, "From: "+d.addr+"\nTo: distributors@ex.test\nSubject: "+canary+" subject\n\n"+canary+"\n")
	if c, _ := daemontest.Code(err); c != 550 {
		t.Fatalf("plaintext post: %v, want 550", err)
	}
	msgs := f.next(3)
	warn := daemontest.To(msgs, d.addr)
	if len(warn) != 1 || len(daemontest.To(msgs, "alice@ex.test")) != 1 || len(daemontest.To(msgs, "bob@ex.test")) != 1 {
		t.Fatalf("after a plaintext post, want an alert to alice and bob and a warning to %s:\n%s", d.addr, daemontest.Summary(msgs))
	}
	if warn[0].From != "" {
		t.Errorf("the warning came from <%s>, want the null sender", warn[0].From)
	}
	hdr := headerBytes(warn[0])
	if !strings.Contains(hdr, "Subject: Encrypted message") || strings.Contains(hdr, "refused") {
		t.Errorf("outer header of the warning:\n%s", hdr)
	}
	plain, st := d.g.DecryptMIME(warn[0].Data)
	daemontest.MustContain(t, d.addr+"'s decrypted warning", st, "DECRYPTION_OKAY", "GOODSIG")
	daemontest.MustContain(t, d.addr+"'s decrypted warning", daemontest.MIMEText(plain),
		"A message claiming to be from "+d.addr, "not encrypted to the list key "+listFpr, "It reached nobody",
		"The SRC has been told", "If you did not send it, someone used your address", "-u "+d.fpr+" -r "+listFpr)
	readers := map[string]*daemontest.GPG{"alice@ex.test": f.alice, "bob@ex.test": f.bob, d.addr: d.g}
	for _, m := range msgs {
		if p, _ := readers[m.To[0]].DecryptMIME(m.Data); strings.Contains(string(p), canary) {
			t.Errorf("the canary is inside the mail to %v", m.To)
		}
	}
	canaryFree(t, f.h.Rec.Messages(), canary)
	if n := daemon.CounterValue(f.h.D, "embargo_distributor_warnings_total", "sent"); n != 1 {
		t.Errorf(`embargo_distributor_warnings_total{result="sent"} = %v, want 1`, n)
	}
}

// TestDiscloseNowOrder: /disclose now tells the distributors the embargo is
// lifted before the announcement leaves (docs/threat-model.md G5), the outside channel
// gets its signed copy, and the SRC the release-day pack.
func TestDiscloseNowOrder(t *testing.T) {
	d1 := &distributor{addr: "one@vendor1.test"}
	f := newCmdFixtureWith(t, []*distributor{d1}, "\n[[channels]]\naddress = \"oss-security@lists.invalid\"\nsubject_tag = \"[example]\"\n")
	f.prepare(t)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n"))
	f.next(3)
	// Two signatures; then bob's receipt, alice's copy, lifted + public
	// advisory to d1, channel, reporter, 2 packs
	msgs := f.discloseNow(8)
	var lifted, channel int = -1, -1
	for i, m := range f.h.Rec.Messages() {
		if m.To[0] == d1.addr {
			plain, _ := d1.g.DecryptMIME(m.Data)
			if strings.Contains(daemontest.MIMEText(plain), "EMBARGO LIFTED") && lifted < 0 {
				lifted = i
			}
		}
		if m.To[0] == "oss-security@lists.invalid" {
			channel = i
		}
	}
	if lifted < 0 || channel < 0 || lifted > channel {
		t.Errorf("order: embargo lifted at %d, channel copy at %d; the distributors must be told first", lifted, channel)
	}
	ch := daemontest.To(msgs, "oss-security@lists.invalid")[0]
	hd := daemontest.Header(t, ch)
	if s := hd.Get("Subject"); !strings.HasPrefix(s, "[example] CVE-2026-12345: ") {
		t.Errorf("channel subject %q", s)
	}
	st := f.reporter.VerifySigned(ch.Data)
	daemontest.MustContain(t, "gpg --verify of the advisory", st, "GOODSIG", "VALIDSIG")
	daemontest.MustContain(t, "the advisory", daemontest.Body(t, ch), "Fixed versions", "parser v1.4.3")
	var pack string
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		if p, _ := f.alice.DecryptMIME(m.Data); strings.Contains(string(p), "released:") {
			pack = string(p)
		}
	}
	daemontest.MustContain(t, "release pack", pack, "tracker-post.md", "cve-record.json", "chat.txt")
	if inc := f.incident(); inc.Phase != workflow.PhaseDisclosed {
		t.Errorf("after /disclose now: phase %s", inc.Phase)
	}
	// The release was timed for /metrics, and so was every command message.
	if n := daemon.SampleCount(f.h.D, "embargo_release_duration_seconds"); n != 1 {
		t.Errorf("release duration observed %d times, want 1", n)
	}
	if n := daemon.SampleCount(f.h.D, "embargo_command_duration_seconds"); n == 0 {
		t.Errorf("no command message was timed")
	}
}
