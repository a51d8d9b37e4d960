package daemon_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// keysFixture is a committee where Alice has a pinned key and Bob has none,
// plus a reporter with GnuPG.
type keysFixture struct {
	h        *daemontest.Harness
	alice    *daemontest.GPG
	reporter *daemontest.GPG
	secFpr   string
}

func newKeysFixture(t *testing.T, securityTOML string) *keysFixture {
	t.Helper()
	alice := daemontest.NewGPG(t)
	afpr := alice.GenKey("Alice <alice@ex.test>")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": alice.Export(afpr)})
	members := daemontest.TOMLMember("alice@ex.test", afpr) + "[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n"
	h := daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members + securityTOML}, daemon.Options{})
	f := &keysFixture{h: h, alice: alice, reporter: daemontest.NewGPG(t)}
	pub := exportListKey(t, h, "security")
	f.reporter.ImportKey(pub)
	f.alice.ImportKey(pub) // members know the list key that signs their copies
	f.secFpr = f.reporter.Fingerprint("security@ex.test")
	return f
}

// exportListKey is what `embargo keys export LIST` prints.
func exportListKey(t *testing.T, h *daemontest.Harness, list string) []byte {
	t.Helper()
	k, _, err := daemon.ListKey(h.Config(), list, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// canaryFree asserts that no byte the relay received carries the canary in
// clear (docs/threat-model.md D7): it may only travel inside OpenPGP packets.
func canaryFree(t *testing.T, msgs []queuetest.Message, canary string) {
	t.Helper()
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte(canary)) {
			t.Errorf("the canary reached the relay in clear, in mail to %v", m.To)
		}
	}
}

// TestEncryptedReportEndToEnd is the keys issue's "done when": a report
// encrypted with gpg and sent with swaks, the acknowledgement, and the SRC
// member reading the report with gpg --decrypt from her copy.
func TestEncryptedReportEndToEnd(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks not installed (.ci/run installs it)")
	}
	f := newKeysFixture(t, "")
	const canary = "CANARY-7f3a-encrypted"
	ct := f.reporter.Must([]byte("The parser overflows. "+canary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	bodyFile := filepath.Join(t.TempDir(), "body.asc")
	os.WriteFile(bodyFile, ct, 0o600)
	cmd := exec.Command(swaks, "--server", f.h.Addr(), "--from", "rep@out.test", "--to", "security@ex.test",
		"--header", "Subject: a report", "--body", "@"+bodyFile)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, b)
	}
	msgs := f.h.Settle(2) // the acknowledgement and Alice's copy; Bob has no key
	canaryFree(t, msgs, canary)

	ack := daemontest.To(msgs, "rep@out.test")
	if len(ack) != 1 {
		t.Fatalf("reporter got %d messages", len(ack))
	}
	status := f.reporter.VerifySigned(ack[0].Data)
	daemontest.MustContain(t, "gpg --verify of the acknowledgement", status, "GOODSIG", "VALIDSIG "+f.secFpr)
	daemontest.MustContain(t, "the acknowledgement", string(ack[0].Data), f.secFpr, "security-key.asc")

	cp := daemontest.To(msgs, "alice@ex.test")
	if len(cp) != 1 {
		t.Fatalf("alice got %d messages", len(cp))
	}
	hd := daemontest.Header(t, cp[0])
	if hd.Get("Subject") != "Encrypted message" || strings.Contains(string(cp[0].Data[:bytes.Index(cp[0].Data, []byte("\r\n\r\n"))]), "SEC-") {
		t.Errorf("outer header names the incident or the subject:\n%s", cp[0].Data[:bytes.Index(cp[0].Data, []byte("\r\n\r\n"))])
	}
	plain, st := f.alice.DecryptMIME(cp[0].Data)
	daemontest.MustContain(t, "gpg --decrypt status", st, "DECRYPTION_OKAY", "GOODSIG")
	daemontest.MustContain(t, "alice's decrypted copy", string(plain), canary, "Subject: [SEC-", "a report", "It arrived encrypted", "bob@ex.test")
	if len(daemontest.To(msgs, "bob@ex.test")) != 0 {
		t.Error("bob, who has no key, got a copy of an encrypted report")
	}
	if strings.Contains(f.h.Logs.String(), canary) {
		t.Error("the canary reached the logs")
	}
}

// TestPGPMIMEReportAndReply: a PGP/MIME report, and Alice's encrypted reply
// threaded by In-Reply-To, decrypted and re-encrypted for the committee.
func TestPGPMIMEReportAndReply(t *testing.T) {
	f := newKeysFixture(t, "")
	const canary = "CANARY-pgpmime"
	ct := f.reporter.Must([]byte("Content-Type: text/plain; charset=utf-8\r\n\r\nDetails "+canary+"\r\n"), "--encrypt", "--armor", "-r", f.secFpr)
	raw := "From: rep@out.test\nTo: security@ex.test\nSubject: Encrypted message\nMessage-ID: <pm1@out.test>\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n" +
		"--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\nContent-Type: application/octet-stream\n\n" +
		strings.ReplaceAll(string(ct), "\r\n", "\n") + "\n--b--\n"
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, raw)
	msgs := f.h.Settle(2)
	canaryFree(t, msgs, canary)
	cp := daemontest.To(msgs, "alice@ex.test")[0]
	plain, _ := f.alice.DecryptMIME(cp.Data)
	daemontest.MustContain(t, "alice's copy", string(plain), canary)

	// Alice replies encrypted to the list key, as her client would.
	hd := daemontest.Header(t, cp)
	reply := f.alice.Must([]byte("Content-Type: text/plain\r\n\r\nConfirmed, "+canary+"-reply\r\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.MustSend("alice@ex.test", []string{"security@ex.test"}, "From: alice@ex.test\nSubject: Encrypted message\nIn-Reply-To: "+hd.Get("Message-Id")+
		"\nMessage-ID: <ar1@ex.test>\n\n"+strings.ReplaceAll(string(reply), "\r\n", "\n"))
	f.h.Settle(2) // no one to forward to: Bob has no key, Alice wrote it
	f.h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		if len(incs) != 1 || incs[0].Messages != 2 {
			t.Errorf("incidents %+v: the encrypted reply must thread onto the report", incs)
		}
		return nil
	})
}

// TestEncryptionRequired: with encryption = "required", a member without a
// usable key gets no copy even of a plaintext report, and the others are told.
func TestEncryptionRequired(t *testing.T) {
	f := newKeysFixture(t, "[lists.security]\naddress = \"security@ex.test\"\nencryption = \"required\"\n")
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "plain report", "CANARY-required"))
	msgs := f.h.Settle(2)
	canaryFree(t, msgs, "CANARY-required")
	if len(daemontest.To(msgs, "bob@ex.test")) != 0 {
		t.Fatal("bob got a copy although encryption is required and he has no key")
	}
	plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
	daemontest.MustContain(t, "alice's copy", string(plain), "Not sent to (no usable OpenPGP key): bob@ex.test")
}

// TestOptionalEncryptionPlaintextCopy: on the default (optional) list a
// plaintext report reaches a member without a key in plaintext, and a member
// with a key encrypted.
func TestOptionalEncryptionPlaintextCopy(t *testing.T) {
	f := newKeysFixture(t, "")
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "plain", "CANARY-optional"))
	msgs := f.h.Settle(3)
	if !bytes.Contains(daemontest.To(msgs, "bob@ex.test")[0].Data, []byte("CANARY-optional")) {
		t.Error("bob's plaintext copy lacks the report")
	}
	if bytes.Contains(daemontest.To(msgs, "alice@ex.test")[0].Data, []byte("CANARY-optional")) {
		t.Error("alice's copy is not encrypted")
	}
}

// TestReporterKeyPinned: a reporter who attaches a public key gets the
// acknowledgement encrypted to it.
func TestReporterKeyPinned(t *testing.T) {
	f := newKeysFixture(t, "")
	rfpr := f.reporter.GenKey("Rep <rep@out.test>")
	pub := f.reporter.Export(rfpr)
	raw := "From: rep@out.test\nTo: security@ex.test\nSubject: with key\nMessage-ID: <k1@out.test>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nreport text\n--b\nContent-Type: application/pgp-keys\nContent-Disposition: attachment; filename=key.asc\n\n" +
		strings.ReplaceAll(string(pub), "\r\n", "\n") + "\n--b--\n"
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, raw)
	msgs := f.h.Settle(3)
	ack := daemontest.To(msgs, "rep@out.test")[0]
	if bytes.Contains(ack.Data, []byte("SEC-")) {
		t.Error("the encrypted acknowledgement names the incident outside the encryption")
	}
	plain, st := f.reporter.DecryptMIME(ack.Data)
	daemontest.MustContain(t, "gpg --decrypt of the acknowledgement", st, "DECRYPTION_OKAY", "GOODSIG")
	daemontest.MustContain(t, "decrypted acknowledgement", string(plain), "SEC-", "3 working days")
}

// TestBadCiphertextRefused: tampered or unprotected ciphertext is refused with
// a reason, and nothing is stored (docs/threat-model.md D1).
func TestBadCiphertextRefused(t *testing.T) {
	f := newKeysFixture(t, "")
	ct := f.reporter.Must([]byte("secret report\n"), "--encrypt", "--armor", "-r", f.secFpr)
	// Flip one base64 character in the middle of the ciphertext.
	lines := strings.Split(string(ct), "\n")
	mid := len(lines) / 2
	b := []byte(lines[mid])
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	lines[mid] = string(b)
	tampered := strings.Join(lines, "\n")
	err := f.h.Send("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: x\n\n"+tampered)
	if c, _ := daemontest.Code(err); c < 500 {
		t.Fatalf("tampered ciphertext: %v, want a 5xx refusal", err)
	}
	other := daemontest.NewGPG(t)
	ofpr := other.GenKey("Other <o@else.test>")
	wrong := other.Must([]byte("secret\n"), "--encrypt", "--armor", "-r", ofpr)
	err = f.h.Send("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: x\n\n"+string(wrong))
	if c, e := daemontest.Code(err); c != 550 || e != "5.7.5" || !strings.Contains(err.Error(), f.secFpr) {
		t.Errorf("ciphertext to another key: %v, want 550 5.7.5 naming the security key", err)
	}
	f.h.D.View(func(tx *bolt.Tx) error {
		if incs, _ := incidentdb.List(tx); len(incs) != 0 {
			t.Errorf("refused ciphertext created %d incidents", len(incs))
		}
		return nil
	})
}

// TestCiphertextResubmission (docs/threat-model.md D3): the same ciphertext sent again
// by someone else joins the first incident, flagged to the SRC; its sender is
// not made a reporter and gets nothing, so the report's content never
// reaches them.
func TestCiphertextResubmission(t *testing.T) {
	f := newKeysFixture(t, "")
	const canary = "CANARY-d3-oracle"
	ct := f.reporter.Must([]byte("Secret details "+canary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: report\nMessage-ID: <d3a@out.test>\n\n"+string(ct))
	f.h.Settle(2) // ack + alice (bob has no key)
	f.h.MustSend("mallory@evil.test", []string{"security@ex.test"}, "From: mallory@evil.test\nSubject: new report\nMessage-ID: <d3b@evil.test>\n\n"+string(ct))
	msgs := f.h.Settle(3) // only alice's flagged copy
	if n := len(daemontest.To(msgs, "mallory@evil.test")); n != 0 {
		t.Fatalf("the resubmitter got %d messages", n)
	}
	plain, _ := f.alice.DecryptMIME(msgs[2].Data)
	daemontest.MustContain(t, "alice's copy of the resubmission", daemontest.MIMEText(plain), "first received from rep@out.test", "mallory@evil.test")
	var n int
	f.h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		n = len(incs)
		if n == 1 && incs[0].Reporter != "rep@out.test" {
			t.Errorf("reporter became %s", incs[0].Reporter)
		}
		return nil
	})
	if n != 1 {
		t.Errorf("%d incidents, want 1", n)
	}
	for _, m := range msgs {
		for _, r := range m.To {
			if r == "mallory@evil.test" && bytes.Contains(m.Data, []byte(canary)) {
				t.Error("the canary reached the resubmitter")
			}
		}
	}
}
