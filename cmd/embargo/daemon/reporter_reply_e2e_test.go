package daemon_test

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// The reporter replies as a member does: to the list address the
// acknowledgement's Reply-To names, encrypted to the key it carries, and the
// reply joins the incident by In-Reply-To.

// wantListReplyTo fails the test unless m's Reply-To is the list address.
func wantListReplyTo(t *testing.T, what string, m queuetest.Message) {
	t.Helper()
	hd := daemontest.Header(t, m)
	rt := hd.Get("Reply-To")
	a, err := mail.ParseAddress(rt)
	if err != nil || a.Address != "security@ex.test" {
		t.Errorf("%s: Reply-To %q, want security@ex.test (whose key the reporter has)", what, rt)
	}
}

// messageID is m's Message-ID without angle brackets.
func messageID(t *testing.T, m queuetest.Message) string {
	t.Helper()
	hd := daemontest.Header(t, m)
	return strings.Trim(hd.Get("Message-Id"), "<>")
}

// incidentCount is how many incidents the store holds.
func incidentCount(f *cmdFixture) int {
	var n int
	f.h.D.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		n = len(incs)
		return err
	})
	return n
}

// TestReporterReplyThreads: the acknowledgement and the reporter's updates
// reply to security@; the reporter's encrypted reply to security@, In-Reply-To
// the acknowledgement and without the incident's tag in the Subject, joins
// the incident; a stranger's mail with the same In-Reply-To starts a new
// report.
func TestReporterReplyThreads(t *testing.T) {
	f := newCmdFixture(t)
	ack := daemontest.To(f.h.Rec.Messages()[:3], f.reporterAddr)[0]
	wantListReplyTo(t, "the acknowledgement", ack)
	ackID := messageID(t, ack)
	f.h.D.View(func(tx *bolt.Tx) error {
		if id, ok := incidentdb.IncidentOf(tx, ackID); !ok || string(id) != f.id {
			t.Errorf("the acknowledgement's Message-ID is filed under %q, want %s", id, f.id)
		}
		return nil
	})
	if body := daemontest.Body(t, ack); !strings.Contains(body, "security@ex.test") || strings.Contains(body, "security+") {
		t.Errorf("the acknowledgement tells the reporter to write elsewhere than security@:\n%s", body)
	}

	const canary = "CANARY-reporter-reply"
	ct := f.reporter.Must([]byte("More details: "+canary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.MustSend(f.reporterAddr, []string{"security@ex.test"}, fmt.Sprintf(
		"From: Rep Orter <%s>\nTo: security@ex.test\nSubject: Re: more details\nMessage-ID: <rr1@out.test>\nIn-Reply-To: <%s>\nReferences: <%s>\n\n%s",
		f.reporterAddr, ackID, ackID, ct))
	msgs := f.next(2) // alice's and bob's copies; no acknowledgement
	canaryFree(t, msgs, canary)
	if len(daemontest.To(msgs, f.reporterAddr)) != 0 || incidentCount(f) != 1 {
		t.Fatalf("the reporter's reply was taken as a new report:\n%s", daemontest.Summary(msgs))
	}
	plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
	daemontest.MustContain(t, "alice's copy of the reporter's reply", string(plain), "Subject: ["+f.id+"]", canary, "(the reporter)")
	if inc := f.incident(); inc.Messages != 2 {
		t.Errorf("the incident holds %d messages, want the report and the reply", inc.Messages)
	}

	// A stranger cites the acknowledgement: a new report, acknowledged as
	// any other, and nothing joins the incident.
	f.h.MustSend("mallory@evil.test", []string{"security@ex.test"}, fmt.Sprintf(
		"From: mallory@evil.test\nTo: security@ex.test\nSubject: Re: more details\nMessage-ID: <m1@evil.test>\nIn-Reply-To: <%s>\nReferences: <%s>\n\nlet me in\n",
		ackID, ackID))
	msgs = f.next(3) // mallory's acknowledgement, alice's and bob's copies of a new report
	got := daemontest.To(msgs, "mallory@evil.test")
	if len(got) != 1 || incidentCount(f) != 2 {
		t.Fatalf("the stranger's mail did not start a new report:\n%s", daemontest.Summary(msgs))
	}
	mh := daemontest.Header(t, got[0])
	if id := idRE.FindString(mh.Get("Subject")); id == f.id || id == "" {
		t.Errorf("the stranger was acknowledged with %q, want a new incident", id)
	}
	if inc := f.incident(); inc.Messages != 2 {
		t.Errorf("the stranger's mail joined the incident: %d messages", inc.Messages)
	}

	// The reporter's stage updates reply to the list address too.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/accept\n"))
	up := daemontest.To(f.next(3), f.reporterAddr) // receipt, the update, bob's copy
	if len(up) != 1 {
		t.Fatalf("the reporter got %d updates", len(up))
	}
	wantListReplyTo(t, "the reporter's update", up[0])
}

// TestReporterReplyLive: a reporter answers the acknowledgement with mutt,
// encrypting (crypt_autoencrypt), as TestClientsLive's members answer their
// copies: mutt finds the security key by the Reply-To address and sends
// without asking for a key ID, and the reply joins the incident.
func TestReporterReplyLive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a mail client in a terminal")
	}
	f := newCmdFixture(t)
	ack := daemontest.To(f.h.Rec.Messages()[:3], f.reporterAddr)[0]
	rfpr := f.reporter.GenKey("Rep Orter <" + f.reporterAddr + ">")
	// The reporter certifies the key the acknowledgement carries (a local
	// signature), as TestClientsLive's members do: mutt then takes it as
	// valid for security@ without asking.
	f.reporter.Must(nil, "--quick-lsign-key", f.secFpr)
	c := muttClient{prog: "mutt", sign: true, encrypt: true, from: "Rep Orter <" + f.reporterAddr + ">"}
	r := setupMutt(t, f.reporter, c, rfpr, "More details from mutt.\n")
	sent, screen := r.reply(t, c, mboxOf(ack.Data))
	if strings.Contains(screen, "Enter keyID") {
		t.Fatalf("mutt asked for a key ID:\n%s", tail(screen))
	}
	if irt := regexp.MustCompile(`(?m)^In-Reply-To: <(.*)>`).FindSubmatch(sent); irt == nil || string(irt[1]) != messageID(t, ack) {
		t.Errorf("mutt's reply is not In-Reply-To the acknowledgement:\n%s", sent)
	}
	sent = []byte(daemontest.CRLF(string(sent)))
	if err := daemontest.SendSMTP(f.h.Addr(), f.reporterAddr, []string{"security@ex.test"}, sent); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := f.next(2)
	if len(daemontest.To(msgs, f.reporterAddr)) != 0 || incidentCount(f) != 1 {
		t.Fatalf("the reporter's reply was taken as a new report:\n%s", daemontest.Summary(msgs))
	}
	plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
	daemontest.MustContain(t, "alice's copy of the reporter's reply", daemontest.MIMEText(plain), "More details from mutt.", "(the reporter)", "It arrived encrypted")
	if inc := f.incident(); inc.Messages != 2 || inc.Phase != workflow.PhaseTriage {
		t.Errorf("incident: %d messages, phase %s", inc.Messages, inc.Phase)
	}
}
