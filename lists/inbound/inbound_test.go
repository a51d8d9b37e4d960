package inbound

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// fixture is one gpg home with a member key, a stranger's key and the list
// key, shared by the layout tests.
type fixture struct {
	g                *gpg
	alice, stranger  string // fingerprints
	list             *keys.Key
	members          *keys.Keyring
	aliceKeyAttached string // Thunderbird attaches the sender's key
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	g := newGPG(t)
	f := &fixture{g: g}
	f.alice = g.edKey("Alice <alice@src.test>")
	f.stranger = g.edKey("Mallory <mallory@evil.test>")
	list, err := keys.GenerateListKey("Security", "security@example.org", keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.run(pub, "--import")
	f.list = list
	f.members = keys.NewKeyring(g.public(f.alice))
	f.aliceKeyAttached = string(g.output(nil, "--armor", "--export", f.alice))
	return f
}

func (f *fixture) open(t *testing.T, raw []byte) *Message {
	t.Helper()
	m, err := Open(raw, Options{ListKey: f.list, Members: f.members})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return m
}

// outer is the outer header of a reply in an incident's thread.
func outer(subject string) []string {
	return []string{
		"From: Alice <alice@src.test>",
		"To: security+SEC-2026-0001@example.org",
		"Subject: " + subject,
		"Date: Mon, 02 Mar 2026 09:00:00 +0000",
		"Message-ID: <reply-1@src.test>",
		"In-Reply-To: <root-1@example.org>",
		"References: <root-1@example.org>",
	}
}

// Thunderbird 115 writes format=flowed text, wraps at 72 columns with a
// trailing space, quotes with ">" (">>" nested), and attaches the sender's
// key; a signed message's first part carries protected headers.
const tbAboveQuote = "/set mitigation <<END\n" +
	"Disable the parser until you upgrade to the fixed release, which we \n" +
	"expect to publish next week together with the advisory.\n" +
	"END\n" +
	"/severity high\n" +
	"\n" +
	"On 01/03/2026 10:00, Bob wrote:\n" +
	"> The parser crashes on crafted input; we should disable it until the \n" +
	"> fix lands.\n" +
	"> /disclose now\n" +
	"\n" +
	"-- \n" +
	"Alice\n"

const tbMitigation = "Disable the parser until you upgrade to the fixed release, which we expect to publish next week together with the advisory."

const tbBelowQuote = "On 01/03/2026 10:00, Bob wrote:\n" +
	"> Who takes this one? The reporter has been waiting since Friday and \n" +
	"> asks for an answer.\n" +
	">> /disclose now\n" +
	"\n" +
	"/accept\n" +
	"/lead me\n" +
	"\n" +
	"I will look at it today; the fix looks small and I can have a patch \n" +
	"ready by tomorrow.\n" +
	"\n" +
	"-- \n" +
	"Alice\n"

// tbPart is Thunderbird 115's first part: multipart/mixed with protected
// headers, the flowed text (base64, as Thunderbird encodes signed text) and
// the sender's public key.
func (f *fixture) tbPart(text, subject string) string {
	return ent(multipart("------------tb115text",
		"",
		ent(b64(crlf(text)), "Content-Type: text/plain; charset=UTF-8; format=flowed", "Content-Transfer-Encoding: base64"),
		ent(f.aliceKeyAttached, `Content-Type: application/pgp-keys; name="OpenPGP_0xALICE.asc"`,
			`Content-Disposition: attachment; filename="OpenPGP_0xALICE.asc"`, "Content-Description: OpenPGP public key")),
		`Content-Type: multipart/mixed; boundary="------------tb115text";`+"\n"+` protected-headers="v1"`,
		"From: Alice <alice@src.test>", "To: security+SEC-2026-0001@example.org", "Message-ID: <reply-1@src.test>",
		"Subject: "+subject)
}

func (f *fixture) tbSigned(text string) []byte {
	part := f.tbPart(text, "Re: [SEC-2026-0001] Heap overflow in the parser")
	return mail(f.g.signPGPMIME(f.alice, "------------tb115sig", "pgp-sha256", part,
		`Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"`, "Content-Description: OpenPGP digital signature",
		`Content-Disposition: attachment; filename="OpenPGP_signature.asc"`), outer("Re: [SEC-2026-0001] Heap overflow in the parser")...)
}

// layout is a message as one mail client sends it, and what opening it must
// find.
type layout struct {
	name      string
	raw       []byte
	encrypted bool
	subject   string
	commands  string // workflow.Format of the commands
	text      string // a line the decoded text must contain
	attach    int    // attachments of the content
}

// layouts lays out messages as Thunderbird 115, mutt, K-9 Mail with
// OpenKeychain and Apple Mail send them, signed (and encrypted) by gpg.
func (f *fixture) layouts() []layout {
	g := f.g
	clear := func(text string) []byte { return g.output([]byte(text), "--local-user", f.alice, "--clearsign") }
	muttText := "* Bob <bob@src.test> [2026-03-01 10:00]:\n" +
		"> Can someone take the lead? Grüße, Bob\n" +
		"\n" +
		"/accept\n" +
		"/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n" +
		"\n" +
		"-- \n" +
		"Alice\n"
	k9Text := "/accept\n/set credit Jürgen Müller\n\nSent from my phone\n"
	appleText := "/accept\n\n> On 1 Mar 2026, at 10:00, Bob <bob@src.test> wrote:\n> \n> Please take it.\n"
	appleHTML := "<html><body><div>/accept</div><blockquote>Please take it.</blockquote></body></html>"
	tbEncInner := f.tbPart(tbAboveQuote, "Re: [SEC-2026-0001] Heap overflow in the parser")

	return []layout{
		{
			name:     "Thunderbird 115 PGP/MIME signed, reply above the quote",
			raw:      f.tbSigned(tbAboveQuote),
			subject:  "Re: [SEC-2026-0001] Heap overflow in the parser",
			commands: "/set mitigation " + tbMitigation + "\n/severity high\n",
			text:     "> The parser crashes on crafted input; we should disable it until the fix lands.\n",
			attach:   1,
		},
		{
			name:     "Thunderbird 115 PGP/MIME signed, reply below the quote",
			raw:      f.tbSigned(tbBelowQuote),
			subject:  "Re: [SEC-2026-0001] Heap overflow in the parser",
			commands: "/accept\n/lead me\n",
			text:     "I will look at it today; the fix looks small and I can have a patch ready by tomorrow.\n",
			attach:   1,
		},
		{
			name:      "Thunderbird 115 PGP/MIME signed and encrypted, protected subject",
			raw:       mail(g.encryptPGPMIME(f.list.Fingerprint(), f.alice, "------------tb115enc", tbEncInner), outer("...")...),
			encrypted: true,
			subject:   "Re: [SEC-2026-0001] Heap overflow in the parser",
			commands:  "/set mitigation " + tbMitigation + "\n/severity high\n",
			text:      "On 01/03/2026 10:00, Bob wrote:\n",
			attach:    1,
		},
		{
			name: "mutt PGP/MIME signed, quoted-printable, reply below the quote",
			raw: mail(g.signPGPMIME(f.alice, "muttsig", "pgp-sha512",
				ent(qp(muttText), "Content-Type: text/plain; charset=utf-8", "Content-Disposition: inline", "Content-Transfer-Encoding: quoted-printable")),
				outer("Re: [SEC-2026-0001] x")...),
			subject:  "Re: [SEC-2026-0001] x",
			commands: "/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n",
			text:     "> Can someone take the lead? Grüße, Bob\n",
		},
		{
			name: "mutt PGP/MIME signed then encrypted (RFC 3156 6.1)",
			raw: mail(g.encryptPGPMIME(f.list.Fingerprint(), "", "muttenc",
				g.signPGPMIME(f.alice, "muttsig", "pgp-sha256", ent(qp(muttText), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"))),
				outer("Re: [SEC-2026-0001] x")...),
			encrypted: true,
			subject:   "Re: [SEC-2026-0001] x",
			commands:  "/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n",
			text:      "Alice\n",
		},
		{
			name:     "mutt classic inline (clear-signed, 7bit)",
			raw:      mail(ent(string(clear("/accept\n/lead me\n\n> quoted\n")), "Content-Type: text/plain; charset=us-ascii; x-action=pgp-signed", "Content-Transfer-Encoding: 7bit"), outer("Re: x")...),
			subject:  "Re: x",
			commands: "/accept\n/lead me\n",
			text:     "> quoted",
		},
		{
			name:     "K-9 Mail inline, quoted-printable",
			raw:      mail(ent(qp(string(clear(k9Text))), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"), outer("Re: x")...),
			subject:  "Re: x",
			commands: "/accept\n/set credit Jürgen Müller\n",
			text:     "Sent from my phone",
		},
		{
			name:     "K-9 Mail inline, 8bit",
			raw:      mail(ent(string(clear(k9Text)), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"), outer("Re: x")...),
			subject:  "Re: x",
			commands: "/accept\n/set credit Jürgen Müller\n",
			text:     "Sent from my phone",
		},
		{
			name:     "K-9 Mail inline, base64",
			raw:      mail(ent(b64(string(clear(k9Text))), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"), outer("Re: x")...),
			subject:  "Re: x",
			commands: "/accept\n/set credit Jürgen Müller\n",
			text:     "Sent from my phone",
		},
		{
			name: "K-9 Mail inline signed and encrypted, quoted-printable",
			raw: mail(ent(qp(string(g.output([]byte(k9Text), "--armor", "--recipient", f.list.Fingerprint(), "--local-user", f.alice, "--sign", "--encrypt"))),
				"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"), outer("Re: x")...),
			encrypted: true,
			subject:   "Re: x",
			commands:  "/accept\n/set credit Jürgen Müller\n",
			text:      "Sent from my phone",
		},
		{
			name: "Apple Mail PGP/MIME signed, text and HTML alternatives",
			raw: mail(g.signPGPMIME(f.alice, "Apple-Mail=_2F4D", "pgp-sha512",
				ent(multipart("Apple-Mail=_9A1B", "",
					ent(qp(appleText), "Content-Transfer-Encoding: quoted-printable", "Content-Type: text/plain; charset=utf-8"),
					ent(qp(appleHTML), "Content-Transfer-Encoding: quoted-printable", "Content-Type: text/html; charset=utf-8")),
					`Content-Type: multipart/alternative; boundary="Apple-Mail=_9A1B"`),
				"Content-Transfer-Encoding: 7bit", "Content-Disposition: attachment; filename=signature.asc",
				"Content-Type: application/pgp-signature; name=signature.asc", "Content-Description: Message signed with OpenPGP"),
				outer("Re: [SEC-2026-0001] x")...),
			subject:  "Re: [SEC-2026-0001] x",
			commands: "/accept\n",
			text:     "> Please take it.\n",
		},
	}
}

// TestClientLayouts: each client's layout is opened once into the signer,
// the decoded text of what was signed, and its commands.
func TestClientLayouts(t *testing.T) {
	f := newFixture(t)
	for _, tc := range f.layouts() {
		t.Run(tc.name, func(t *testing.T) {
			m := f.open(t, tc.raw)
			v := m.Signature()
			if !v.OK() || v.Fingerprint != f.alice || v.Signed.IsZero() {
				t.Fatalf("signature %v (%v) by %s", v.Status, v.Err, v.Fingerprint)
			}
			if m.Encrypted() != tc.encrypted {
				t.Errorf("Encrypted = %v, want %v (%v)", m.Encrypted(), tc.encrypted, m.Protection().NotDecrypted())
			}
			if _, ok := m.Protection().CiphertextHash(); ok != tc.encrypted {
				t.Errorf("CiphertextHash set = %v", ok)
			}
			if m.Subject() != tc.subject || m.From() != "alice@src.test" || m.MessageID() != "reply-1@src.test" || len(m.Refs()) != 2 {
				t.Errorf("Subject %q From %q Message-ID %q Refs %v", m.Subject(), m.From(), m.MessageID(), m.Refs())
			}
			if !strings.Contains(m.Text(), tc.text) {
				t.Errorf("Text = %q, want it to contain %q", m.Text(), tc.text)
			}
			if len(m.Attachments()) != tc.attach {
				t.Errorf("%d attachments, want %d", len(m.Attachments()), tc.attach)
			}
			cmds, ok, why := m.SignedCommands()
			if !ok || why != nil || !m.HasCommands() {
				t.Fatalf("SignedCommands: ok %v, %v", ok, why)
			}
			if got := workflow.Format(cmds); got != tc.commands {
				t.Errorf("commands = %q, want %q", got, tc.commands)
			}
			// The text is the text of exactly the signed entity.
			signedText, err := message.Parse(v.Entity(), message.Limits{})
			if err != nil || signedText.Text != m.Text() {
				t.Errorf("Text is not the signed entity's: %v\n%q\n%q", err, signedText.Text, m.Text())
			}
			if !tc.encrypted && !bytes.Contains(tc.raw, v.SignedBytes()) && !strings.Contains(string(v.SignedBytes()), "/accept") {
				t.Errorf("signed bytes %q are neither part 1 nor the clear-signed text", v.SignedBytes())
			}
		})
	}
}

// TestFailures: every reason a message's commands do not count is told
// apart in the value (or, for a refused message, in the error), so that the
// receipt can say why.
func TestFailures(t *testing.T) {
	f := newFixture(t)
	g := f.g
	plainCommands := mail(ent("/accept\n/lead me\n", "Content-Type: text/plain; charset=utf-8"), outer("Re: x")...)
	signedByStranger := mail(g.signPGPMIME(f.stranger, "sb", "pgp-sha256", ent("/disclose now\n", "Content-Type: text/plain")), outer("Re: x")...)
	signed := g.signPGPMIME(f.alice, "sb", "pgp-sha256", ent("/accept\n", "Content-Type: text/plain"))
	// A mailing list appends its footer beside the signed part.
	footer := mail(ent(multipart("list", "", signed, ent("/disclose now\n--\nlist footer\n", "Content-Type: text/plain")),
		`Content-Type: multipart/mixed; boundary="list"`), outer("Re: x")...)
	twoBlocks := f.tbSigned("/accept\n\nOn Monday, Bob wrote:\n> take it\n\n/lead me\n")
	sha1 := mail(g.signPGPMIME(f.alice, "sb", "pgp-sha1", ent("/accept\n", "Content-Type: text/plain")), outer("Re: x")...)

	cases := []struct {
		name      string
		raw       []byte
		status    keys.SigStatus
		sentinel  error // in the verdict (or the command error)
		commandOK bool  // the signature counts, the command block does not
	}{
		{"unsigned commands", plainCommands, keys.SigNone, keys.ErrNotSigned, false},
		{"signed by an unpinned key", signedByStranger, keys.SigUnknownKey, keys.ErrUnknownSigner, false},
		{"list footer beside the signed part", footer, keys.SigPartial, keys.ErrPartiallySigned, false},
		{"SHA-1 signature", sha1, keys.SigWeakHash, keys.ErrWeakHash, false},
		{"two command blocks", twoBlocks, keys.SigGood, workflow.ErrCommandBlocks, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := f.open(t, tc.raw)
			v := m.Signature()
			if v.Status != tc.status {
				t.Fatalf("verdict %v (%v), want %v", v.Status, v.Err, tc.status)
			}
			cmds, ok, why := m.SignedCommands()
			if ok || cmds != nil || !errors.Is(why, tc.sentinel) || !m.HasCommands() {
				t.Fatalf("SignedCommands = %v, %v, %v; want refused with %v", cmds, ok, why, tc.sentinel)
			}
			if tc.commandOK {
				var ce *workflow.CommandError
				if !errors.As(why, &ce) || ce.Line != 6 {
					t.Errorf("command error %v, want one that names line 6", why)
				}
				return
			}
			if !errors.Is(v.Err, tc.sentinel) || v.Fingerprint != "" || v.SignedBytes() != nil {
				t.Errorf("verdict error %v, fingerprint %q", v.Err, v.Fingerprint)
			}
			// The text is the whole message's, for the "not signed" answer;
			// its commands never count.
			if !strings.Contains(m.Text(), "/") {
				t.Errorf("Text = %q", m.Text())
			}
		})
	}

	t.Run("tampered ciphertext is refused", func(t *testing.T) {
		ct := g.output([]byte("/accept\n"), "--recipient", f.list.Fingerprint(), "--local-user", f.alice, "--sign", "--encrypt")
		ct[len(ct)-5] ^= 0x01 // inside the encrypted data packet, near the MDC
		var armored bytes.Buffer
		w, _ := armor.Encode(&armored, "PGP MESSAGE", nil)
		w.Write(ct)
		w.Close()
		raw := mail(ent(armored.String(), "Content-Type: text/plain"), outer("...")...)
		m, err := Open(raw, Options{ListKey: f.list, Members: f.members})
		if !errors.Is(err, keys.ErrTampered) {
			t.Fatalf("Open = %v, want ErrTampered", err)
		}
		// The header facts alone come back, to name the sender of what is
		// refused; nothing of the content.
		if m == nil || m.From() != "alice@src.test" || m.MessageID() != "reply-1@src.test" || m.Text() != "" ||
			m.Encrypted() || m.Signature().OK() || m.HasCommands() || len(m.Attachments()) != 0 {
			t.Fatalf("Message beside the error: %+v", m)
		}
		if to, _ := m.Outer().Header.AddressList("To"); len(to) != 1 || to[0].Address != "security+SEC-2026-0001@example.org" {
			t.Errorf("To = %v", to)
		}
	})
	t.Run("encrypted to another key is refused", func(t *testing.T) {
		raw := mail(g.encryptPGPMIME(f.stranger, "", "enc", ent("/accept\n", "Content-Type: text/plain")), outer("...")...)
		if _, err := Open(raw, Options{ListKey: f.list, Members: f.members}); !errors.Is(err, keys.ErrWrongKey) {
			t.Fatalf("Open = %v, want ErrWrongKey", err)
		}
	})
	t.Run("8-bit header without SMTPUTF8 is refused", func(t *testing.T) {
		raw := mail(ent("hi\n", "Content-Type: text/plain"), "From: Jürgen <j@src.test>", "Subject: x")
		var me *lists.Refusal
		if m, err := Open(raw, Options{ListKey: f.list, Members: f.members}); !errors.As(err, &me) || me.Code != 554 || m != nil {
			t.Fatalf("Open = %v, %v; want no Message and a 554 *lists.Refusal", m, err)
		}
	})
	t.Run("EFAIL: ciphertext beside html is read as plaintext, never decrypted", func(t *testing.T) {
		enc := g.encryptPGPMIME(f.list.Fingerprint(), "", "enc", ent("secret\n", "Content-Type: text/plain"))
		raw := mail(ent(multipart("efail", "", ent(`<img src="http://evil.test/`, "Content-Type: text/html"), enc, ent(`">`, "Content-Type: text/html")),
			`Content-Type: multipart/mixed; boundary="efail"`), outer("x")...)
		m := f.open(t, raw)
		if m.Encrypted() || !errors.Is(m.Protection().NotDecrypted(), keys.ErrPartiallyEncrypted) || strings.Contains(m.Text(), "secret") {
			t.Fatalf("encrypted %v, not decrypted %v, text %q", m.Encrypted(), m.Protection().NotDecrypted(), m.Text())
		}
	})
	t.Run("no list key: wholly encrypted mail is not decrypted", func(t *testing.T) {
		raw := mail(g.encryptPGPMIME(f.list.Fingerprint(), f.alice, "enc", ent("/accept\n", "Content-Type: text/plain")), outer("...")...)
		m, err := Open(raw, Options{Members: f.members})
		if err != nil || m.Encrypted() || !errors.Is(m.Protection().NotDecrypted(), keys.ErrNoSecretKey) || m.HasCommands() {
			t.Fatalf("Open = %v; encrypted %v, not decrypted %v, commands %v", err, m.Encrypted(), m.Protection().NotDecrypted(), m.HasCommands())
		}
	})
}

// TestImmutable: what the accessors return can be changed without changing
// the Message.
func TestImmutable(t *testing.T) {
	f := newFixture(t)
	m := f.open(t, f.tbSigned(tbBelowQuote))
	refs := m.Refs()
	refs[0] = "changed"
	cmds, _ := m.Commands()
	cmds[1].Args[0] = "changed"
	cmds[0].Name = "changed"
	atts := m.Attachments()
	atts[0].Name = "changed"
	o := m.Outer()
	o.Subject, o.Text = "changed", "changed"
	o.Header.Set("Subject", "changed")
	mg := m.Merged()
	mg.Text = "changed"

	if m.Refs()[0] == "changed" || m.Attachments()[0].Name == "changed" || m.Subject() == "changed" || strings.Contains(m.Text(), "changed") {
		t.Error("an accessor's result shares state with the Message")
	}
	if again, _ := m.Commands(); again[0].Name != "accept" || again[1].Args[0] != "me" {
		t.Errorf("Commands changed: %v", again)
	}
	if m.Outer().Header.Get("Subject") == "changed" || m.Outer().Text != "" {
		t.Error("Outer shares its header or carries text")
	}
	if got := m.Merged(); got.Text != m.Text() || got.Subject != m.Subject() || got.From != m.From() || len(got.Attachments) != 1 {
		t.Errorf("Merged = %+v", got)
	}
}

// TestSignedHeader: the To, Cc and Subject of the entity a good signature
// covers are exposed (RFC 9788 §2 protected header fields, as Thunderbird
// writes them, signed or signed and encrypted); none from an entity
// without them, none when the signature does not count, and never the
// outer header's.
func TestSignedHeader(t *testing.T) {
	f := newFixture(t)
	g := f.g
	subject := "Re: [SEC-2026-0001] Heap overflow in the parser"
	part := f.tbPart(tbBelowQuote, subject)
	for _, tc := range []struct {
		name string
		raw  []byte
		want []string
	}{
		{"Thunderbird signed", f.tbSigned(tbBelowQuote), []string{"security+SEC-2026-0001@example.org", subject}},
		{"Thunderbird signed and encrypted", mail(g.encryptPGPMIME(f.list.Fingerprint(), f.alice, "enc", part), outer("...")...),
			[]string{"security+SEC-2026-0001@example.org", subject}},
		{"signed, no protected header", mail(g.signPGPMIME(f.alice, "s", "pgp-sha256", ent("/accept\n", "Content-Type: text/plain")), outer("Re: [SEC-2026-0001] x")...), nil},
		{"signed by a stranger", mail(g.signPGPMIME(f.stranger, "s", "pgp-sha256", part), outer(subject)...), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := f.open(t, tc.raw).SignedHeader()
			if len(got) != len(tc.want) {
				t.Fatalf("SignedHeader = %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Fatalf("SignedHeader = %q, want %q", got, tc.want)
				}
			}
		})
	}
}
