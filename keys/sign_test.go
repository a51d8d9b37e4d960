package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message/mail"
)

// TestSignGolden: a signed message with a fixed clock, randomness and
// boundary is repeatable byte for byte and matches the golden file.
func TestSignGolden(t *testing.T) {
	k := detKeys(t)
	gen := func() []byte {
		msg, err := Sign(testOuter(t, "[announce] Advisory 2025-0001"), []byte(innerText), k.list, fixedOpts(11))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	a, b := gen(), gen()
	if !bytes.Equal(a, b) {
		t.Fatal("Sign with fixed Options is not deterministic")
	}
	golden(t, "signed.eml.golden", a)

	// Round trip through our verifier.
	v, err := Verify(a, NewKeyring(k.list), fixedOpts(0))
	if err != nil {
		t.Fatalf("Verify(own signed message) = %v", err)
	}
	if v.Fingerprint != k.list.Fingerprint() || !bytes.Equal(v.Bytes, []byte(innerText)) || !v.Signed.Equal(fixedNow) {
		t.Errorf("Verify = %+v", v)
	}
}

// TestSignStructure checks RFC 3156 §5 details: micalg from the signature,
// protocol, part 1 byte-identical to the input, CRLF only.
func TestSignStructure(t *testing.T) {
	k := detKeys(t)
	msg, err := Sign(testOuter(t, "s"), []byte(strings.ReplaceAll(innerText, "\r\n", "\n")), k.list, Options{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("bare LF in output")
	}
	for _, want := range []string{"micalg=pgp-sha256", `protocol="application/pgp-signature"`, "Mime-Version: 1.0\r\nContent-Type: multipart/signed"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("output lacks %q", want)
		}
	}
	parts := cutParts(t, msg)
	if len(parts) != 2 || !bytes.Equal(parts[0], []byte(innerText)) {
		t.Fatalf("part 1 = %q, want the CRLF inner entity", parts[0])
	}
}

func TestSignRefuses(t *testing.T) {
	k := detKeys(t)
	pubOnly := NewKeyring(k.member).Keys()[0]
	pubOnly = &Key{e: publicCopy(t, pubOnly), fpr: pubOnly.fpr}
	tests := []struct {
		name  string
		inner string
		key   *Key
		opts  Options
		want  error
	}{
		{"8-bit inner", "Content-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n", k.list, Options{}, ErrNot7Bit},
		{"no header/body split", "just text", k.list, Options{}, ErrMalformed},
		{"boundary in content", "Content-Type: text/plain\r\n\r\n--x\r\n", k.list, Options{Boundary: func() string { return "x" }}, ErrBoundaryInContent},
		{"public key only", innerText, pubOnly, Options{}, ErrNoSecretKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Sign(testOuter(t, "s"), []byte(tt.inner), tt.key, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Sign = %v, want %v", err, tt.want)
			}
		})
	}
	// Header injection through the outer header is impossible: go-message
	// refuses CR/LF in values when writing.
	var h mail.Header
	h.Set("Subject", "x\r\nBcc: victim@example.org")
	if _, err := Sign(h, []byte(innerText), k.list, Options{}); err == nil {
		t.Error("Sign accepted a header value with CRLF")
	}
}

// TestGPGVerifiesOurSignature: part 1 cut byte-wise and the signature, as
// gpg 2.2 sees them: GOODSIG and VALIDSIG with the list key.
func TestGPGVerifiesOurSignature(t *testing.T) {
	g := newGPG(t)
	k, err := GenerateListKey("Announce", "announce@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.ArmoredPublic()
	g.importKey(pub)
	inners := map[string]string{
		"qp":  innerText,
		"dot": "Content-Type: text/plain; charset=us-ascii\r\n\r\n.\r\nFrom here\r\n..\r\n",
		"multipart": "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\n" +
			"Content-Type: text/plain\r\n\r\nadvisory\r\n--inner\r\n" +
			"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--inner--\r\n",
	}
	for name, inner := range inners {
		t.Run(name, func(t *testing.T) {
			msg, err := Sign(testOuter(t, "advisory"), []byte(inner), k, Options{})
			if err != nil {
				t.Fatal(err)
			}
			parts := cutParts(t, msg)
			if len(parts) != 2 {
				t.Fatalf("%d parts", len(parts))
			}
			body := parts[1][bytes.Index(parts[1], []byte("\r\n\r\n"))+4:]
			data := g.tmpFile("part1-"+name, parts[0])
			sig := g.tmpFile("sig-"+name+".asc", body)
			out, errs, err := g.run(nil, "--verify", sig, data)
			if err != nil || !statusHas(out, "GOODSIG") || !statusHas(out, "VALIDSIG "+k.Fingerprint()) {
				t.Fatalf("gpg --verify: %v\n%s\n%s", err, out, errs)
			}
		})
	}
}

// publicCopy returns the entity of k re-read from its public export.
func publicCopy(t testing.TB, k *Key) *openpgp.Entity {
	t.Helper()
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ReadPublicKeys(bytes.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	return ks[0].e
}

// TestSignaturesCarryNoNotation: go-crypto's default salt notation
// (salt@notations.openpgpjs.org) is left out of every message signature, as
// gpg sees it: no NOTATION_NAME status when it verifies, and no notation
// subpacket in --list-packets.
func TestSignaturesCarryNoNotation(t *testing.T) {
	g := newGPG(t)
	list, err := GenerateListKey("Announce", "announce@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)
	secret, err := list.ArmoredPrivate(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g.importKey(secret) // to decrypt what Encrypt makes for the list key itself

	signed, err := Sign(testOuter(t, "advisory"), []byte(innerText), list, Options{})
	if err != nil {
		t.Fatal(err)
	}
	parts := cutParts(t, signed)
	sigBody := parts[1][bytes.Index(parts[1], []byte("\r\n\r\n"))+4:]
	out, errs, err := g.run(nil, "--verify", g.tmpFile("sig.asc", sigBody), g.tmpFile("part1", parts[0]))
	if err != nil || !statusHas(out, "GOODSIG") {
		t.Fatalf("gpg --verify: %v\n%s\n%s", err, out, errs)
	}
	if statusHas(out, "NOTATION_NAME") {
		t.Errorf("gpg --verify reports a notation on Sign's signature:\n%s", out)
	}
	packets := g.must(sigBody, "--list-packets")
	if strings.Contains(strings.ToLower(packets), "notation") {
		t.Errorf("signature packet carries a notation:\n%s", packets)
	}

	enc, err := Encrypt(testOuter(t, "x"), []byte(innerText), list, list, Options{})
	if err != nil {
		t.Fatal(err)
	}
	armored := cutParts(t, enc)[1]
	armored = armored[bytes.Index(armored, []byte("\r\n\r\n"))+4:]
	out, errs, err = g.run(armored, "--decrypt")
	if err != nil || !statusHas(out, "GOODSIG") {
		t.Fatalf("gpg --decrypt: %v\n%s\n%s", err, out, errs)
	}
	if statusHas(out, "NOTATION_NAME") {
		t.Errorf("gpg --decrypt reports a notation on the signature inside Encrypt's message:\n%s", out)
	}
}
