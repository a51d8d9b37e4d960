package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestVerifyGPG: we verify what gpg 2.2 signs, PGP/MIME (detached, SHA-256,
// over the CRLF entity) and clear-signed, also after the whole message's
// line ends were turned into LF (mail from a Maildir).
func TestVerifyGPG(t *testing.T) {
	g := newGPG(t)
	fpr := g.edKey("Member <m@src.test>", "1y")
	trusted := NewKeyring(g.publicKey(fpr))

	// A part header as real clients write it: lower case, folded, odd
	// spacing; and a body with trailing blanks, a dash line and "From ".
	oddInner := []byte("content-type:   text/plain;\r\n\tcharset=\"us-ascii\"\r\n" +
		"content-transfer-encoding: 7bit\r\n\r\n" +
		"/ack CVE-2025-0001\r\n- dash line\r\nFrom the start  \r\n\r\n")
	clearText := []byte("/ack CVE-2025-0001\n-- \nMember\n- leading dash\nFrom here\ntrailing blanks   \n")

	cases := []struct {
		name string
		msg  []byte
		want []byte // Verified.Bytes
	}{
		{
			name: "pgp/mime qp inner",
			msg:  signedMIME([]byte(innerText), g.detachSign([]byte(innerText), fpr, "--digest-algo", "SHA256"), "sig-b"),
			want: []byte(innerText),
		},
		{
			name: "pgp/mime odd header",
			msg:  signedMIME(oddInner, g.detachSign(oddInner, fpr, "--digest-algo", "SHA256"), "sig-b"),
			want: oddInner,
		},
		{
			name: "pgp/mime sha512",
			msg:  signedMIME([]byte(innerText), g.detachSign([]byte(innerText), fpr, "--digest-algo", "SHA512"), "sig-b"),
			want: []byte(innerText),
		},
		{
			name: "clearsigned",
			msg:  plainMessage(g.output(clearText, "--local-user", fpr, "--clearsign")),
			want: []byte("/ack CVE-2025-0001\r\n--\r\nMember\r\n- leading dash\r\nFrom here\r\ntrailing blanks"),
		},
	}
	qp := []byte("From: m@src.test\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp = append(qp, bytes.ReplaceAll(toCRLF(g.output([]byte("/ack 1\n"), "--local-user", fpr, "--clearsign")), []byte("="), []byte("=3D"))...)
	cases = append(cases, struct {
		name string
		msg  []byte
		want []byte
	}{"clearsigned in quoted-printable", qp, []byte("/ack 1")})

	for _, tc := range cases {
		for _, lf := range []bool{false, true} {
			name := tc.name
			msg := tc.msg
			if lf {
				name += " LF"
				msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
			}
			t.Run(name, func(t *testing.T) {
				v, err := Verify(msg, trusted, Options{})
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				if v.Fingerprint != fpr || time.Since(v.Signed) > time.Hour {
					t.Errorf("Fingerprint, Signed = %s, %v; want %s, now", v.Fingerprint, v.Signed, fpr)
				}
				if !bytes.Equal(v.Bytes, tc.want) {
					t.Errorf("Bytes = %q\nwant %q", v.Bytes, tc.want)
				}
				if _, err := parseEntity(v.Entity); err != nil {
					t.Errorf("Entity does not parse: %v", err)
				}
				// Open finds the same, with or without a list key.
				for _, list := range []*Key{nil, detKeys(t).list} {
					m, err := Open(msg, list, trusted, Options{})
					if err != nil {
						t.Fatalf("Open = %v", err)
					}
					sv := m.Signature()
					if !sv.OK() || sv.Fingerprint != fpr || !sv.Signed.Equal(v.Signed) || sv.Hash != v.Hash ||
						!bytes.Equal(sv.SignedBytes(), tc.want) || !bytes.Equal(m.Content(), v.Entity) {
						t.Errorf("Open: %v (%v) by %s over %q, content %q", sv.Status, sv.Err, sv.Fingerprint, sv.SignedBytes(), m.Content())
					}
					if m.Encrypted() || !errors.Is(m.NotDecrypted(), ErrNotEncrypted) {
						t.Errorf("Open: encrypted %v, not decrypted %v", m.Encrypted(), m.NotDecrypted())
					}
				}
			})
		}
	}
}

// TestVerifyCharset: a PGP/MIME Entity is the signed part itself; a
// text/plain Entity built for inline text keeps the original charset.
func TestVerifyCharset(t *testing.T) {
	k := detKeys(t)
	msg, err := Sign(testOuter(t, "x"), []byte(innerText), k.member, fixedOpts(3))
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(msg, NewKeyring(k.member), fixedOpts(0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Entity, v.Bytes) {
		t.Error("PGP/MIME Entity should be the signed part")
	}
	e := textEntity([]byte("x\n"), "iso-8859-1")
	if !strings.Contains(string(e), "charset=iso-8859-1") || !bytes.HasSuffix(e, []byte("x\r\n")) {
		t.Errorf("textEntity = %q", e)
	}
}
