package keys

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestDecryptGPG: we decrypt what gpg 2.2 encrypts to a list key, PGP/MIME
// and inline, plain, signed in one step (--sign --encrypt), with hidden
// recipients (--throw-keyids), and signed-then-encrypted (RFC 3156 §6.1);
// also after the whole message was converted to LF.
func TestDecryptGPG(t *testing.T) {
	g := newGPG(t)
	member := g.edKey("Member <m@src.test>", "1y")
	trusted := NewKeyring(g.publicKey(member))
	list, err := GenerateListKey("Security", "security@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)
	enc := func(data []byte, extra ...string) []byte {
		return g.output(data, append([]string{"--armor", "--recipient", list.Fingerprint()}, append(extra, "--encrypt")...)...)
	}
	inner := []byte(innerText)
	text := []byte("/ack CVE-2025-0001\nthanks\n")
	textEnt := textEntity(text, "utf-8")
	sig := g.detachSign(inner, member, "--digest-algo", "SHA256")
	signedInner := signedMIME(inner, sig, "inner-b")
	signedInnerEntity := asEntity(t, signedInner)

	cases := []struct {
		name      string
		msg       []byte
		format    string
		inner     []byte
		signed    bool
		signBytes []byte
	}{
		{"pgp/mime", encryptedMIME(enc(inner), "e1"), FormatPGPMIME, inner, false, nil},
		{"pgp/mime signed", encryptedMIME(enc(inner, "--sign", "--local-user", member), "e1"), FormatPGPMIME, inner, true, inner},
		{"pgp/mime throw-keyids", encryptedMIME(enc(inner, "--throw-keyids", "--sign", "--local-user", member), "e1"), FormatPGPMIME, inner, true, inner},
		{"pgp/mime signed then encrypted (RFC 3156 6.1)", encryptedMIME(enc(signedInnerEntity), "e1"), FormatPGPMIME, signedInnerEntity, true, inner},
		{"inline", plainMessage(enc(text)), FormatInline, textEnt, false, nil},
		{"inline signed", plainMessage(enc(text, "--sign", "--local-user", member)), FormatInline, textEnt, true, text},
		{"inline clearsigned then encrypted", plainMessage(enc(g.output(text, "--local-user", member, "--clearsign"))), FormatInline, nil, true, []byte("/ack CVE-2025-0001\r\nthanks")},
	}
	for _, tc := range cases {
		for _, lf := range []bool{false, true} {
			name, msg := tc.name, tc.msg
			if lf {
				name += " LF"
				msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
			}
			t.Run(name, func(t *testing.T) {
				if !IsEncrypted(msg) {
					t.Error("IsEncrypted = false")
				}
				d, err := Decrypt(msg, list, trusted, Options{})
				if err != nil {
					t.Fatalf("Decrypt = %v", err)
				}
				if d.Format != tc.format {
					t.Errorf("Format = %s, want %s", d.Format, tc.format)
				}
				if tc.inner != nil && !bytes.Equal(d.Inner, tc.inner) {
					t.Errorf("Inner = %q\nwant %q", d.Inner, tc.inner)
				}
				if d.CiphertextHash == ([32]byte{}) {
					t.Error("CiphertextHash not set")
				}
				if !tc.signed {
					if d.Signature != nil || d.SignatureErr != nil {
						t.Errorf("Signature = %+v, %v; want none", d.Signature, d.SignatureErr)
					}
					return
				}
				if d.SignatureErr != nil || d.Signature == nil {
					t.Fatalf("Signature = %+v, %v", d.Signature, d.SignatureErr)
				}
				if d.Signature.Fingerprint != member || !bytes.Equal(d.Signature.Bytes, tc.signBytes) {
					t.Errorf("Signature = %s over %q", d.Signature.Fingerprint, d.Signature.Bytes)
				}
			})
			t.Run(name+" Open", func(t *testing.T) {
				checkOpenDecrypts(t, msg, list, trusted, member, tc.format, tc.inner, tc.signed, tc.signBytes)
			})
		}
	}

	// The same ciphertext resubmitted, wrapped differently, has the same
	// CiphertextHash (docs/threat-model.md D3).
	ct := enc(inner)
	d1, err1 := Decrypt(encryptedMIME(ct, "x1"), list, trusted, Options{})
	d2, err2 := Decrypt(plainMessage(ct), list, trusted, Options{})
	if err1 != nil || err2 != nil || d1.CiphertextHash != d2.CiphertextHash {
		t.Errorf("CiphertextHash differs for the same ciphertext: %v %v", err1, err2)
	}
	d3, _ := Decrypt(encryptedMIME(enc(inner), "x1"), list, trusted, Options{})
	if d3 != nil && d3.CiphertextHash == d1.CiphertextHash {
		t.Error("CiphertextHash equal for two encryptions")
	}
}

// TestDecryptSignatureProblems: a signature inside the encryption that does
// not count leaves the decryption valid but reports why.
func TestDecryptSignatureProblems(t *testing.T) {
	g := newGPG(t)
	member := g.edKey("Member <m@src.test>", "1y")
	second := g.edKey("Second <s@src.test>", "1y")
	stranger := g.edKey("Stranger <x@evil.test>", "1y")
	rsa := g.genKey("Rsa <rsa@src.test>", "rsa3072", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", rsa, "rsa3072", "encr", "1y")
	list, err := GenerateListKey("Security", "security@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)
	trusted := NewKeyring(g.publicKey(member), g.publicKey(second), g.publicKey(rsa), list)
	enc := func(data []byte, extra ...string) []byte {
		return encryptedMIME(g.output(data, append([]string{"--armor", "--recipient", list.Fingerprint()}, append(extra, "--encrypt")...)...), "e2")
	}
	inner := []byte(innerText)
	ownSigned, err := Encrypt(testOuter(t, "x"), inner, list, list, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"unknown signer", enc(inner, "--sign", "--local-user", stranger), ErrUnknownSigner},
		{"SHA-1 signature", enc(inner, "--sign", "--local-user", rsa, "--digest-algo", "SHA1"), ErrWeakHash},
		{"two signatures", enc(inner, "--sign", "--local-user", member, "--local-user", second), ErrMultipleSignatures},
		{"signed inside and outside", enc(asEntity(t, signedMIME(inner, g.detachSign(inner, member), "i")), "--sign", "--local-user", member), ErrMultipleSignatures},
		{"inner partially signed", enc(asEntity(t, mixed("mixed", "m", []byte("Content-Type: text/plain\r\n\r\nunsigned"), asEntity(t, signedMIME(inner, g.detachSign(inner, member), "i"))))), ErrPartiallySigned},
		{"signed by the list key itself", ownSigned, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decrypt(tt.msg, list, trusted, Options{})
			if err != nil {
				t.Fatalf("Decrypt = %v", err)
			}
			if tt.want == nil { // list key is in trusted here: counts
				if d.Signature == nil || d.Signature.Fingerprint != list.Fingerprint() {
					t.Fatalf("Signature = %+v, %v", d.Signature, d.SignatureErr)
				}
				d, err = Decrypt(tt.msg, list, NewKeyring(g.publicKey(member)), Options{})
				if err != nil || d.Signature != nil || !errors.Is(d.SignatureErr, ErrUnknownSigner) {
					t.Fatalf("list key not trusted: Signature = %+v, %v, %v", d.Signature, d.SignatureErr, err)
				}
				return
			}
			if d.Signature != nil {
				t.Fatalf("Signature counted: %+v", d.Signature)
			}
			mustErrIs(t, "SignatureErr", d.SignatureErr, tt.want, refusalSentinels)
			if !bytes.Contains(d.Inner, []byte("CVE-2025-0001")) {
				t.Error("Inner lost")
			}
		})
	}
}

// TestDecryptAEAD: SEIPD v2 (RFC 9580 §5.13.2, AEAD OCB) is integrity
// protected too and decrypts; a flipped byte fails its tag (ErrTampered).
// gpg 2.2 writes no such messages; the fixture is made with go-crypto.
func TestDecryptAEAD(t *testing.T) {
	k := detKeys(t)
	cfg := &packet.Config{Rand: detRand(12), AEADConfig: &packet.AEADConfig{DefaultMode: packet.AEADModeOCB}}
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	ek, _ := k.list.e.EncryptionKey(fixedNow)
	var bin bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEAD(&bin, ek.PublicKey, packet.CipherAES256, true, key, cfg); err != nil {
		t.Fatal(err)
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&bin, packet.CipherAES256, true,
		packet.CipherSuite{Cipher: packet.CipherAES256, Mode: packet.AEADModeOCB}, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lit, _ := packet.SerializeLiteral(nopCloser{w}, true, "", 0)
	lit.Write([]byte(innerText))
	lit.Close()
	w.Close()
	msg := encryptedMIME(armorMsg(t, bin.Bytes()), "aead")
	d, err := Decrypt(msg, k.list, nil, fixedOpts(0))
	if err != nil || !bytes.Equal(d.Inner, []byte(innerText)) {
		t.Fatalf("Decrypt(SEIPD v2) = %v", err)
	}
	for _, pos := range []int{-1, -20, -100} {
		if _, err := Decrypt(flipMessage(t, msg, pos), k.list, nil, fixedOpts(0)); !errors.Is(err, ErrTampered) {
			t.Errorf("flipped byte %d: err = %v, want ErrTampered", pos, err)
		}
	}
}

// checkOpenDecrypts: Open finds what Decrypt finds, in one pass.
func checkOpenDecrypts(t *testing.T, msg []byte, list *Key, trusted *Keyring, signer, format string, inner []byte, signed bool, signBytes []byte) {
	t.Helper()
	m, err := Open(msg, list, trusted, Options{})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	d, err := Decrypt(msg, list, trusted, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum, ok := m.CiphertextHash()
	if !m.Encrypted() || m.Format() != format || m.NotDecrypted() != nil || !ok || sum != d.CiphertextHash {
		t.Errorf("Open: encrypted %v, format %q, not decrypted %v, hash %v", m.Encrypted(), m.Format(), m.NotDecrypted(), ok)
	}
	if !bytes.Equal(m.Inner(), d.Inner) || (inner != nil && !bytes.Equal(m.Inner(), inner)) {
		t.Errorf("Open: Inner = %q", m.Inner())
	}
	v := m.Signature()
	if !signed {
		if v.Status != SigNone || !errors.Is(v.Err, ErrNotSigned) || !bytes.Equal(m.Content(), m.Inner()) {
			t.Errorf("Open: signature %v (%v), want none; content is the decrypted entity", v.Status, v.Err)
		}
		return
	}
	if !v.OK() || v.Err != nil || v.Fingerprint != signer || !bytes.Equal(v.SignedBytes(), signBytes) || v.Signed.IsZero() || v.Hash == 0 {
		t.Fatalf("Open: signature %v (%v) by %s over %q", v.Status, v.Err, v.Fingerprint, v.SignedBytes())
	}
	if !bytes.Equal(m.Content(), v.Entity()) || !bytes.Equal(v.Entity(), d.Signature.Entity) {
		t.Errorf("Open: Content = %q, want the signed entity %q", m.Content(), d.Signature.Entity)
	}
}
