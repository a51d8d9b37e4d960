package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// keysFixture is a committee where Alice has a pinned key and Bob has none,
// plus a reporter with GnuPG.
type keysFixture struct {
	h        *harness
	alice    *gpgHome
	reporter *gpgHome
	secFpr   string
}

func newKeysFixture(t *testing.T, securityTOML string) *keysFixture {
	t.Helper()
	alice := newGPG(t)
	afpr := alice.genKey("Alice <alice@ex.test>")
	kd := keysDir(t, map[string][]byte{"alice": alice.export(afpr)})
	members := tomlMember("alice@ex.test", afpr) + "[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n"
	h := newHarnessConfig(t, harnessConfig{top: fmt.Sprintf("keys_dir = %q\n", kd), members: members + securityTOML}, startOptions{})
	f := &keysFixture{h: h, alice: alice, reporter: newGPG(t)}
	var pub strings.Builder
	if rc := run([]string{"keys", "export", "security", "--config", h.configFile()}, &pub, os.Stderr); rc != 0 {
		t.Fatalf("keys export: exit %d", rc)
	}
	f.reporter.importKey([]byte(pub.String()))
	f.alice.importKey([]byte(pub.String())) // members know the list key that signs their copies
	out := f.reporter.must(nil, "--with-colons", "--fingerprint", "security@ex.test")
	f.secFpr = fprLine.FindStringSubmatch(string(out))[1]
	return f
}

// canaryFree asserts that no byte the relay received carries the canary in
// clear (threats.md D7): it may only travel inside OpenPGP packets.
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
	ct := f.reporter.must([]byte("The parser overflows. "+canary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	bodyFile := filepath.Join(t.TempDir(), "body.asc")
	os.WriteFile(bodyFile, ct, 0o600)
	cmd := exec.Command(swaks, "--server", f.h.addr(), "--from", "rep@out.test", "--to", "security@ex.test",
		"--header", "Subject: a report", "--body", "@"+bodyFile)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, b)
	}
	msgs := f.h.settle(2) // the acknowledgement and Alice's copy; Bob has no key
	canaryFree(t, msgs, canary)

	ack := to(msgs, "rep@out.test")
	if len(ack) != 1 {
		t.Fatalf("reporter got %d messages", len(ack))
	}
	status := f.reporter.verifySigned(ack[0].Data)
	mustContain(t, "gpg --verify of the acknowledgement", status, "GOODSIG", "VALIDSIG "+f.secFpr)
	mustContain(t, "the acknowledgement", string(ack[0].Data), f.secFpr, "security-key.asc")

	cp := to(msgs, "alice@ex.test")
	if len(cp) != 1 {
		t.Fatalf("alice got %d messages", len(cp))
	}
	hd := header(t, cp[0])
	if hd.Get("Subject") != "Encrypted message" || strings.Contains(string(cp[0].Data[:bytes.Index(cp[0].Data, []byte("\r\n\r\n"))]), "SEC-") {
		t.Errorf("outer header names the incident or the subject:\n%s", cp[0].Data[:bytes.Index(cp[0].Data, []byte("\r\n\r\n"))])
	}
	plain, st := f.alice.decryptMIME(cp[0].Data)
	mustContain(t, "gpg --decrypt status", st, "DECRYPTION_OKAY", "GOODSIG")
	mustContain(t, "alice's decrypted copy", string(plain), canary, "Subject: [SEC-", "a report", "It arrived encrypted", "bob@ex.test")
	if len(to(msgs, "bob@ex.test")) != 0 {
		t.Error("bob, who has no key, got a copy of an encrypted report")
	}
	if strings.Contains(f.h.logs.String(), canary) {
		t.Error("the canary reached the logs")
	}
}

// TestPGPMIMEReportAndReply: a PGP/MIME report, and Alice's encrypted reply
// threaded by In-Reply-To, decrypted and re-encrypted for the committee.
func TestPGPMIMEReportAndReply(t *testing.T) {
	f := newKeysFixture(t, "")
	const canary = "CANARY-pgpmime"
	ct := f.reporter.must([]byte("Content-Type: text/plain; charset=utf-8\r\n\r\nDetails "+canary+"\r\n"), "--encrypt", "--armor", "-r", f.secFpr)
	raw := "From: rep@out.test\nTo: security@ex.test\nSubject: Encrypted message\nMessage-ID: <pm1@out.test>\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\n\n" +
		"--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\nContent-Type: application/octet-stream\n\n" +
		strings.ReplaceAll(string(ct), "\r\n", "\n") + "\n--b--\n"
	f.h.mustSend("rep@out.test", []string{"security@ex.test"}, raw)
	msgs := f.h.settle(2)
	canaryFree(t, msgs, canary)
	cp := to(msgs, "alice@ex.test")[0]
	plain, _ := f.alice.decryptMIME(cp.Data)
	mustContain(t, "alice's copy", string(plain), canary)

	// Alice replies encrypted to the list key, as her client would.
	hd := header(t, cp)
	reply := f.alice.must([]byte("Content-Type: text/plain\r\n\r\nConfirmed, "+canary+"-reply\r\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.mustSend("alice@ex.test", []string{"security@ex.test"}, "From: alice@ex.test\nSubject: Encrypted message\nIn-Reply-To: "+hd.Get("Message-Id")+
		"\nMessage-ID: <ar1@ex.test>\n\n"+strings.ReplaceAll(string(reply), "\r\n", "\n"))
	f.h.settle(2) // no one to forward to: Bob has no key, Alice wrote it
	f.h.d.db.View(func(tx *bolt.Tx) error {
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
	f.h.mustSend("rep@out.test", []string{"security@ex.test"}, report("rep@out.test", "plain report", "CANARY-required"))
	msgs := f.h.settle(2)
	canaryFree(t, msgs, "CANARY-required")
	if len(to(msgs, "bob@ex.test")) != 0 {
		t.Fatal("bob got a copy although encryption is required and he has no key")
	}
	plain, _ := f.alice.decryptMIME(to(msgs, "alice@ex.test")[0].Data)
	mustContain(t, "alice's copy", string(plain), "Not sent to (no usable OpenPGP key): bob@ex.test")
}

// TestOptionalEncryptionPlaintextCopy: on the default (optional) list a
// plaintext report reaches a member without a key in plaintext, and a member
// with a key encrypted.
func TestOptionalEncryptionPlaintextCopy(t *testing.T) {
	f := newKeysFixture(t, "")
	f.h.mustSend("rep@out.test", []string{"security@ex.test"}, report("rep@out.test", "plain", "CANARY-optional"))
	msgs := f.h.settle(3)
	if !bytes.Contains(to(msgs, "bob@ex.test")[0].Data, []byte("CANARY-optional")) {
		t.Error("bob's plaintext copy lacks the report")
	}
	if bytes.Contains(to(msgs, "alice@ex.test")[0].Data, []byte("CANARY-optional")) {
		t.Error("alice's copy is not encrypted")
	}
}

// TestReporterKeyPinned: a reporter who attaches a public key gets the
// acknowledgement encrypted to it.
func TestReporterKeyPinned(t *testing.T) {
	f := newKeysFixture(t, "")
	rfpr := f.reporter.genKey("Rep <rep@out.test>")
	pub := f.reporter.export(rfpr)
	raw := "From: rep@out.test\nTo: security@ex.test\nSubject: with key\nMessage-ID: <k1@out.test>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nreport text\n--b\nContent-Type: application/pgp-keys\nContent-Disposition: attachment; filename=key.asc\n\n" +
		strings.ReplaceAll(string(pub), "\r\n", "\n") + "\n--b--\n"
	f.h.mustSend("rep@out.test", []string{"security@ex.test"}, raw)
	msgs := f.h.settle(3)
	ack := to(msgs, "rep@out.test")[0]
	if bytes.Contains(ack.Data, []byte("SEC-")) {
		t.Error("the encrypted acknowledgement names the incident outside the encryption")
	}
	plain, st := f.reporter.decryptMIME(ack.Data)
	mustContain(t, "gpg --decrypt of the acknowledgement", st, "DECRYPTION_OKAY", "GOODSIG")
	mustContain(t, "decrypted acknowledgement", string(plain), "SEC-", "3 working days")
}

// TestBadCiphertextRefused: tampered or unprotected ciphertext is refused with
// a reason, and nothing is stored (threats.md D1).
func TestBadCiphertextRefused(t *testing.T) {
	f := newKeysFixture(t, "")
	ct := f.reporter.must([]byte("secret report\n"), "--encrypt", "--armor", "-r", f.secFpr)
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
	err := f.h.send("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: x\n\n"+tampered)
	if c, _ := code(err); c < 500 {
		t.Fatalf("tampered ciphertext: %v, want a 5xx refusal", err)
	}
	other := newGPG(t)
	ofpr := other.genKey("Other <o@else.test>")
	wrong := other.must([]byte("secret\n"), "--encrypt", "--armor", "-r", ofpr)
	err = f.h.send("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: x\n\n"+string(wrong))
	if c, e := code(err); c != 550 || e != "5.7.5" || !strings.Contains(err.Error(), f.secFpr) {
		t.Errorf("ciphertext to another key: %v, want 550 5.7.5 naming the security key", err)
	}
	f.h.d.db.View(func(tx *bolt.Tx) error {
		if incs, _ := incidentdb.List(tx); len(incs) != 0 {
			t.Errorf("refused ciphertext created %d incidents", len(incs))
		}
		return nil
	})
}

// TestKeysExportAndCheck: the exported list key is what signs the mail; check
// reports a member whose pinned key is missing.
func TestKeysExportAndCheck(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "e.toml")
	writeFile(t, cfgPath, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\nkeys_dir = %q\n", filepath.Join(dir, "data"), dir)+
		tomlMember("carol@ex.test", "0123456789ABCDEF0123456789ABCDEF01234567"))
	var out, errb strings.Builder
	if rc := run([]string{"keys", "export", "announce", "--config", cfgPath}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "BEGIN PGP PUBLIC KEY BLOCK") {
		t.Fatalf("keys export: %d %q", rc, errb.String())
	}
	g := newGPG(t)
	g.importKey([]byte(out.String()))
	if fi, err := os.Stat(listKeyPath(filepath.Join(dir, "data"), "announce")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("list key file: %v %v, want mode 0600", fi.Mode(), err)
	}
	out.Reset()
	errb.Reset()
	if rc := run([]string{"check", "--config", cfgPath}, &out, &errb); rc != 1 {
		t.Errorf("check with a missing pinned key: exit %d, want 1", rc)
	}
	mustContain(t, "check output", out.String()+errb.String(), "carol@ex.test", "no key with the pinned fingerprint")
	if rc := run([]string{"keys", "export", "nope", "--config", cfgPath}, &out, &errb); rc != 2 {
		t.Errorf("keys export of an unknown list: exit %d, want 2", rc)
	}
}

// TestCiphertextResubmission (threats.md D3): the same ciphertext sent again
// by someone else joins the first incident, flagged to the SRC; its sender is
// not made a reporter and gets nothing, so the report's content never
// reaches them.
func TestCiphertextResubmission(t *testing.T) {
	f := newKeysFixture(t, "")
	const canary = "CANARY-d3-oracle"
	ct := f.reporter.must([]byte("Secret details "+canary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.mustSend("rep@out.test", []string{"security@ex.test"}, "From: rep@out.test\nSubject: report\nMessage-ID: <d3a@out.test>\n\n"+string(ct))
	f.h.settle(2) // ack + alice (bob has no key)
	f.h.mustSend("mallory@evil.test", []string{"security@ex.test"}, "From: mallory@evil.test\nSubject: new report\nMessage-ID: <d3b@evil.test>\n\n"+string(ct))
	msgs := f.h.settle(3) // only alice's flagged copy
	if n := len(to(msgs, "mallory@evil.test")); n != 0 {
		t.Fatalf("the resubmitter got %d messages", n)
	}
	plain, _ := f.alice.decryptMIME(msgs[2].Data)
	mustContain(t, "alice's copy of the resubmission", mimeText(plain), "first received from rep@out.test", "mallory@evil.test")
	var n int
	f.h.d.db.View(func(tx *bolt.Tx) error {
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
