package daemon_test

// The attack campaign against the running daemon: each class, where its table
// lives, and what every case must produce (the reply, and the stored state).
// smtpd/campaign_test.go indexes the SMTP layer's own classes.
//
// Authorisation of commands (docs/threat-model.md E1–E5, D4): nothing applies,
// the incident is unchanged, and only the signer's pinned key can read why.
//
//	unsigned from a member's exact address                  TestCommandAttacks: refusal receipt to that member
//	a 25-hour-old signature; another incident named         TestCommandAttacks: receipt "24 h", receipt, no change
//	an unknown command next to a valid one; quoted commands TestCommandAttacks: receipt naming it; no receipt at all
//	a byte-identical replay                                 TestCommandAttacks: receipt "replay", history unchanged
//	signed by a key nobody pinned, From a member            TestCommandAuthorisation: receipt to the member named in From
//	signed by a member of another role (a distributor)      TestCommandAuthorisation: receipt to the distributor, "you may not"
//	signed by an expired key; by a revoked key              TestCommandAuthorisation: no receipt (no usable key), no change
//	partly signed: a command outside the signature          TestCommandAuthorisation: receipt "part of the message is signed"
//	a signed command forwarded as message/rfc822            TestCommandAuthorisation: nothing, no receipt
//	roles per command, removed members, future signatures   workflow TestAttacks, TestGuards
//	Johnny layouts, weak hashes and keys, revocations       keys TestRefusals, TestDecryptSignatureProblems
//	every signature verdict has its own reason and fix      listd TestSignatureProblems
//
// Distributors' headers (G1, G2, C4): a refused post reaches no distributor,
// is kept in quarantine, and the SRC gets an encrypted alert without the
// outside address.
//
//	outside To, Cc, second Cc, Bcc, Resent-To, Resent-Cc    listd TestDistributorHeaders: 550 5.7.1, alert
//	unparsable (";", open quote, "<broken", encoded word)   listd TestDistributorHeaders: 550 5.7.1 "cannot be parsed", alert
//	very long To; duplicate To                              listd TestDistributorHeaders: 550 5.7.1; 554 5.6.0, alert
//	group "undisclosed-recipients:;", comments, case        listd TestDistributorHeaders: accepted
//	outside Cc through SMTP, plaintext post                 TestDistributorsLeakGuard: 550, alert, no byte of the address out
//
// Mixed recipients of one transaction (A1: nothing answered 250 and lost):
//
//	every ordered pair of address kinds, SMTP and LMTP      TestMixedRecipients: both handled, or 452 4.5.3 at RCPT and handled when sent alone
//	the governance addresses (apply, GOV-…)                 listd TestRecipientPairs: the same rule, and 554 5.5.3 at DATA without the RCPT check
//	two incident addresses; duplicates (RFC 1047)           TestTwoIncidentAddresses: the second split off, its retry stored once
//	a real Postfix over LMTP                                TestPostfixSplitsRecipients: deferred, then delivered
//	the recipients accepted before reach the Handler        smtpd TestAccepted
//
// Reporter keys (D5): a key is pinned by itself only from an authenticated
// sender; every other key is kept unused and the SRC told both fingerprints.
//
//	a third party's key in From: the reporter, gpg          TestReporterKeyHijack: alert, /reply unreadable to them
//	pinned, kept, replaced, chosen, unpinned                listd TestReporterKeys
//	Authentication-Results of a trusted MTA                 listd TestReporterKeyAuthenticated, TestAuthenticatedFrom
//	incidents from before keys were tracked                 listd TestReporterKeyLegacy
//	/reporter-key grammar, guards and who may               workflow TestParseReporterKey, TestReporterKeyCommand
//
// Resubmitted ciphertext (D3) is TestCiphertextResubmission; backscatter
// (B8) is TestAcknowledgementRules.

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestCampaignIndex keeps the index above true: every test it names exists.
func TestCampaignIndex(t *testing.T) {
	src, err := os.ReadFile("campaign_test.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, dir := range []string{".", "listd", "../../../workflow", "../../../keys", "../../../smtpd"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range regexp.MustCompile(`(?m)^func (Test\w+)\(`).FindAllSubmatch(b, -1) {
				defined[string(m[1])] = true
			}
		}
	}
	named := regexp.MustCompile(`\bTest[A-Z]\w+`).FindAllString(string(src[:regexp.MustCompile(`\nimport \(`).FindIndex(src)[0]]), -1)
	if len(named) < 20 {
		t.Fatalf("the index names %d tests", len(named))
	}
	for _, n := range named {
		if !defined[n] {
			t.Errorf("the campaign index names %s, which no test file defines", n)
		}
	}
}
