package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestEncryptGolden: a signed and encrypted notice with protected headers,
// repeatable byte for byte with fixed Options, matching the golden file;
// and we decrypt it back.
func TestEncryptGolden(t *testing.T) {
	k := detKeys(t)
	real := testOuter(t, "[embargo] CVE-2025-0001 in libfoo")
	inner, err := ProtectHeaders([]byte(innerText), real)
	if err != nil {
		t.Fatal(err)
	}
	outer := testOuter(t, "[private] encrypted notice")
	gen := func() []byte {
		msg, err := Encrypt(outer, inner, k.member, k.list, fixedOpts(23))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	a, b := gen(), gen()
	if !bytes.Equal(a, b) {
		t.Fatal("Encrypt with fixed Options is not deterministic")
	}
	golden(t, "encrypted.eml.golden", a)
	if bytes.Contains(a, []byte("CVE-2025-0001")) || bytes.Contains(a, []byte("libfoo")) {
		t.Error("the real subject leaks outside the ciphertext")
	}

	d, err := Decrypt(a, k.member, NewKeyring(k.list), fixedOpts(0))
	if err != nil {
		t.Fatalf("Decrypt(own message) = %v", err)
	}
	if !bytes.Equal(d.Inner, inner) || d.Format != FormatPGPMIME {
		t.Errorf("Decrypt inner = %q (format %s)", d.Inner, d.Format)
	}
	if d.Signature == nil || d.Signature.Fingerprint != k.list.Fingerprint() || !bytes.Equal(d.Signature.Bytes, inner) {
		t.Errorf("Decrypt signature = %+v, err %v", d.Signature, d.SignatureErr)
	}
	if !bytes.Contains(d.Inner, []byte("protected-headers=v1")) || !bytes.Contains(d.Inner, []byte("Subject: [embargo] CVE-2025-0001 in libfoo")) {
		t.Errorf("protected headers missing from inner:\n%s", d.Inner)
	}
}

// TestEncryptPackets: one PKESK, one SEIPD (tag 18, version 1), AES-256.
func TestEncryptPackets(t *testing.T) {
	k := detKeys(t)
	msg, err := Encrypt(testOuter(t, "x"), []byte(innerText), k.member, nil, fixedOpts(5))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := parseEntity(msg)
	_, block, _, err := encryptedPayload(e)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := dearmorMessage(block)
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := splitPackets(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 2 || pkts[0].tag != tagPKESK || pkts[1].tag != tagSEIPD || pkts[1].body[0] != 1 {
		t.Fatalf("packets = %v, want PKESK + SEIPD v1", tags(pkts))
	}
	// Decrypt the session key to read the cipher octet.
	p, err := packet.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	ek := p.(*packet.EncryptedKey)
	sub, _ := k.member.e.EncryptionKey(fixedNow)
	if err := ek.Decrypt(sub.PrivateKey, nil); err != nil {
		t.Fatal(err)
	}
	if ek.CipherFunc != packet.CipherAES256 {
		t.Errorf("cipher = %v, want AES-256", ek.CipherFunc)
	}
}

func tags(ps []rawPacket) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.tag)
	}
	return out
}

// TestEncryptRefusesUnusableKeys: never a plaintext fallback (docs/threat-model.md D6).
func TestEncryptRefusesUnusableKeys(t *testing.T) {
	g := newGPG(t)
	k := detKeys(t)
	weak := g.genKey("Weak <weak@src.test>", "rsa1024", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", weak, "rsa1024", "encr", "1y")
	signOnly := g.genKey("S <s@src.test>", "ed25519", "sign,cert", "1y")
	short := g.edKey("Short <short@src.test>", "1d")
	tests := []struct {
		name string
		to   *Key
		now  time.Time
		want error
	}{
		{"RSA-1024", g.publicKey(weak), time.Now(), ErrWeakAlgorithm},
		{"no encryption subkey", g.publicKey(signOnly), time.Now(), ErrNoEncryptionKey},
		{"expired", g.publicKey(short), time.Now().Add(72 * time.Hour), ErrKeyExpired},
		{"nil", nil, time.Now(), ErrNoEncryptionKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			msg, err := Encrypt(testOuter(t, "x"), []byte(innerText), tt.to, k.list, Options{Now: func() time.Time { return now }})
			if !errors.Is(err, tt.want) || msg != nil {
				t.Fatalf("Encrypt = %v (%d bytes), want %v and nothing", err, len(msg), tt.want)
			}
		})
	}
}

// TestGPGDecryptsOurs: gpg 2.2 decrypts what we encrypt (DECRYPTION_OKAY,
// AES-256 with MDC), and verifies the signature inside (GOODSIG, VALIDSIG).
func TestGPGDecryptsOurs(t *testing.T) {
	g := newGPG(t)
	member := g.edKey("Member <m@src.test>", "1y")
	to := g.publicKey(member)
	list, err := GenerateListKey("Distributors", "distributors@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)

	inner, err := ProtectHeaders([]byte(innerText), testOuter(t, "[embargo] secret subject"))
	if err != nil {
		t.Fatal(err)
	}
	for _, signed := range []bool{true, false} {
		var signer *Key
		if signed {
			signer = list
		}
		msg, err := Encrypt(testOuter(t, "[private] encrypted notice"), inner, to, signer, Options{})
		if err != nil {
			t.Fatal(err)
		}
		parts := cutParts(t, msg)
		if len(parts) != 2 || !bytes.Contains(parts[0], []byte("Version: 1")) {
			t.Fatalf("parts = %q", parts)
		}
		ct := g.tmpFile("ct.asc", parts[1][bytes.Index(parts[1], []byte("\r\n\r\n"))+4:])
		plain := filepath.Join(g.dir, "plain")
		os.Remove(plain)
		out, errs, err := g.run(nil, "--output", plain, "--decrypt", ct)
		if err != nil || !statusHas(out, "DECRYPTION_OKAY") || !statusHas(out, "DECRYPTION_INFO 2 9") {
			t.Fatalf("gpg --decrypt (signed %v): %v\n%s\n%s", signed, err, out, errs)
		}
		if signed && (!statusHas(out, "GOODSIG") || !statusHas(out, "VALIDSIG "+list.Fingerprint())) {
			t.Fatalf("gpg: no GOODSIG/VALIDSIG by the list key:\n%s", out)
		}
		if !signed && strings.Contains(out, "SIG") {
			t.Fatalf("gpg saw a signature on an unsigned message:\n%s", out)
		}
		got, _ := os.ReadFile(plain)
		if !bytes.Equal(got, inner) {
			t.Fatalf("gpg plaintext = %q, want %q", got, inner)
		}
	}
}

func TestProtectHeaders(t *testing.T) {
	h := testOuter(t, "Real subject")
	h.Set("X-Mailer", "not copied")
	got, err := ProtectHeaders([]byte(innerText), h)
	if err != nil {
		t.Fatal(err)
	}
	e, err := parseEntity(got)
	if err != nil {
		t.Fatal(err)
	}
	if e.params["protected-headers"] != "v1" || e.params["charset"] != "utf-8" {
		t.Errorf("Content-Type params = %v", e.params)
	}
	if e.header.Get("Subject") != "Real subject" || e.header.Get("X-Mailer") != "" || e.header.Get("Message-Id") == "" {
		t.Errorf("header = %v", e.header.Map())
	}
	if !bytes.HasSuffix(got, []byte(innerText[strings.Index(innerText, "\r\n\r\n")+4:])) {
		t.Error("body changed")
	}
}
