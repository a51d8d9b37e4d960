package keys

import (
	"bytes"
	"encoding/base64"
	"errors"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// inlineMessage is a text/plain message as K-9 Mail (with OpenKeychain)
// sends inline PGP: body in the given charset and transfer encoding.
func inlineMessage(t testing.TB, body []byte, charset, cte string) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("From: Member <m@src.test>\r\nTo: security@example.org\r\nSubject: inline\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=" + charset + "\r\nContent-Transfer-Encoding: " + cte + "\r\n\r\n")
	body = toCRLF(body)
	switch cte {
	case "quoted-printable":
		w := quotedprintable.NewWriter(&b)
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		w.Close()
	case "base64":
		enc := base64.StdEncoding.EncodeToString(body)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	default:
		b.Write(body)
	}
	return b.Bytes()
}

// latin1 re-encodes UTF-8 text as ISO-8859-1, as a client that transcodes
// the message after signing does.
func latin1(t testing.TB, s []byte) []byte {
	t.Helper()
	var out []byte
	for _, r := range string(s) {
		if r > 0xff {
			t.Fatalf("%q has no ISO-8859-1 form", r)
		}
		out = append(out, byte(r))
	}
	return out
}

// TestOpenInlineEncodings: a clear-signed body is found and verified after
// its transfer encoding and, where needed, its charset are undone (K-9 Mail
// sends inline PGP in quoted-printable, 8bit and base64).
func TestOpenInlineEncodings(t *testing.T) {
	g := newGPG(t)
	member := g.edKey("Member <m@src.test>", "1y")
	trusted := NewKeyring(g.publicKey(member))
	text := []byte("/accept\n/set credit Jürgen Müller =) \n\nGrüße\n")
	signed := g.output(text, "--local-user", member, "--clearsign")
	wantSigned := "/accept\r\n/set credit Jürgen Müller =)\r\n\r\nGrüße"

	cases := []struct {
		name, charset, cte string
		body               []byte
		wantCharset        string
	}{
		{"quoted-printable", "utf-8", "quoted-printable", signed, "utf-8"},
		{"8bit", "utf-8", "8bit", signed, "utf-8"},
		{"base64", "UTF-8", "base64", signed, "UTF-8"},
		{"base64 LF", "utf-8", "base64", bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), "utf-8"},
		{"transcoded to ISO-8859-1 after signing", "iso-8859-1", "quoted-printable", latin1(t, signed), "utf-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := inlineMessage(t, tc.body, tc.charset, tc.cte)
			if bytes.Contains(msg, markClearsign) && tc.cte == "base64" {
				t.Fatal("setup: the armor is visible in the raw base64 message")
			}
			m, err := Open(msg, detKeys(t).list, trusted, Options{})
			if err != nil {
				t.Fatal(err)
			}
			v := m.Signature()
			if !v.OK() || v.Fingerprint != member || string(v.SignedBytes()) != wantSigned {
				t.Fatalf("verdict %v (%v) by %s over %q", v.Status, v.Err, v.Fingerprint, v.SignedBytes())
			}
			e, err := parseEntity(m.Content())
			if err != nil || e.params["charset"] != tc.wantCharset || !bytes.Equal(e.body, v.SignedBytes()) {
				t.Errorf("Content = %q (%v), want a text/plain entity in %s around the signed text", m.Content(), err, tc.wantCharset)
			}
		})
	}

	// Signed as ISO-8859-1 bytes: verifies as sent, and keeps its charset.
	l1 := g.output(latin1(t, text), "--local-user", member, "--clearsign")
	m, err := Open(inlineMessage(t, l1, "iso-8859-1", "quoted-printable"), nil, trusted, Options{})
	if err != nil || !m.Signature().OK() {
		t.Fatalf("ISO-8859-1 signed text: %v, %v", err, m.Signature().Err)
	}
	if e, _ := parseEntity(m.Content()); e == nil || e.params["charset"] != "iso-8859-1" {
		t.Errorf("Content = %q, want charset iso-8859-1", m.Content())
	}

	// The UTF-8 form is tried only for what the signature covers: a text
	// changed after signing stays bad.
	bad := bytes.Replace(latin1(t, signed), []byte("accept"), []byte("reject"), 1)
	m, err = Open(inlineMessage(t, bad, "iso-8859-1", "8bit"), nil, trusted, Options{})
	if err != nil || m.Signature().Status != SigBad || !errors.Is(m.Signature().Err, ErrBadSignature) {
		t.Errorf("altered transcoded text: %v, verdict %v (%v)", err, m.Signature().Status, m.Signature().Err)
	}
}

// TestOpenOnce: Open parses every MIME entity of a message once, however
// many checks read it: the top level, the parts of multipart/encrypted and
// multipart/signed, the decrypted entity, and every part an EFAIL scan
// visits. (Before Open, one signed and encrypted reply was parsed nine
// times, the top level three times.)
func TestOpenOnce(t *testing.T) {
	g := newGPG(t)
	member := g.edKey("Member <m@src.test>", "1y")
	trusted := NewKeyring(g.publicKey(member))
	list := detKeys(t).list
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)
	enc := func(data []byte, extra ...string) []byte {
		return g.output(data, append([]string{"--armor", "--recipient", list.Fingerprint()}, append(extra, "--encrypt")...)...)
	}
	inner := []byte(innerText)
	signed := signedMIME(inner, g.detachSign(inner, member), "sb")
	goodEnc := encryptedMIME(enc(inner), "eb")
	html := func(s string) []byte { return []byte("Content-Type: text/html\r\n\r\n" + s) }

	cases := []struct {
		name     string
		msg      []byte
		entities int
		status   SigStatus
	}{
		{"plain", plainMessage([]byte("hello\n")), 1, SigNone},
		{"PGP/MIME signed", signed, 3, SigGood},
		{"PGP/MIME signed and encrypted in one step (RFC 3156 6.2)", encryptedMIME(enc(inner, "--sign", "--local-user", member), "eb"), 4, SigGood},
		{"PGP/MIME signed, then encrypted (RFC 3156 6.1)", encryptedMIME(enc(asEntity(t, signed)), "eb"), 6, SigGood},
		{"EFAIL: html, ciphertext, html", mixed("mixed", "efail", html("<img src=\""), asEntity(t, goodEnc), html("\">")), 6, SigNone},
		{"Johnny: unsigned text, then signed part", mixed("mixed", "j1", []byte("Content-Type: text/plain\r\n\r\nfired\r\n"), asEntity(t, signed)), 5, SigPartial},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Open(tc.msg, list, trusted, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if m.Signature().Status != tc.status {
				t.Errorf("verdict %v (%v), want %v", m.Signature().Status, m.Signature().Err, tc.status)
			}
			if m.entities != tc.entities {
				t.Errorf("parsed %d entities, want %d: each once", m.entities, tc.entities)
			}
		})
	}
}

// TestOpenWithoutListKey: with no list key, a wholly encrypted message is
// read as it is, not decrypted, and says so.
func TestOpenWithoutListKey(t *testing.T) {
	k := detKeys(t)
	msg, err := Encrypt(testOuter(t, "x"), []byte(innerText), k.list, k.member, fixedOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(msg, nil, NewKeyring(k.member), Options{Now: fixedOpts(1).Now})
	if err != nil {
		t.Fatal(err)
	}
	if m.Encrypted() || m.Inner() != nil || !errors.Is(m.NotDecrypted(), ErrNoSecretKey) || m.Signature().Status != SigNone {
		t.Errorf("encrypted %v, not decrypted %v, verdict %v", m.Encrypted(), m.NotDecrypted(), m.Signature().Status)
	}
	if _, ok := m.CiphertextHash(); ok {
		t.Error("CiphertextHash set for a message not decrypted")
	}
	// With the key it decrypts, and the signature inside counts.
	m, err = Open(msg, k.list, NewKeyring(k.member), Options{Now: fixedOpts(1).Now})
	if err != nil || !m.Encrypted() || !m.Signature().OK() || m.Signature().Fingerprint != k.member.Fingerprint() {
		t.Fatalf("Open with the list key: %v, verdict %v (%v)", err, m.Signature().Status, m.Signature().Err)
	}
	// A list key without its secret half is a refusal, not plaintext.
	pub, _ := k.list.ArmoredPublic()
	pubOnly, err := ReadPublicKeys(bytes.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(msg, pubOnly[0], NewKeyring(k.member), Options{}); !errors.Is(err, ErrNoSecretKey) {
		t.Errorf("Open with a public list key = %v, want ErrNoSecretKey", err)
	}
	// Plain mail does not need the secret key at all.
	if _, err := Open(plainMessage([]byte("hi\n")), pubOnly[0], nil, Options{}); err != nil {
		t.Errorf("Open of plain mail with a public list key = %v", err)
	}
}

// TestSigStatus: every verification sentinel has its own status, and the
// names are stable (they appear in logs).
func TestSigStatus(t *testing.T) {
	cases := []struct {
		err  error
		want SigStatus
	}{
		{nil, SigGood},
		{ErrNotSigned, SigNone},
		{ErrBadSignature, SigBad},
		{ErrUnknownSigner, SigUnknownKey},
		{ErrKeyExpired, SigExpired},
		{ErrSignatureExpired, SigExpired},
		{ErrKeyRevoked, SigRevoked},
		{ErrWeakHash, SigWeakHash},
		{ErrWeakAlgorithm, SigWeakKey},
		{ErrSHA1Binding, SigWeakKey},
		{ErrUnsupportedKey, SigWeakKey},
		{ErrPartiallySigned, SigPartial},
		{ErrForwarded, SigForwarded},
		{ErrMultipleSignatures, SigMultiple},
		{ErrMalformed, SigUnreadable},
		{ErrUnsupportedProtocol, SigUnreadable},
	}
	for _, c := range cases {
		wrapped := c.err
		if c.err != nil {
			wrapped = errors.Join(errors.New("context"), c.err)
		}
		if got := statusOf(wrapped); got != c.want {
			t.Errorf("statusOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	seen := map[string]bool{}
	for s := SigNone; s <= SigUnreadable; s++ {
		n := s.String()
		if seen[n] || strings.HasPrefix(n, "SigStatus(") {
			t.Errorf("status %d has name %q", int(s), n)
		}
		seen[n] = true
	}
	if v := verdictOf(nil, nil); v.Status != SigNone || !errors.Is(v.Err, ErrNotSigned) {
		t.Errorf("no signature and no error: %v, %v", v.Status, v.Err)
	}
}
