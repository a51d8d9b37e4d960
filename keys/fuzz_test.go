package keys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
)

// fuzzEnv is what the fuzz targets check against: deterministic keys, so
// that the committed seeds (made by TestFuzzSeeds -update) carry valid
// signatures and ciphertexts.
func fuzzEnv(t testing.TB) (k testKeys, trusted *Keyring, o Options) {
	k = detKeys(t)
	return k, NewKeyring(k.member), fixedOpts(0)
}

// FuzzVerify: Verify never panics, and whatever it reports as verified is
// by the trusted key and covers bytes that are in the input.
func FuzzVerify(f *testing.F) {
	k, trusted, o := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		v, err := Verify(msg, trusted, o)
		if err != nil {
			if v != nil {
				t.Fatal("Verify returned both a result and an error")
			}
			return
		}
		if v.Fingerprint != k.member.Fingerprint() {
			t.Fatalf("verified by %s", v.Fingerprint)
		}
		if !coveredBy(v.Bytes, haystacks(msg)...) {
			t.Fatalf("verified bytes %q are not in the input", v.Bytes)
		}
	})
}

// FuzzDecrypt: Decrypt never panics; a result has a known format, and a
// counted signature is the trusted key's, over bytes of the plaintext.
func FuzzDecrypt(f *testing.F) {
	k, trusted, o := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		d, err := Decrypt(msg, k.list, trusted, o)
		if err != nil {
			if d != nil {
				t.Fatal("Decrypt returned both a result and an error")
			}
			return
		}
		if d.Format != FormatPGPMIME && d.Format != FormatInline {
			t.Fatalf("Format = %q", d.Format)
		}
		if !IsEncrypted(msg) {
			t.Fatal("decrypted, but IsEncrypted = false")
		}
		if d.Signature != nil {
			if d.SignatureErr != nil {
				t.Fatal("Signature and SignatureErr both set")
			}
			if d.Signature.Fingerprint != k.member.Fingerprint() {
				t.Fatalf("signed by %s", d.Signature.Fingerprint)
			}
			if !coveredBy(d.Signature.Bytes, haystacks(d.Inner)...) {
				t.Fatalf("signed bytes %q are not in the plaintext", d.Signature.Bytes)
			}
		}
	})
}

// haystacks are the places verified bytes may come from: the input with CRLF
// line ends, and its top-level body with the transfer encoding undone.
func haystacks(msg []byte) [][]byte {
	crlf := toCRLF(msg)
	hs := [][]byte{crlf}
	if e, err := parseEntity(crlf); err == nil {
		if b, err := e.decodedBody(); err == nil {
			hs = append(hs, toCRLF(b))
		}
	}
	return hs
}

// coveredBy reports whether b occurs in a haystack, or, for clear-signed
// text (dash-escaping undone, trailing blanks cut), whether each of its
// lines does.
func coveredBy(b []byte, all ...[]byte) bool {
	for _, h := range all {
		if bytes.Contains(h, toCRLF(b)) {
			return true
		}
	}
	for _, line := range bytes.Split(b, []byte("\r\n")) {
		found := false
		for _, h := range all {
			if bytes.Contains(h, line) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestFuzzSeeds checks the committed seed corpora behave as labelled and,
// with -update, rewrites them (testdata/fuzz/Fuzz*/).
func TestFuzzSeeds(t *testing.T) {
	k, trusted, o := fuzzEnv(t)
	signed, err := Sign(testOuter(t, "s"), []byte(innerText), k.member, fixedOpts(31))
	if err != nil {
		t.Fatal(err)
	}
	var cs bytes.Buffer
	w, err := clearsign.Encode(&cs, k.member.e.PrivateKey, o.config())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "/ack CVE-2025-0001\n- dash\ntrailing  \n")
	w.Close()
	clearMsg := plainMessage(cs.Bytes())
	text := func(s string) []byte { return []byte("Content-Type: text/plain\r\n\r\n" + s) }

	verifySeeds := map[string]struct {
		msg []byte
		ok  bool
	}{
		"pgpmime":       {signed, true},
		"pgpmime-lf":    {bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), true},
		"clearsign":     {clearMsg, true},
		"johnny-prefix": {mixed("mixed", "j", text("fired"), asEntity(t, signed)), false},
		"johnny-suffix": {mixed("mixed", "j", asEntity(t, signed), text("p.s.")), false},
		"rfc822":        {mixed("mixed", "f", text("fwd"), append([]byte("Content-Type: message/rfc822\r\n\r\n"), signed...)), false},
		"clear-suffix":  {plainMessage(append(cs.Bytes(), "more\n"...)), false},
		"three-parts":   {threeParts(t, signed), false},
		"plain":         {plainMessage([]byte("hello\n")), false},
		"nested":        {mixed("mixed", "a", asEntity(t, mixed("mixed", "b", asEntity(t, mixed("alternative", "c", text("x")))))), false},
	}
	enc, err := Encrypt(testOuter(t, "e"), []byte(innerText), k.list, k.member, fixedOpts(32))
	if err != nil {
		t.Fatal(err)
	}
	inline := plainMessage(armorMsg(t, payloadOf(t, enc)))
	decryptSeeds := map[string]struct {
		msg []byte
		ok  bool
	}{
		"pgpmime-signed": {enc, true},
		"inline-signed":  {inline, true},
		"efail":          {mixed("mixed", "x", []byte("Content-Type: text/html\r\n\r\n<img src=\""), asEntity(t, enc), []byte("Content-Type: text/html\r\n\r\n\">")), false},
		"sed":            {sedMessage(t, k.list, []byte(innerText)), false},
		"tampered":       {flipMessage(t, enc, -1), false},
		"plain":          {plainMessage([]byte("hello\n")), false},
	}
	write := func(target, name string, msg []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", msg)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range verifySeeds {
		if _, err := Verify(s.msg, trusted, o); (err == nil) != s.ok {
			t.Errorf("verify seed %s: err = %v, want ok %v", name, err, s.ok)
		}
		if *update {
			write("FuzzVerify", name, s.msg)
		}
	}
	for name, s := range decryptSeeds {
		d, err := Decrypt(s.msg, k.list, trusted, o)
		if (err == nil) != s.ok || (err == nil && d.Signature == nil) {
			t.Errorf("decrypt seed %s: err = %v, want ok %v", name, err, s.ok)
		}
		if *update {
			write("FuzzDecrypt", name, s.msg)
		}
	}
}

// FuzzOpen: Open never panics and agrees with IsEncrypted, Decrypt and
// Verify on every input: it refuses exactly the wholly encrypted messages
// Decrypt refuses, decrypts the others to the same entity, and counts a
// signature exactly when they do. Its seeds are the other targets' corpora.
func FuzzOpen(f *testing.F) {
	k, trusted, o := fuzzEnv(f)
	for _, target := range []string{"FuzzVerify", "FuzzDecrypt"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			_, lit, ok := strings.Cut(strings.TrimSpace(string(b)), "\n[]byte(")
			msg, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
			if !ok || err != nil {
				f.Fatalf("%s: not a corpus file", name)
			}
			f.Add([]byte(msg))
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := Open(msg, k.list, trusted, o)
		d, derr := Decrypt(msg, k.list, trusted, o)
		enc := IsEncrypted(msg)
		if err != nil {
			if m != nil || !enc || derr == nil || derr.Error() != err.Error() {
				t.Fatalf("Open refused (%v); IsEncrypted %v, Decrypt %v", err, enc, derr)
			}
			return
		}
		if m.Encrypted() != enc || m.Encrypted() != (derr == nil) {
			t.Fatalf("Open encrypted %v; IsEncrypted %v, Decrypt %v", m.Encrypted(), enc, derr)
		}
		v := m.Signature()
		if m.Encrypted() {
			if !bytes.Equal(m.Inner(), d.Inner) || v.OK() != (d.Signature != nil) {
				t.Fatalf("Open and Decrypt differ: signature %v vs %v", v.Status, d.SignatureErr)
			}
		} else if _, verr := Verify(msg, trusted, o); v.OK() != (verr == nil) {
			t.Fatalf("Open and Verify differ: %v vs %v", v.Status, verr)
		}
		if v.OK() != (v.Err == nil) || v.OK() && v.Fingerprint != k.member.Fingerprint() {
			t.Fatalf("verdict %v, err %v, by %s", v.Status, v.Err, v.Fingerprint)
		}
	})
}
