package listd

import (
	"bytes"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// bindWorld is encWorld with [commands] require_binding as given (and
// require_encryption off).
func bindWorld(t *testing.T, k *storeKeys, require bool, c encCase) (*Service, *bolt.DB) {
	t.Helper()
	s, db := storeService(t, k, func(o *Options) {
		o.RequireBinding = require
		o.Rotation = workflow.Rotation{Members: []string{"bob@ex.test"}}
	})
	handleMail(t, s, "rep@out.test", "security@ex.test", plainMail("rep@out.test", "security@ex.test", "heap overflow", "r1@out.test", "Steps to reproduce.\n"))
	if c.setup != nil {
		c.setup(t, k, s)
	}
	return s, db
}

// signedRaw is one PGP/MIME signature by signer over entity (a MIME entity
// with its own header, CRLF line ends), made a minute before mon.
func signedRaw(t *testing.T, signer *keys.Key, entity string) []byte {
	t.Helper()
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	ent, err := keys.Sign(mail.Header{}, []byte(strings.ReplaceAll(entity, "\n", "\r\n")), signer, sko)
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

// bindCase is what each entry point of encCases must name to be bound,
// and a text that names the wrong list or the wrong thread.
type bindCase struct {
	bind      string // the address whose mention binds: the list, or the thread's
	otherList string // the same, on another project's list
	other     string // another thread's address on this list ("" where the list alone is asked)
	missingID string // what the other thread's text lacks
}

var bindCases = []bindCase{
	{bind: "security+SEC-2026-0001@ex.test", otherList: "security+SEC-2026-0001@other.test", other: "security+SEC-2026-0002@ex.test", missingID: "SEC-2026-0001"},
	{bind: "security@ex.test", otherList: "security@other.test"},
	{bind: "security@ex.test", otherList: "security@other.test"},
	{bind: "security+GOV-2026-0001@ex.test", otherList: "security+GOV-2026-0001@other.test", other: "security+GOV-2026-0002@ex.test", missingID: "GOV-2026-0001"},
	{bind: "security@ex.test", otherList: "security@other.test"},
}

// TestCommandsRequireBinding: with [commands] require_binding, at every
// entry point (the incident thread, roster commands in an incident's thread
// and to the list alone, a proposal's thread, /oncall) a signed command
// whose signed text does not name this list and its thread applies
// nothing: a bare command, one naming another project's list, one naming
// another incident or proposal. The receipt says what the text lacked and
// how to name it, and the signature is not recorded (the same one, sent
// again, gets the same refusal, not "replay"). A text that names the
// thread's address applies; with the switch off, a bare command applies
// (docs/threat-model.md E3).
func TestCommandsRequireBinding(t *testing.T) {
	k := newStoreKeys(t)
	cases := encCases(t)
	if len(cases) != len(bindCases) {
		t.Fatalf("%d entry points, %d binding cases", len(cases), len(bindCases))
	}
	for i, c := range cases {
		b := bindCases[i]
		t.Run(c.name, func(t *testing.T) {
			s, db := bindWorld(t, k, true, c)
			first := strings.SplitN(c.text, "\n", 2)[0]
			refused := func(step, msgid string, ent []byte, lacks string) {
				t.Helper()
				n := len(aliceReceipts(t, s, db, k))
				handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, msgid, ent))
				if c.applied(t, db) {
					t.Fatalf("%s: applied", step)
				}
				rs := aliceReceipts(t, s, db, k)
				if len(rs) != n+1 {
					t.Fatalf("%s: %d new receipts to alice, want 1", step, len(rs)-n)
				}
				got := strings.Join(strings.Fields(rs[n]), " ")
				for _, want := range []string{
					"Nothing applied: this committee requires the text your signature covers to name this list's address (security@ex.test, or a security+TAG@ex.test form of it)",
					"([commands] require_binding)",
					"Your signed text does not name " + lacks + ".",
					"Or write " + b.bind + " anywhere in the signed text",
					"Your signature was not recorded as used",
					"> " + first + " not applied",
				} {
					if !strings.Contains(got, want) {
						t.Fatalf("%s: the receipt lacks %q:\n%s", step, want, rs[n])
					}
				}
				if strings.Contains(got, "replay") {
					t.Fatalf("%s: the refused signature was recorded as seen:\n%s", step, rs[n])
				}
			}
			lacksList := "the list address security@ex.test"
			if b.missingID != "" {
				lacksList = "the list address security@ex.test or " + b.missingID
			}
			bare := signedEntity(t, k.alice, c.text)
			refused("bare", "bare1@ex.test", bare, lacksList)
			refused("bare, again", "bare2@ex.test", bare, lacksList)
			// The other list's address names the ID, not this list.
			refused("another list", "other-list@ex.test", signedEntity(t, k.alice, "For "+b.otherList+"\n\n"+c.text), "the list address security@ex.test")
			if b.other != "" {
				refused("another thread", "other-thread@ex.test", signedEntity(t, k.alice, "For "+b.other+"\n\n"+c.text), b.missingID)
			}
			// Named in any case, with the reply line of embargo's mail quoted.
			bound := signedEntity(t, k.alice, "> Reply to "+strings.ToUpper(b.bind)+" with signed commands.\n\n"+c.text)
			handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "bound@ex.test", bound))
			if !c.applied(t, db) {
				t.Fatalf("bound: not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
		})
		t.Run(c.name+", require_binding off", func(t *testing.T) {
			s, db := bindWorld(t, k, false, c)
			handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "bare@ex.test", signedEntity(t, k.alice, c.text)))
			if !c.applied(t, db) {
				t.Fatalf("a bare command with require_binding off: not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
		})
	}
}

// TestBindingStopsReplayAcrossIncidents: a member's command signed for
// SEC-2026-0001 (a bare /accept, as sent to another project's list, or a
// reply quoting 0001's mail that has not come here yet) is sent by someone
// who read it to SEC-2026-0002: nothing applies there. Without the switch
// the bare one applies in 0002, which is the replay the switch stops (the
// replay cache never saw it). The quoting reply then applies in 0001.
func TestBindingStopsReplayAcrossIncidents(t *testing.T) {
	k := newStoreKeys(t)
	for _, require := range []bool{true, false} {
		t.Run(fmt.Sprintf("require_binding %t", require), func(t *testing.T) {
			s, db := bindWorld(t, k, require, encCases(t)[0])
			handleMail(t, s, "rep@out.test", "security@ex.test", plainMail("rep@out.test", "security@ex.test", "second bug", "r2@out.test", "Another one.\n"))
			to2 := "security+SEC-2026-0002@ex.test"
			bare := signedEntity(t, k.alice, "/accept\n/lead me\n")
			handleMail(t, s, "mallory@evil.test", to2, signedOnly(to2, "replay1@evil.test", bare))
			if got := getIncident(t, db, "SEC-2026-0002").Phase; (got != workflow.PhaseTriage) != !require {
				t.Fatalf("a bare signed /accept replayed into SEC-2026-0002: phase %s with require_binding %t", got, require)
			}
			if !require {
				return
			}
			for0001 := signedEntity(t, k.alice, "> Reply to security+SEC-2026-0001@ex.test with signed commands.\n\n/accept\n/lead me\n")
			handleMail(t, s, "mallory@evil.test", to2, signedOnly(to2, "replay2@evil.test", for0001))
			if got := getIncident(t, db, "SEC-2026-0002").Phase; got != workflow.PhaseTriage {
				t.Fatalf("a command bound to SEC-2026-0001 applied in SEC-2026-0002: phase %s", got)
			}
			rs := aliceReceipts(t, s, db, k)
			if len(rs) != 2 || !strings.Contains(strings.Join(strings.Fields(rs[1]), " "), "Your signed text does not name SEC-2026-0002.") {
				t.Fatalf("receipts to alice:\n%s", strings.Join(rs, "\n-----\n"))
			}
			to1 := "security+SEC-2026-0001@ex.test"
			handleMail(t, s, "alice@ex.test", to1, signedOnly(to1, "real@ex.test", for0001))
			if got := getIncident(t, db, "SEC-2026-0001").Phase; got != workflow.PhaseFix {
				t.Fatalf("the bound command in its own thread: phase %s", got)
			}
		})
	}
}

// TestProtectedHeadersBind: the To or Subject of the signed entity (RFC
// 9788 §2, as Thunderbird writes into signed mail) count as the signed
// text: a bare command under a protected To naming the incident's address
// binds; one naming another list's does not.
func TestProtectedHeadersBind(t *testing.T) {
	k := newStoreKeys(t)
	c := encCases(t)[0]
	const inner = "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\n\n/accept\n/lead me\n"
	for _, tc := range []struct {
		name, header string
		bound        bool
	}{
		{"protected To", "To: Security <security+SEC-2026-0001@ex.test>\nSubject: Re: heap overflow\n", true},
		{"protected To (list) and Subject (ID)", "To: security@ex.test\nSubject: Re: [SEC-2026-0001] heap overflow\n", true},
		{"protected Cc", "To: bob@ex.test\nCc: security+SEC-2026-0001@EX.TEST\n", true},
		{"another list", "To: security+SEC-2026-0001@other.test\nSubject: Re: [SEC-2026-0001] heap overflow\n", false},
		{"the ID only", "Subject: Re: [SEC-2026-0001] heap overflow\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, db := bindWorld(t, k, true, c)
			ent := signedRaw(t, k.alice, tc.header+inner)
			handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "ph@ex.test", ent))
			if c.applied(t, db) != tc.bound {
				t.Fatalf("applied %t, want %t; receipts:\n%s", c.applied(t, db), tc.bound, strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
		})
	}
}

// reportCopyText is alice's copy of the report, as her mail client shows it.
func reportCopyText(t *testing.T, s *Service, db *bolt.DB, k *storeKeys) string {
	t.Helper()
	for _, r := range sealRows(t, s, rowsOf(t, db, "report-copy")) {
		if r.To[0] == "alice@ex.test" {
			text := decryptText(t, r.Data, k.alice)
			_, body, _ := strings.Cut(text, "\n") // decryptText's Subject line
			return body
		}
	}
	t.Fatal("no report copy to alice")
	return ""
}

// quoteFlowed quotes text as a format=flowed client does (RFC 3676 §4.5):
// "> " before each line, a line longer than 72 columns broken at a space
// with the space kept at the end (a soft break) and the quote repeated.
func quoteFlowed(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		for len(l) > 70 {
			i := strings.LastIndex(l[:70], " ")
			if i <= 0 {
				break
			}
			b.WriteString("> " + l[:i+1] + "\n")
			l = l[i+1:]
		}
		b.WriteString(strings.TrimRight("> "+l, " ") + "\n")
	}
	return b.String()
}

func qp(t *testing.T, s string) string {
	t.Helper()
	var buf bytes.Buffer
	w := quotedprintable.NewWriter(&buf)
	if _, err := w.Write([]byte(strings.ReplaceAll(s, "\n", "\r\n"))); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return strings.ReplaceAll(buf.String(), "\r\n", "\n") // signedRaw makes the line ends CRLF
}

// TestQuotingReplyBinds: a member who answers embargo's mail as mail
// clients do binds the commands without doing anything: mutt's bottom-post
// (quoted-printable, whose soft breaks cut lines anywhere, even inside an
// address), Thunderbird's top-post (format=flowed, quoted-printable), and
// a reply to a receipt. The report copy names security+SEC-2026-0001@ in
// its body; the receipt does in its last line.
func TestQuotingReplyBinds(t *testing.T) {
	k := newStoreKeys(t)
	c := encCases(t)[0]
	s, db := bindWorld(t, k, true, c)
	report := reportCopyText(t, s, db, k)
	if !strings.Contains(report, "Reply to security+SEC-2026-0001@ex.test with signed commands.") {
		t.Fatalf("the report copy does not name the incident's address:\n%s", report)
	}
	// The same commands without the quote: not bound, not applied.
	handleMail(t, s, "alice@ex.test", "security@ex.test", replyTo(signedEntity(t, k.alice, "/accept\n/lead me\n"), "bare@ex.test"))
	if inc := getIncident(t, db, "SEC-2026-0001"); inc.Phase != workflow.PhaseTriage {
		t.Fatalf("a bare signed /accept: phase %s", inc.Phase)
	}
	// mutt: "> " quotes, the commands below; the long reply line made
	// longer than 76 columns so that quoted-printable breaks it.
	mutt := "On Mon, Nov 23, 2026 at 09:00:00AM +0000, ex.test Security Response wrote:\n" +
		strings.ReplaceAll("> "+strings.ReplaceAll(strings.TrimRight(report, "\n"), "\n", "\n> "), "> Reply to", "> Please, as the SRC agreed this morning: Reply to") +
		"\n\n/accept\n/lead me\n\n-- \nAlice\n"
	body := qp(t, mutt)
	if !strings.Contains(body, "=\n") {
		t.Fatalf("no quoted-printable soft break in the mutt reply:\n%s", body)
	}
	ent := signedRaw(t, k.alice, "Content-Type: text/plain; charset=us-ascii\nContent-Disposition: inline\nContent-Transfer-Encoding: quoted-printable\n\n"+body)
	handleMail(t, s, "alice@ex.test", "security@ex.test", replyTo(ent, "mutt@ex.test"))
	if inc := getIncident(t, db, "SEC-2026-0001"); inc.Phase != workflow.PhaseFix {
		t.Fatalf("mutt's reply: phase %s; receipts:\n%s", inc.Phase, strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
	}

	// Thunderbird: the commands above the quote, format=flowed.
	tb := "/status\n\nOn 23/11/2026 09:00, ex.test Security Response wrote:\n" + quoteFlowed(report)
	if !strings.Contains(tb, "> \n") && !strings.Contains(tb, " \n> ") {
		t.Fatalf("no flowed soft break in the Thunderbird reply:\n%s", tb)
	}
	ent = signedRaw(t, k.alice, "Content-Type: text/plain; charset=UTF-8; format=flowed\nContent-Transfer-Encoding: quoted-printable\n\n"+qp(t, tb))
	handleMail(t, s, "alice@ex.test", "security@ex.test", replyTo(ent, "tb@ex.test"))
	if n := len(rowsOf(t, db, "status")); n != 1 {
		t.Fatalf("Thunderbird's reply: %d status answers, want 1; receipts:\n%s", n, strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
	}

	// A reply to the receipt: its last line names the incident's address.
	rs := aliceReceipts(t, s, db, k)[1:] // after the bare one's refusal
	if len(rs) == 0 || !strings.HasSuffix(rs[0], "Reply to security+SEC-2026-0001@ex.test with signed commands.\n") {
		t.Fatalf("the receipt does not end with the reply line:\n%s", strings.Join(rs, "\n-----\n"))
	}
	_, receipt, _ := strings.Cut(rs[0], "\n")
	ent = signedRaw(t, k.alice, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"+qp(t, "/severity high\n\n"+quoteFlowed(receipt)))
	handleMail(t, s, "alice@ex.test", "security@ex.test", replyTo(ent, "rc@ex.test"))
	if inc := getIncident(t, db, "SEC-2026-0001"); inc.Severity() != workflow.SeverityHigh {
		t.Fatalf("a reply to the receipt: severity %q; receipts:\n%s", inc.Severity(), strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
	}
}

// replyTo is ent from alice to the plain list address, threaded under
// SEC-2026-0001 by its Subject tag, as a reply to the report copy goes.
func replyTo(ent []byte, msgid string) []byte {
	return append([]byte(fmt.Sprintf("From: alice@ex.test\r\nTo: security@ex.test\r\nSubject: Re: [SEC-2026-0001] heap overflow\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n", msgid)), ent...)
}

// TestNamesList: the list address counts as a whole address, in any case,
// with any +detail, and not inside a longer local part or domain.
func TestNamesList(t *testing.T) {
	for text, want := range map[string]bool{
		"security@ex.test":                          true,
		"<SECURITY@EX.TEST>":                        true,
		"mailto:security+SEC-2026-0001@ex.test.":    true,
		"(security+GOV-2026-0001@ex.test)":          true,
		"xsecurity@ex.test":                         false,
		"my.security@ex.test":                       false,
		"security@ex.test.evil.example":             false,
		"security@ex.testing":                       false,
		"security+@ex.test":                         false,
		"security@other.test, list@ex.test":         false,
		"security-owner@ex.test":                    false,
		"write to security @ ex.test":               false,
		"a@ex.test and then security+x@ex.test end": true,
	} {
		if got := namesList(text, "security@ex.test"); got != want {
			t.Errorf("namesList(%q) = %t, want %t", text, got, want)
		}
	}
}

// TestRequireBindingReloads: [commands] require_binding is a setting a
// reload (SIGHUP) puts in force for the next message, both ways.
func TestRequireBindingReloads(t *testing.T) {
	k := newStoreKeys(t)
	c := encCases(t)[0] // the incident thread
	s, db := bindWorld(t, k, false, c)
	reload := func(on bool) {
		t.Helper()
		set := s.settings()
		set.RequireBinding = on
		if err := s.Reload(set); err != nil {
			t.Fatal(err)
		}
	}
	reload(true)
	ent := signedEntity(t, k.alice, c.text)
	handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "bare1@ex.test", ent))
	if c.applied(t, db) {
		t.Fatal("require_binding turned on by a reload: a bare command was applied")
	}
	reload(false)
	handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "bare2@ex.test", ent))
	if !c.applied(t, db) {
		t.Fatalf("require_binding turned off by a reload: the same bare command was not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
	}
}
