package daemon_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// TestDistributorAnswerEndToEnd: an incident notified to two distributors;
// one replies to its notice with gpg, signed and encrypted to the
// distributors list, "/affected yes" and a canary note. That distributor
// gets a receipt it decrypts and verifies with gpg; the SRC gets a copy
// with the note; the other distributor gets nothing, and the canary is in
// no byte the relay sees in clear nor in anything the other distributor
// can decrypt. /status from an SRC member lists both distributors, one
// with "no answer". The other then answers at the incident's address,
// encrypted to the security key (docs/process.md §9).
func TestDistributorAnswerEndToEnd(t *testing.T) {
	const canary = "CANARY-affected-note"
	d1, d2 := &distributor{addr: "one@vendor1.test"}, &distributor{addr: "two@vendor2.test"}
	f := newCmdFixtureWith(t, []*distributor{d1, d2}, "")
	f.prepare(t)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n"))
	notices := f.next(4) // alice's receipt, bob's copy, the two notices
	notice := daemontest.To(notices, d1.addr)
	if len(notice) != 1 {
		t.Fatalf("%s got %d notices:\n%s", d1.addr, len(notice), daemontest.Summary(notices))
	}
	plain, _ := d1.g.DecryptMIME(notice[0].Data)
	daemontest.MustContain(t, "the notice", daemontest.MIMEText(plain), "Tell the committee whether your product is affected", `"/affected"`)

	// d1 replies to its notice, as a mail client does: To the Reply-To
	// (distributors@), In-Reply-To the notice, signed and encrypted.
	dfpr := d1.g.Fingerprint("distributors@ex.test")
	body := d1.g.Must([]byte("/affected yes "+canary+" packages building\n\nWe will ship on the day.\n"),
		"--sign", "--encrypt", "--armor", "-u", d1.fpr, "-r", dfpr)
	f.h.MustSend(d1.addr, []string{"distributors@ex.test"}, fmt.Sprintf("From: %s\nTo: distributors@ex.test\nSubject: Re: Encrypted message\n"+
		"Message-ID: <answer1@vendor1.test>\nIn-Reply-To: %s\n\n%s", d1.addr, messageIDField(t, notice[0]), body))
	msgs := f.next(5) // d1's receipt, the answer to alice and bob, the post to alice and bob
	receipt := daemontest.To(msgs, d1.addr)
	if len(receipt) != 1 || len(daemontest.To(msgs, d2.addr)) != 0 {
		t.Fatalf("after d1's answer:\n%s", daemontest.Summary(msgs))
	}
	rplain, st := d1.g.DecryptMIME(receipt[0].Data)
	daemontest.MustContain(t, d1.addr+"'s decrypted receipt", st, "DECRYPTION_OKAY", "GOODSIG")
	daemontest.MustContain(t, d1.addr+"'s receipt", daemontest.MIMEText(rplain), "Commands for "+f.id, "ok: your status: affected", "The command was applied.")
	if _, _, err := d2.g.Run(daemontest.ArmorBlock.Find(receipt[0].Data), "--decrypt"); err == nil {
		t.Errorf("%s could decrypt %s's receipt", d2.addr, d1.addr)
	}
	answers := 0
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		p, _ := f.alice.DecryptMIME(m.Data)
		if text := daemontest.MIMEText(p); strings.Contains(text, "answered the embargoed notice") {
			answers++
			daemontest.MustContain(t, "alice's copy of the answer", text, d1.addr, "affected", canary)
		}
	}
	if answers != 1 {
		t.Errorf("alice got %d copies of the answer:\n%s", answers, daemontest.Summary(msgs))
	}
	if inc := f.incident(); len(inc.Distributors) != 2 || inc.Distributors[0].Status != workflow.AffectedYes || inc.Distributors[1].Status != workflow.AffectedUnset {
		t.Errorf("the incident's distributors: %+v", inc.Distributors)
	}

	// /status from alice lists both, d2 without an answer.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/status\n"))
	msgs = f.next(3) // receipt, status, bob's copy
	status := decryptedWith(t, f.alice, daemontest.To(msgs, "alice@ex.test"), "Distributors the notice reached")
	daemontest.MustContain(t, "alice's /status", status, "(1 of 2 answered", d1.addr+": affected since", canary, d2.addr+": no answer; notified")

	// d2 answers at the incident's address, encrypted to the security key.
	d2.g.ImportKey(exportListKey(t, f.h, "security"))
	sfpr := d2.g.Fingerprint("security@ex.test")
	body = d2.g.Must([]byte("/affected no\n"), "--sign", "--encrypt", "--armor", "-u", d2.fpr, "-r", sfpr)
	f.h.MustSend(d2.addr, []string{"security+" + f.id + "@ex.test"}, fmt.Sprintf("From: %s\nTo: security+%s@ex.test\nSubject: Re: Encrypted message\n"+
		"Message-ID: <answer2@vendor2.test>\n\n%s", d2.addr, f.id, body))
	msgs = f.next(3) // d2's receipt, the answer to alice and bob
	r2 := decryptedWith(t, d2.g, daemontest.To(msgs, d2.addr), "Commands for")
	daemontest.MustContain(t, d2.addr+"'s receipt", r2, "ok: your status: not affected")
	if strings.Contains(r2, canary) || strings.Contains(r2, d1.addr) {
		t.Errorf("%s's receipt tells of %s's answer:\n%s", d2.addr, d1.addr, r2)
	}
	if len(daemontest.To(msgs, d1.addr)) != 0 {
		t.Errorf("%s heard of %s's answer", d1.addr, d2.addr)
	}

	// Nothing d2 received holds the canary, and the relay never saw it in clear.
	for _, m := range daemontest.To(f.h.Rec.Messages(), d2.addr) {
		if p, _ := d2.g.DecryptMIME(m.Data); strings.Contains(string(p), canary) {
			t.Errorf("%s received the canary", d2.addr)
		}
	}
	canaryFree(t, f.h.Rec.Messages(), canary)
}

// decryptedWith is the text of the first of msgs that g decrypts and whose
// text holds want.
func decryptedWith(t *testing.T, g *daemontest.GPG, msgs []queuetest.Message, want string) string {
	t.Helper()
	for _, m := range msgs {
		p, _ := g.DecryptMIME(m.Data)
		if text := daemontest.MIMEText(p); strings.Contains(text, want) {
			return text
		}
	}
	t.Fatalf("no message with %q among:\n%s", want, daemontest.Summary(msgs))
	return ""
}
