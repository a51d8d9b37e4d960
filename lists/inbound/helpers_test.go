package inbound

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/embargo-project/embargo/keys"
)

// gpg is one GnuPG home for a test, with its own agent.
type gpg struct {
	t   testing.TB
	dir string
	n   atomic.Int64
}

func newGPG(t testing.TB) *gpg {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed")
	}
	// gpg-agent's socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	g := &gpg{t: t, dir: dir}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = g.env()
		_ = cmd.Run()
		os.RemoveAll(dir)
	})
	return g
}

func (g *gpg) env() []string { return append(os.Environ(), "GNUPGHOME="+g.dir, "LC_ALL=C") }

// run runs gpg; stdout carries the status lines.
func (g *gpg) run(stdin []byte, args ...string) string {
	g.t.Helper()
	argv := append([]string{"--batch", "--no-tty", "--status-fd", "1", "--trust-model", "always",
		"--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	cmd := exec.Command("gpg", argv...)
	cmd.Env = g.env()
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		g.t.Fatalf("gpg %s: %v\n%s\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// output runs gpg with --output and returns what it wrote.
func (g *gpg) output(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out := filepath.Join(g.dir, fmt.Sprintf("out-%d", g.n.Add(1)))
	g.run(stdin, append([]string{"--output", out}, args...)...)
	b, err := os.ReadFile(out)
	if err != nil {
		g.t.Fatal(err)
	}
	return b
}

var keyCreated = regexp.MustCompile(`\[GNUPG:\] KEY_CREATED [PB] ([0-9A-F]{40})`)

// edKey makes an ed25519/cv25519 key and returns its fingerprint.
func (g *gpg) edKey(uid string) string {
	g.t.Helper()
	m := keyCreated.FindStringSubmatch(g.run(nil, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y"))
	if m == nil {
		g.t.Fatal("no KEY_CREATED")
	}
	g.run(nil, "--quick-add-key", m[1], "cv25519", "encr", "1y")
	return m[1]
}

// public exports fpr and reads it as a pinned key.
func (g *gpg) public(fpr string) *keys.Key {
	g.t.Helper()
	ks, err := keys.ReadPublicKeys(bytes.NewReader(g.output(nil, "--armor", "--export", fpr)))
	if err != nil || len(ks) != 1 {
		g.t.Fatalf("ReadPublicKeys: %v", err)
	}
	return ks[0]
}

// crlf canonicalises line ends to CRLF.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// qp encodes text as quoted-printable with CRLF line ends.
func qp(text string) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(crlf(text)))
	w.Close()
	return b.String()
}

// b64 encodes data as base64 in lines of 76.
func b64(data string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(data))
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.String()
}

// ent is a MIME entity: header lines, a blank line, the body (CRLF).
func ent(body string, header ...string) string {
	return crlf(strings.Join(header, "\n")+"\n\n") + crlf(body)
}

// multipart joins entities under boundary (RFC 2046 §5.1.1).
func multipart(boundary, preamble string, parts ...string) string {
	var b strings.Builder
	if preamble != "" {
		b.WriteString(crlf(preamble + "\n"))
	}
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.String()
}

// signPGPMIME wraps part as multipart/signed with a detached signature of
// part's CRLF bytes by fpr; sigHeader are the signature part's fields.
func (g *gpg) signPGPMIME(fpr, boundary, micalg, part string, sigHeader ...string) string {
	g.t.Helper()
	sig := g.output([]byte(part), "--local-user", fpr, "--digest-algo", strings.TrimPrefix(micalg, "pgp-"), "--armor", "--detach-sign")
	if len(sigHeader) == 0 {
		sigHeader = []string{`Content-Type: application/pgp-signature; name="signature.asc"`}
	}
	return ent(multipart(boundary, "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)", part, ent(string(sig), sigHeader...)),
		fmt.Sprintf(`Content-Type: multipart/signed; micalg=%s;`+"\n"+` protocol="application/pgp-signature";`+"\n"+` boundary="%s"`, micalg, boundary))
}

// encryptPGPMIME encrypts part to the list key (and signs it in one step
// with signer, if any) as multipart/encrypted.
func (g *gpg) encryptPGPMIME(to, signer, boundary, part string) string {
	g.t.Helper()
	args := []string{"--armor", "--recipient", to}
	if signer != "" {
		args = append(args, "--local-user", signer, "--sign")
	}
	ct := g.output([]byte(part), append(args, "--encrypt")...)
	return ent(multipart(boundary, "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
		ent("Version: 1\n", "Content-Type: application/pgp-encrypted", "Content-Description: PGP/MIME version identification"),
		ent(string(ct), `Content-Type: application/octet-stream; name="encrypted.asc"`, "Content-Description: OpenPGP encrypted message",
			`Content-Disposition: inline; filename="encrypted.asc"`)),
		`Content-Type: multipart/encrypted;`+"\n"+` protocol="application/pgp-encrypted";`+"\n"+` boundary="`+boundary+`"`)
}

// mail puts outer header fields (no Content-* fields) over a top-level
// entity.
func mail(entity string, header ...string) []byte {
	return []byte(crlf(strings.Join(header, "\n")+"\nMIME-Version: 1.0\n") + entity)
}
