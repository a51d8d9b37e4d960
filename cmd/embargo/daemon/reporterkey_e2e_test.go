package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// mailWithKey is a plain message from addr with a public key attached.
func mailWithKey(from, to, msgid string, pub []byte) string {
	return fmt.Sprintf("From: %s\nTo: %s\nSubject: about my report\nMessage-ID: <%s>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n", from, to, msgid) +
		"--b\nContent-Type: text/plain\n\nmy key\n--b\nContent-Type: application/pgp-keys\nContent-Disposition: attachment; filename=key.asc\n\n" +
		strings.ReplaceAll(string(pub), "\r\n", "\n") + "\n--b--\n"
}

// TestReporterKeyHijack is the attack of docs/threat-model.md D5 on the
// reporter, end to end with gpg: a third party writes From: the reporter's
// address with their own key attached. Their key is kept but not used, the
// SRC is told both fingerprints, /reply still reaches only the reporter, and
// the SRC can choose with /reporter-key.
func TestReporterKeyHijack(t *testing.T) {
	f := newCmdFixture(t)
	const repAddr = "victim@out.test"
	victim, mallory := daemontest.NewGPG(t), daemontest.NewGPG(t)
	vfpr := victim.GenKey("Victim <" + repAddr + ">")
	mfpr := mallory.GenKey("Not Victim <" + repAddr + ">")
	for _, g := range []*daemontest.GPG{victim, mallory} {
		g.ImportKey(exportListKey(t, f.h, "security")) // the key that signs what they get
	}

	f.h.MustSend(repAddr, []string{"security@ex.test"}, mailWithKey(repAddr, "security@ex.test", "v1@out.test", victim.Export(vfpr)))
	msgs := f.next(3) // ack, alice, bob
	ack := daemontest.To(msgs, repAddr)[0]
	if _, st := victim.DecryptMIME(ack.Data); !strings.Contains(st, "DECRYPTION_OKAY") {
		t.Fatalf("the acknowledgement is not encrypted to the key of the report: %s", st)
	}
	id := idRE.FindString(string(mustDecrypt(t, victim, ack)))
	thread := "security+" + id + "@ex.test"

	// The third party: envelope and From the victim's, their own key.
	f.h.MustSend("mallory@evil.test", []string{thread}, mailWithKey(repAddr, thread, "m1@evil.test", mallory.Export(mfpr)))
	msgs = f.next(4) // the copies to alice and bob, and the alert to each
	var alert string
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		if text := string(mustDecrypt(t, f.alice, m)); strings.Contains(text, "A new OpenPGP key arrived") {
			alert = text
		}
	}
	daemontest.MustContain(t, "the SRC's alert", alert, mfpr, vfpr, "It is NOT used", "/reporter-key "+mfpr)

	// /reply goes to the victim's key alone.
	reply := func(text string) queuetest.Message {
		t.Helper()
		f.h.MustSend("alice@ex.test", []string{thread}, signedIn(f, id, text))
		msgs := f.next(3) // receipt, bob's copy, the reply
		r := daemontest.To(msgs, repAddr)
		if len(r) != 1 {
			t.Fatalf("%d messages to the reporter", len(r))
		}
		return r[0]
	}
	r := reply("/reply we are on it\n")
	if _, _, err := mallory.Run(daemontest.ArmorBlock.Find(r.Data), "--decrypt"); err == nil {
		t.Error("the third party can read the reply")
	}
	daemontest.MustContain(t, "the victim's reading of the reply", string(mustDecrypt(t, victim, r)), "we are on it")

	// The SRC chooses the other key: the receipt says so, the next reply is
	// encrypted to it; then none: signed only.
	f.h.MustSend("alice@ex.test", []string{thread}, signedIn(f, id, "/reporter-key "+mfpr+"\n/reply switched\n"))
	msgs = f.next(3)
	daemontest.MustContain(t, "the receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "pinned the reporter key "+mfpr, "in place of "+vfpr)
	if _, st := mallory.DecryptMIME(daemontest.To(msgs, repAddr)[0].Data); !strings.Contains(st, "DECRYPTION_OKAY") {
		t.Errorf("after /reporter-key the reply is not encrypted to the chosen key: %s", st)
	}
	f.h.MustSend("alice@ex.test", []string{thread}, signedIn(f, id, "/reporter-key none\n/reply in clear\n"))
	msgs = f.next(3)
	daemontest.MustContain(t, "the receipt", f.receipt(f.alice, msgs, "alice@ex.test"), "unpinned the reporter key "+mfpr)
	plain := daemontest.To(msgs, repAddr)[0]
	if daemontest.ArmorBlock.Find(plain.Data) != nil {
		t.Error("after /reporter-key none the reply is still encrypted")
	}
	daemontest.MustContain(t, "the unencrypted reply's signature", f.reporter.VerifySigned(plain.Data), "GOODSIG")

	// A report without a key: the first key to arrive is the third party's.
	// It is not pinned by being first.
	const rep2 = "victim2@out.test"
	f.h.MustSend(rep2, []string{"security@ex.test"}, daemontest.Report(rep2, "no key", "details"))
	msgs = f.next(3)
	id2 := idRE.FindString(daemontest.Body(t, daemontest.To(msgs, rep2)[0]))
	f.h.MustSend("mallory@evil.test", []string{"security+" + id2 + "@ex.test"}, mailWithKey(rep2, "security+"+id2+"@ex.test", "m2@evil.test", mallory.Export(mfpr)))
	msgs = f.next(4)
	alert = ""
	for _, m := range daemontest.To(msgs, "bob@ex.test") {
		if text := string(mustDecrypt(t, f.bob, m)); strings.Contains(text, "A new OpenPGP key arrived") {
			alert = text
		}
	}
	daemontest.MustContain(t, "the SRC's alert", alert, mfpr, "no key is pinned", "/reporter-key "+mfpr)
	// Not the text of the first /reply: signed in the same second, it
	// would be the same signature, refused as a replay (docs/threat-model.md E3).
	f.h.MustSend("alice@ex.test", []string{"security+" + id2 + "@ex.test"}, signedIn(f, id2, "/reply we are looking into it\n"))
	msgs = f.next(3)
	if r := daemontest.To(msgs, rep2); len(r) != 1 || daemontest.ArmorBlock.Find(r[0].Data) != nil {
		t.Error("the reply to a reporter without a pinned key went encrypted (to the third party's key?)")
	}
}

// signedIn is alice's clear-signed text in incident id's thread.
func signedIn(f *cmdFixture, id, text string) string {
	signed := f.alice.Must([]byte(text), "--clearsign", "-u", f.afpr)
	return fmt.Sprintf("From: alice@ex.test\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <%d@ex.test>\n\n%s",
		id, id, time.Now().UnixNano(), strings.ReplaceAll(string(signed), "\r\n", "\n"))
}

func mustDecrypt(t *testing.T, g *daemontest.GPG, m queuetest.Message) []byte {
	t.Helper()
	plain, _ := g.DecryptMIME(m.Data)
	return []byte(daemontest.MIMEText(plain))
}

// TestReporterKeyTrustedMTA: [intake] trusted_authserv_ids reaches the
// daemon: a key that arrives after a keyless report, in mail the trusted
// MTA found DKIM-aligned, is pinned; the same from an untrusted authserv-id
// is not.
func TestReporterKeyTrustedMTA(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "\n[intake]\ntrusted_authserv_ids = [\"mx.ex.test\"]\n"}, daemon.Options{})
	g := daemontest.NewGPG(t)
	for i, tc := range []struct {
		authserv string
		pinned   bool
	}{{"mx.evil.test", false}, {"mx.ex.test", true}} {
		rep := fmt.Sprintf("rep%d@out.test", i)
		fpr := g.GenKey("Rep <" + rep + ">")
		h.MustSend(rep, []string{"security@ex.test"}, daemontest.Report(rep, "no key yet", "details"))
		id := fmt.Sprintf("SEC-2026-%04d", i+1)
		raw := strings.Replace(mailWithKey(rep, "security+"+id+"@ex.test", fmt.Sprintf("k%d@out.test", i), g.Export(fpr)),
			"Subject:", "Authentication-Results: "+tc.authserv+"; dkim=pass (2048-bit key; unprotected) header.d=out.test\nSubject:", 1)
		h.MustSend(rep, []string{"security+" + id + "@ex.test"}, raw)
		var pinned string
		h.D.View(func(tx *bolt.Tx) error {
			inc, err := incidentdb.Get(tx, workflow.ID(id))
			if err != nil {
				t.Fatal(err)
			}
			pinned = inc.PinnedReporterKey
			return nil
		})
		if (pinned == fpr) != tc.pinned {
			t.Errorf("DKIM pass by %s: pinned %q, want pinned %v", tc.authserv, pinned, tc.pinned)
		}
	}
}
