package main

import (
	"bytes"
	"io"

	"fmt"
	gomessage "github.com/emersion/go-message"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gpgHome is a throw-away GnuPG home: the person at the other end of the
// mail, with nothing but gpg (docs/threats.md §2.1).
type gpgHome struct {
	t   *testing.T
	dir string
}

func newGPG(t *testing.T) *gpgHome {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed (.ci/run installs it)")
	}
	// gpg-agent's socket path must stay short: use a short temp dir.
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	g := &gpgHome{t: t, dir: dir}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", dir, "--kill", "all").Run()
		os.RemoveAll(dir)
	})
	return g
}

func (g *gpgHome) run(stdin []byte, args ...string) ([]byte, []byte, error) {
	g.t.Helper()
	full := append([]string{"--homedir", g.dir, "--batch", "--no-tty", "--status-fd", "2", "--trust-model", "always", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	cmd := exec.Command("gpg", full...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

func (g *gpgHome) must(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, status, err := g.run(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, status)
	}
	return out
}

var fprLine = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]{40}):`)

// genKey makes an ed25519 signing key with a cv25519 encryption subkey.
func (g *gpgHome) genKey(uid string) string {
	g.t.Helper()
	// Made three days ago, so tests can sign "in the past" with
	// --faked-system-time.
	past := fmt.Sprintf("%d!", time.Now().Add(-72*time.Hour).Unix())
	g.must(nil, "--faked-system-time", past, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y")
	out := g.must(nil, "--with-colons", "--fingerprint", uid)
	m := fprLine.FindStringSubmatch(string(out))
	if m == nil {
		g.t.Fatalf("no fingerprint for %s:\n%s", uid, out)
	}
	g.must(nil, "--faked-system-time", past, "--quick-add-key", m[1], "cv25519", "encr", "1y")
	return m[1]
}

func (g *gpgHome) export(fpr string) []byte { return g.must(nil, "--armor", "--export", fpr) }

func (g *gpgHome) importKey(armored []byte) { g.must(armored, "--import") }

var armorBlock = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)

// decryptMIME decrypts the armored block of a PGP/MIME message and returns the
// plaintext and gpg's status lines.
func (g *gpgHome) decryptMIME(msg []byte) ([]byte, string) {
	g.t.Helper()
	block := armorBlock.Find(msg)
	if block == nil {
		g.t.Fatalf("no armored PGP message in:\n%s", msg)
	}
	out, status, err := g.run(block, "--decrypt")
	if err != nil {
		g.t.Fatalf("gpg --decrypt: %v\n%s", err, status)
	}
	return out, string(status)
}

// verifySigned checks a multipart/signed message with gpg: part 1 cut out
// byte for byte (RFC 3156 §5) against the detached signature.
func (g *gpgHome) verifySigned(msg []byte) string {
	g.t.Helper()
	m := regexp.MustCompile(`boundary="?([^";\r\n]+)"?`).FindSubmatch(msg)
	if m == nil {
		g.t.Fatalf("no boundary in:\n%s", msg)
	}
	delim := []byte("--" + string(m[1]))
	parts := bytes.Split(msg, delim)
	if len(parts) < 4 {
		g.t.Fatalf("multipart/signed has %d pieces", len(parts))
	}
	part1 := bytes.TrimPrefix(parts[1], []byte("\r\n"))
	part1 = bytes.TrimSuffix(part1, []byte("\r\n")) // the CRLF before a delimiter belongs to it
	sig := parts[2][bytes.Index(parts[2], []byte("\r\n\r\n"))+4:]
	dir := g.t.TempDir()
	os.WriteFile(filepath.Join(dir, "part1"), part1, 0o600)
	os.WriteFile(filepath.Join(dir, "sig.asc"), sig, 0o600)
	_, status, err := g.run(nil, "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "part1"))
	if err != nil {
		g.t.Fatalf("gpg --verify: %v\n%s", err, status)
	}
	return string(status)
}

// keysDir writes armored public keys into a keys_dir for the daemon.
func keysDir(t *testing.T, keys map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, name+".asc"), k, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func tomlMember(email, fpr string) string {
	return fmt.Sprintf("[[members]]\nemail = %q\nroles = [\"src\"]\nfingerprint = %q\n", email, fpr)
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

// mimeText decodes the text parts of a MIME entity (such as a decrypted
// PGP/MIME payload) so tests read what the recipient's client would show.
func mimeText(b []byte) string {
	e, _ := gomessage.Read(bytes.NewReader(b)) // an unknown charset still reads
	if e == nil {
		return string(b)
	}
	var out strings.Builder
	e.Walk(func(_ []int, p *gomessage.Entity, _ error) error {
		if t, _, _ := p.Header.ContentType(); strings.HasPrefix(t, "text/") || t == "" {
			body, _ := io.ReadAll(p.Body)
			out.Write(body)
		}
		return nil
	})
	return out.String()
}
