package keys

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestEncryptStreamMatchesEncrypt: the streaming path writes byte for byte
// what Encrypt returns (same packets, same armor, same MIME), and
// ProtectHeadersReader what ProtectHeaders returns.
func TestEncryptStreamMatchesEncrypt(t *testing.T) {
	k := detKeys(t)
	real := testOuter(t, "[embargo] CVE-2025-0001 in libfoo")
	outer := testOuter(t, "[private] encrypted notice")
	inner, err := ProtectHeaders([]byte(innerText), real)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Encrypt(outer, inner, k.member, k.list, fixedOpts(23))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ProtectHeadersReader(strings.NewReader(toCRLFString(innerText)), real)
	if err != nil {
		t.Fatal(err)
	}
	streamed, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(streamed, inner) {
		t.Fatalf("ProtectHeadersReader = %q, %v\nwant %q", streamed, err, inner)
	}
	r, _ = ProtectHeadersReader(strings.NewReader(toCRLFString(innerText)), real)
	var got bytes.Buffer
	if err := EncryptStream(&got, outer, r, k.member, k.list, fixedOpts(23)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("EncryptStream differs from Encrypt:\n%s\n---\n%s", got.Bytes(), want)
	}
	d, err := Decrypt(got.Bytes(), k.member, NewKeyring(k.list), fixedOpts(0))
	if err != nil || !bytes.Equal(d.Inner, inner) || d.Signature == nil {
		t.Fatalf("Decrypt = %v, signature %v", err, d)
	}
}

// TestEncryptStreamRefuses: a stream is not fixed up: bare line ends, a
// boundary inside the content and an unusable key are errors.
func TestEncryptStreamRefuses(t *testing.T) {
	k := detKeys(t)
	outer := testOuter(t, "x")
	for _, in := range []string{"Content-Type: text/plain\r\n\r\nbare\nLF\r\n", "Content-Type: text/plain\r\n\r\nbare\rCR\r\n", "a\r\n\r\nends in CR\r"} {
		err := EncryptStream(io.Discard, outer, strings.NewReader(in), k.member, k.list, fixedOpts(1))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err = %v, want ErrMalformed", in, err)
		}
	}
	o := fixedOpts(1)
	o.Boundary = func() string { return "BEGIN" } // "--BEGIN" is in the armor header line
	err := EncryptStream(io.Discard, outer, strings.NewReader(toCRLFString(innerText)), k.member, k.list, o)
	if !errors.Is(err, ErrBoundaryInContent) {
		t.Errorf("boundary in the armor: err = %v, want ErrBoundaryInContent", err)
	}
	err = EncryptStream(io.Discard, outer, strings.NewReader(toCRLFString(innerText)), nil, k.list, fixedOpts(1))
	if !errors.Is(err, ErrNoEncryptionKey) {
		t.Errorf("no recipient: err = %v, want ErrNoEncryptionKey", err)
	}
}

func toCRLFString(s string) string { return string(toCRLF([]byte(s))) }
