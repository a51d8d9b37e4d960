package daemon_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// verpSender is the shape of a per-copy bounce address (docs/design.md §4).
var verpSender = regexp.MustCompile(`^(security|distributors)\+bounces-[a-z2-7]{26}@ex\.test$`)

// postfixDSN is a bounce as Postfix writes one (RFC 3464 in an RFC 6522
// multipart/report), for rcpt, with the MTA's diagnostic.
func postfixDSN(id, rcpt, diag string) string {
	return fmt.Sprintf(`From: MAILER-DAEMON@mx.vendor1.test (Mail Delivery System)
To: distributors@ex.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <%s@mx.vendor1.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="DSN1"

--DSN1
Content-Type: text/plain

This is the mail system at host mx.vendor1.test.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--DSN1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.vendor1.test
X-Postfix-Queue-ID: 4ABC

Final-Recipient: rfc822; %s
Original-Recipient: rfc822;%s
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.vendor1.test
Diagnostic-Code: smtp; %s

--DSN1
Content-Type: text/rfc822-headers

From: ex.test Security Response <distributors@ex.test>
Subject: Encrypted message

--DSN1--
`, id, rcpt, rcpt, diag)
}

// TestDistributorNoticeBounceEndToEnd: /notify sends each distributor its
// notice from its own bounce address; the relay takes them. Then one
// distributor's server bounces its notice: a DSN arrives over SMTP at that
// address, from the null sender. The SRC gets exactly one alert each,
// encrypted, naming that distributor and quoting the status; /status shows
// the bounce; nothing goes to either distributor or to the reporter. A
// forged bounce (right shape, wrong MAC) is taken and makes no noise.
func TestDistributorNoticeBounceEndToEnd(t *testing.T) {
	d1, d2 := &distributor{addr: "one@vendor1.test"}, &distributor{addr: "two@vendor2.test"}
	f := newCmdFixtureWith(t, []*distributor{d1, d2}, "")
	f.prepare(t)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/notify\n"))
	notices := f.next(4) // alice's receipt, bob's copy, the two notices
	n1, n2 := daemontest.To(notices, d1.addr), daemontest.To(notices, d2.addr)
	if len(n1) != 1 || len(n2) != 1 {
		t.Fatalf("notices:\n%s", daemontest.Summary(notices))
	}
	if !verpSender.MatchString(n1[0].From) || !strings.HasPrefix(n1[0].From, "distributors+") || n1[0].From == n2[0].From {
		t.Fatalf("the notices' envelope senders: %q and %q", n1[0].From, n2[0].From)
	}
	for _, m := range notices {
		if m.From == "distributors+bounces@ex.test" || m.From == "security+bounces@ex.test" {
			t.Errorf("a copy to %v left from the shared bounce address", m.To)
		}
	}

	after := f.seen
	// A forged bounce: the address's shape, one character of its token changed.
	at := strings.Index(n1[0].From, "-") + 1
	forged := n1[0].From[:at] + map[bool]string{true: "b", false: "a"}[n1[0].From[at] == 'a'] + n1[0].From[at+1:]
	f.h.MustSend("", []string{forged}, postfixDSN("forged", d1.addr, "550 5.1.1 forged"))
	f.next(0)
	if v := daemon.CounterValue(f.h.D, "embargo_bounces_total", "unknown"); v != 1 {
		t.Errorf(`embargo_bounces_total{result="unknown"} = %v, want 1`, v)
	}

	// The real bounce of d1's notice.
	f.h.MustSend("", []string{n1[0].From}, postfixDSN("real", d1.addr, "550 5.1.1 <"+d1.addr+">: Recipient address rejected: User unknown in virtual mailbox table"))
	msgs := f.next(2) // one alert to each member
	if len(daemontest.To(msgs, "alice@ex.test")) != 1 || len(daemontest.To(msgs, "bob@ex.test")) != 1 {
		t.Fatalf("after the bounce:\n%s", daemontest.Summary(msgs))
	}
	for _, m := range msgs {
		if !verpSender.MatchString(m.From) || !strings.HasPrefix(m.From, "security+") {
			t.Errorf("the alert to %v left from %q", m.To, m.From)
		}
		if strings.Contains(string(m.Data), d1.addr) {
			t.Errorf("the alert to %v names the distributor in clear", m.To)
		}
	}
	plain, st := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data)
	daemontest.MustContain(t, "alice's decrypted alert", st, "DECRYPTION_OKAY", "GOODSIG")
	alert := daemontest.MIMEText(plain)
	daemontest.MustContain(t, "alice's alert", alert, "Recipient:  "+d1.addr, "Mail:       distributor-notice", "Incident:   "+f.id,
		"Status:     5.1.1", "User unknown in virtual mailbox table")
	if strings.Contains(alert, d2.addr) {
		t.Errorf("the alert names the other distributor:\n%s", alert)
	}
	if v := daemon.CounterValue(f.h.D, "embargo_bounces_total", "alerted"); v != 1 {
		t.Errorf(`embargo_bounces_total{result="alerted"} = %v, want 1`, v)
	}

	// /status shows it.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.clearsigned(f.alice, f.afpr, "alice@ex.test", "/status\n"))
	msgs = f.next(3) // receipt, status, bob's copy
	status := decryptedWith(t, f.alice, daemontest.To(msgs, "alice@ex.test"), "Bounced")
	daemontest.MustContain(t, "alice's /status", status, "distributor-notice to "+d1.addr, "bounced: 5.1.1")

	// Nothing since the notices went to a distributor, the reporter or
	// the bounce's sender: only the members got mail.
	for _, m := range f.h.Rec.Messages()[after:] {
		if len(m.To) != 1 || (m.To[0] != "alice@ex.test" && m.To[0] != "bob@ex.test") {
			t.Errorf("after the notices, mail to %v", m.To)
		}
	}
}
