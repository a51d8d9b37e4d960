package daemontest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"strings"
)

// The MIME builders of the end-to-end tests: messages laid out as mail
// clients send them, signed and encrypted by a real gpg.

// CRLF canonicalises line ends to CRLF (RFC 5322 §2.3).
func CRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// QP is text in quoted-printable (RFC 2045 §6.7), with CRLF line ends.
func QP(text string) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(CRLF(text)))
	w.Close()
	return b.String()
}

// Base64 is data in base64 (RFC 2045 §6.8), in lines of 76 characters.
func Base64(data string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(data))
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\r\n"
}

// Entity is a MIME entity: header lines, a blank line, the body (CRLF).
func Entity(body string, header ...string) string {
	return CRLF(strings.Join(header, "\n")+"\n\n") + CRLF(body)
}

// Multipart joins entities under boundary (RFC 2046 §5.1.1).
func Multipart(boundary, preamble string, parts ...string) string {
	var b strings.Builder
	if preamble != "" {
		b.WriteString(CRLF(preamble + "\n"))
	}
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	return b.String() + "--" + boundary + "--\r\n"
}

// SignedMIME wraps part as multipart/signed (RFC 3156 §5) with a detached
// signature of its bytes by fpr; sigHeader replaces the signature part's
// header.
func (g *GPG) SignedMIME(fpr, boundary, micalg, part string, sigHeader ...string) string {
	g.t.Helper()
	sig := g.Must([]byte(part), "--local-user", fpr, "--digest-algo", strings.TrimPrefix(micalg, "pgp-"), "--armor", "--detach-sign")
	if len(sigHeader) == 0 {
		sigHeader = []string{`Content-Type: application/pgp-signature; name="signature.asc"`}
	}
	return Entity(Multipart(boundary, "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)", part, Entity(string(sig), sigHeader...)),
		fmt.Sprintf(`Content-Type: multipart/signed; micalg=%s;`+"\n"+` protocol="application/pgp-signature";`+"\n"+` boundary="%s"`, micalg, boundary))
}

// EncryptedMIME encrypts part to the key to (signed in one pass by signer,
// if any) as multipart/encrypted (RFC 3156 §4, §6.2).
func (g *GPG) EncryptedMIME(to, signer, boundary, part string) string {
	g.t.Helper()
	args := []string{"--armor", "--recipient", to}
	if signer != "" {
		args = append(args, "--local-user", signer, "--sign")
	}
	ct := g.Must([]byte(part), append(args, "--encrypt")...)
	return Entity(Multipart(boundary, "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
		Entity("Version: 1\n", "Content-Type: application/pgp-encrypted", "Content-Description: PGP/MIME version identification"),
		Entity(string(ct), `Content-Type: application/octet-stream; name="encrypted.asc"`, "Content-Description: OpenPGP encrypted message",
			`Content-Disposition: inline; filename="encrypted.asc"`)),
		`Content-Type: multipart/encrypted;`+"\n"+` protocol="application/pgp-encrypted";`+"\n"+` boundary="`+boundary+`"`)
}
