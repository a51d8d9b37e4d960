package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// TestRequireBindingEndToEnd: with [commands] require_binding, a member's
// /accept clear-signed with gpg is replayed over SMTP into another
// incident by someone who read it: a bare one (as sent to another
// project's list, never seen here) applies nothing in SEC-…-0002, and
// neither does her real reply for the first incident, which quotes
// embargo's report copy ("Reply to security+<first ID>@ex.test with signed
// commands."); the receipts, decrypted with gpg, say what the signed text
// lacked. That reply applies in its own incident, sent to the plain list
// address as a mail client's reply goes (docs/threat-model.md E3).
func TestRequireBindingEndToEnd(t *testing.T) {
	f := newCmdFixtureWith(t, nil, "\n[commands]\nrequire_binding = true\n")
	id1 := f.id
	var copy1 string
	for _, m := range daemontest.To(f.h.Settle(f.seen), "alice@ex.test") {
		plain, _ := f.alice.DecryptMIME(m.Data)
		copy1 = daemontest.MIMEText(plain)
	}
	line := "Reply to security+" + id1 + "@ex.test with signed commands."
	if !strings.Contains(copy1, line) {
		t.Fatalf("alice's report copy does not say %q:\n%s", line, copy1)
	}
	f.h.MustSend("rep2@out.test", []string{"security@ex.test"}, daemontest.Report("rep2@out.test", "second bug", "another one"))
	msgs := f.next(3) // ack, alice, bob
	id2 := idRE.FindString(string(daemontest.To(msgs, "rep2@out.test")[0].Data))
	if id2 == "" || id2 == id1 {
		t.Fatalf("second incident %q (first %q)", id2, id1)
	}
	phase := func(id string) workflow.Phase {
		var p workflow.Phase
		f.h.D.View(func(tx *bolt.Tx) error {
			inc, err := incidentdb.Get(tx, workflow.ID(id))
			if err != nil {
				t.Fatal(err)
			}
			p = inc.Phase
			return nil
		})
		return p
	}
	send := func(to, subject string, signed []byte) {
		t.Helper()
		f.h.MustSend("alice@ex.test", []string{to}, fmt.Sprintf("From: alice@ex.test\nTo: %s\nSubject: %s\nMessage-ID: <%d@ex.test>\n\n%s",
			to, subject, time.Now().UnixNano(), strings.ReplaceAll(string(signed), "\r\n", "\n")))
	}
	refusedIn2 := func(what, lacks string) {
		t.Helper()
		msgs := f.next(2) // the refusal to alice and bob's copy
		r := strings.Join(strings.Fields(f.receipt(f.alice, msgs, "alice@ex.test")), " ")
		for _, want := range []string{"([commands] require_binding)", "Your signed text does not name " + lacks + ".",
			"Or write security+" + id2 + "@ex.test anywhere in the signed text", "> /accept not applied"} {
			if !strings.Contains(r, want) {
				t.Fatalf("%s: the refusal lacks %q:\n%s", what, want, r)
			}
		}
		if p := phase(id2); p != workflow.PhaseTriage {
			t.Fatalf("%s: %s is in phase %s", what, id2, p)
		}
	}
	to2 := "security+" + id2 + "@ex.test"

	bare := f.alice.Must([]byte("/accept\n/lead me\n"), "--clearsign", "-u", f.afpr)
	send(to2, "Re: ["+id2+"]", bare)
	refusedIn2("a bare /accept", "the list address security@ex.test or "+id2)

	// Alice's reply to her copy of the first report, mutt-style: the
	// commands above her quote of it.
	quoted := "> " + strings.ReplaceAll(strings.TrimRight(copy1, "\n"), "\n", "\n> ")
	reply := f.alice.Must([]byte("/accept\n/lead me\n\nOn Mon, embargo wrote:\n"+quoted+"\n"), "--clearsign", "-u", f.afpr)
	send(to2, "Re: ["+id2+"]", reply)
	refusedIn2("the reply for "+id1, id2)

	send("security@ex.test", "Re: ["+id1+"] parser overflow", reply)
	msgs = f.next(3) // receipt, the update to the reporter, bob's copy
	r := f.receipt(f.alice, msgs, "alice@ex.test")
	if strings.Contains(r, "refused") || strings.Contains(r, "replay") {
		t.Fatalf("the reply in its own incident was refused:\n%s", r)
	}
	if p := phase(id1); p != workflow.PhaseFix {
		t.Fatalf("the reply in its own incident: phase %s", p)
	}
	if !strings.Contains(f.h.Logs.String(), "require_binding") {
		t.Error("the refusals are not logged")
	}
}

// TestBindingLiveClients: with [commands] require_binding, real mutt and
// neomutt replies to the member's copy of a report (classic gpg and GPGME,
// PGP/MIME signed and encrypted, signed only in quoted-printable, inline
// clear-signed, format=flowed, above and below the quote) apply as before:
// the quote carries "Reply to security+ID@ex.test with signed commands."
// So does mutt's new signed and encrypted message to security@ with [ID]
// in its Subject: mutt writes To and Subject as protected header fields
// inside the signed part (RFC 9788 §2). Alice's mutt message to another
// project's embargo list, with the same incident ID, sent here by someone
// who read it, applies nothing, and the receipt says what the signed text
// must name (docs/threat-model.md E3).
func TestBindingLiveClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mail clients in a terminal")
	}
	w := newClientWorld(t, nil)
	w.h.Stop()
	w.h.TOML += "\n[commands]\nrequire_binding = true\n"
	w.h.Start()
	copyText, _ := w.alice.DecryptMIME(w.copy.Data)
	daemontest.MustContain(t, "the copy", daemontest.MIMEText(copyText), "Reply to security+"+w.id+"@ex.test with signed commands.")
	cases := []clientCase{{name: "mutt-classic-to-another-list-replayed", outcome: "refused",
		reason: "Your signed text does not name the list address security@ex.test.",
		build: func(w *clientWorld, t *testing.T) []byte {
			// Alice writes to another project's embargo list, with the
			// same incident ID there; whoever read it sends her message
			// here, to this list.
			c := muttClient{prog: "mutt", sign: true}
			r := setupMutt(t, w.alice, c, w.afpr, "/set credit replayed from another list\n")
			r.compose(t, c, "From: Alice <alice@ex.test>\nTo: security@other.test\nSubject: ["+w.id+"] commands\n\nAlice\n", `Mail sent|Message sent`)
			sent := daemontest.ReadFile(t, r.sent)
			if !strings.Contains(string(sent), "security@other.test") {
				t.Fatalf("mutt's message is not to the other list:\n%s", sent)
			}
			return sent
		}}}
	for _, c := range muttCases() {
		if !c.live && c.outcome == "applied" {
			cases = append(cases, c)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer w.h.On(t)()
			before := w.incident(t)
			if raw := c.build(w, t); raw != nil {
				if err := daemontest.SendSMTP(w.h.Addr(), "alice@ex.test", []string{"security@ex.test"}, []byte(daemontest.CRLF(string(raw)))); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if c.outcome == "applied" {
				w.check(t, c, before)
				return
			}
			msgs := w.next(t, 2) // the refusal to alice, bob's copy
			rs := w.receipts(t, msgs)
			if len(rs) != 1 || !strings.Contains(unwrapped(rs[0]), c.reason) {
				t.Fatalf("want one receipt refusing with %q, got:\n%s", c.reason, strings.Join(rs, "\n----\n"))
			}
			if inc := w.incident(t); inc.Advisory.Credit != before.Advisory.Credit {
				t.Fatalf("the incident changed: credit %q", inc.Advisory.Credit)
			}
		})
	}
}
