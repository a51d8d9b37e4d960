package daemon_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/workflow"
)

// TestRequireEncryptionEndToEnd: with [commands] require_encryption, a
// member's /accept clear-signed with gpg but sent in clear applies nothing;
// the receipt at the relay, which the member decrypts with gpg, says why
// and how to send it again, and the committee still gets the message. The
// same clear-signed text, then encrypted to the list key with gpg, applies:
// the refused signature was not recorded as seen (docs/threat-model.md E1,
// E3).
func TestRequireEncryptionEndToEnd(t *testing.T) {
	f := newCmdFixtureWith(t, nil, "\n[commands]\nrequire_encryption = true\n")
	to := "security+" + f.id + "@ex.test"
	const canary = "CANARY-enc-5521"
	signed := f.alice.Must([]byte("/accept\n/lead me\n\nTaking it; "+canary+".\n"), "--clearsign", "-u", f.afpr)
	mail := func(msgid string, body []byte) string {
		return fmt.Sprintf("From: alice@ex.test\nTo: %s\nSubject: Re: [%s]\nMessage-ID: <%s>\n\n%s", to, f.id, msgid, strings.ReplaceAll(string(body), "\r\n", "\n"))
	}

	f.h.MustSend("alice@ex.test", []string{to}, mail("plain1@ex.test", signed))
	msgs := f.next(2) // the refusal to alice and bob's copy
	r := f.receipt(f.alice, msgs, "alice@ex.test")
	got := strings.Join(strings.Fields(r), " ")
	for _, want := range []string{
		"Nothing applied: this committee requires commands to be encrypted to the list key " + f.secFpr +
			" as well as signed ([commands] require_encryption). Your message was signed by your pinned key " + f.afpr + ", but not encrypted.",
		"Send the same commands again, signed and encrypted to security@ex.test",
		"gpg --sign --encrypt --armor -u " + f.afpr + " -r " + f.secFpr,
		"> /accept not applied", "> /lead me not applied",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("the refusal lacks %q:\n%s", want, r)
		}
	}
	if len(daemontest.To(msgs, "bob@ex.test")) != 1 {
		t.Errorf("bob got no copy of the refused message:\n%s", daemontest.Summary(msgs))
	}
	if len(daemontest.To(msgs, f.reporterAddr)) != 0 {
		t.Error("the reporter was told of a refused /accept")
	}
	if inc := f.incident(); inc.Phase != workflow.PhaseTriage || inc.FixLead != "" {
		t.Fatalf("signed only: phase %s, lead %q: applied", inc.Phase, inc.FixLead)
	}
	logs := f.h.Logs.String()
	if !strings.Contains(logs, "not encrypted to the list key") || strings.Contains(logs, canary) {
		t.Errorf("the refusal is not logged, or the log quotes the message")
	}

	// The same signature, encrypted to the list key: applied.
	enc := f.alice.Must(signed, "--encrypt", "--armor", "-r", f.secFpr)
	f.h.MustSend("alice@ex.test", []string{to}, mail("enc1@ex.test", enc))
	msgs = f.next(3) // receipt, the update to the reporter, bob's copy
	r = f.receipt(f.alice, msgs, "alice@ex.test")
	if strings.Contains(r, "refused") || strings.Contains(r, "replay") {
		t.Fatalf("the same commands, encrypted, were refused:\n%s", r)
	}
	daemontest.MustContain(t, "receipt", r, "> /accept", "> /lead me")
	if inc := f.incident(); inc.Phase != workflow.PhaseFix || inc.FixLead != "alice@ex.test" {
		t.Fatalf("signed and encrypted: phase %s, lead %q", inc.Phase, inc.FixLead)
	}
}
