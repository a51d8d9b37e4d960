package keys

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// rendered is h as go-message writes it, without the blank line.
func rendered(t *testing.T, h textproto.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()[:b.Len()-2]
}

// The rendered-fields path writes byte for byte what the mail.Header path
// writes, and drops the MIME fields a caller left in the outer header.
func TestFieldsPathMatchesHeaderPath(t *testing.T) {
	k := detKeys(t)
	real := testOuter(t, "[embargo] CVE-2025-0001 in libfoo, a subject long enough to be folded over two lines by go-message")
	outer := testOuter(t, "[private] encrypted notice")
	withMIME := outer.Copy()
	withMIME.Set("Content-Type", "text/plain")
	withMIME.Set("MIME-Version", "1.0")

	r1, err := ProtectHeadersReader(strings.NewReader(toCRLFString(innerText)), real)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(r1)
	r2, err := ProtectHeaderFields(strings.NewReader(toCRLFString(innerText)), rendered(t, real.Header.Header))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r2)
	if !bytes.Equal(got, want) {
		t.Fatalf("ProtectHeaderFields = %q\nwant %q", got, want)
	}

	var a, b bytes.Buffer
	if err := EncryptStream(&a, outer, bytes.NewReader(want), k.member, k.list, fixedOpts(7)); err != nil {
		t.Fatal(err)
	}
	if err := EncryptStreamFields(&b, rendered(t, withMIME.Header.Header), bytes.NewReader(want), k.member, k.list, fixedOpts(7)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("EncryptStreamFields differs from EncryptStream:\n%s\n---\n%s", b.Bytes(), a.Bytes())
	}
	if n := bytes.Count(bytes.ToLower(b.Bytes()), []byte("mime-version:")); n != 1 {
		t.Errorf("%d MIME-Version fields, want 1 (the caller's dropped)", n)
	}
}

// Bytes that are not rendered header fields are refused, never passed on:
// an empty line would end the header early and turn the rest into body.
func TestFieldsRefused(t *testing.T) {
	k := detKeys(t)
	for _, bad := range []string{
		"Subject: no line end",
		"Subject: a\r\n\r\nX-Smuggled: yes\r\n",
		" folded: first\r\n",
		"no colon here\r\n",
		": empty name\r\n",
		"Bad Name: space\r\n",
		"Subject: bare\nLF\r\n",
		"Subject: bare\rCR\r\n",
		"Subject: nul\x00\r\n",
	} {
		err := EncryptStreamFields(io.Discard, []byte(bad), strings.NewReader(toCRLFString(innerText)), k.member, k.list, fixedOpts(1))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("outer %q: err = %v, want ErrMalformed", bad, err)
		}
		if _, err := ProtectHeaderFields(strings.NewReader(toCRLFString(innerText)), []byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("protected %q: err = %v, want ErrMalformed", bad, err)
		}
	}
}

// The one-entry cache of prepared entity headers never serves another
// header: bodies taken in turn each get their own protected entity.
func TestProtectHeaderFieldsCache(t *testing.T) {
	real := testOuter(t, "[embargo] the real subject")
	fields := rendered(t, real.Header.Header)
	html := "Content-Type: text/html; charset=utf-8\r\nSubject: kept\r\n\r\n<p>x</p>\r\n"
	for _, body := range []string{toCRLFString(innerText), html, toCRLFString(innerText), html, "\r\nno header\r\n"} {
		want, err := ProtectHeaders([]byte(body), real)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ProtectHeaderFields(strings.NewReader(body), fields)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, want) {
			t.Fatalf("body %q:\ngot  %q\nwant %q", body[:20], got, want)
		}
	}
}

// The template for the multipart/encrypted fields writes what go-message
// writes, for every boundary of ours.
func TestEncryptedFieldsTemplate(t *testing.T) {
	for seed := range 20 {
		o := Options{Rand: detRand(byte(seed))}
		boundary, err := o.boundary()
		if err != nil || !ourBoundary(boundary) {
			t.Fatalf("boundary %q (%v) is not of our form", boundary, err)
		}
		var got, want bytes.Buffer
		writeEncryptedFields(&got, boundary)
		writeMIMEFields(&want, "multipart/encrypted", map[string]string{"boundary": boundary, "protocol": "application/pgp-encrypted"})
		if got.String() != want.String() {
			t.Fatalf("template %q\nwant %q", got.String(), want.String())
		}
	}
	for _, b := range []string{"BEGIN", "=_0123456789ABCDEF0123456789abcdef", "=_0123"} {
		if ourBoundary(b) {
			t.Errorf("%q taken for a boundary of ours", b)
		}
	}
}
