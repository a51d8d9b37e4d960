package daemontest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
)

// GPG is a throw-away GnuPG home: the person at the other end of the
// mail, with nothing but gpg (docs/threat-model.md §2.1).
type GPG struct {
	t   testing.TB
	dir string
}

// NewGPG makes a GPG home; it skips the test where gpg is not installed.
func NewGPG(t testing.TB) *GPG {
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
	g := &GPG{t: t, dir: dir}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", dir, "--kill", "all").Run()
		os.RemoveAll(dir)
	})
	return g
}

// Run runs gpg in the home and returns its output and status lines.
func (g *GPG) Run(stdin []byte, args ...string) ([]byte, []byte, error) {
	g.t.Helper()
	full := append([]string{"--homedir", g.dir, "--batch", "--no-tty", "--status-fd", "2", "--trust-model", "always", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	cmd := exec.Command("gpg", full...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

// Must is Run, failing the test on an error.
func (g *GPG) Must(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, status, err := g.Run(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, status)
	}
	return out
}

var fprLine = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]{40}):`)

// GenKey makes an ed25519 signing key with a cv25519 encryption subkey.
func (g *GPG) GenKey(uid string) string {
	g.t.Helper()
	// Made three days ago, so tests can sign "in the past" with
	// --faked-system-time.
	past := fmt.Sprintf("%d!", time.Now().Add(-72*time.Hour).Unix())
	g.Must(nil, "--faked-system-time", past, "--quick-gen-key", uid, "ed25519", "sign,cert", "1y")
	fpr := g.Fingerprint(uid)
	g.Must(nil, "--faked-system-time", past, "--quick-add-key", fpr, "cv25519", "encr", "1y")
	return fpr
}

// Fingerprint is the fingerprint of the key with user ID uid in the home.
func (g *GPG) Fingerprint(uid string) string {
	g.t.Helper()
	out := g.Must(nil, "--with-colons", "--fingerprint", uid)
	m := fprLine.FindStringSubmatch(string(out))
	if m == nil {
		g.t.Fatalf("no fingerprint for %s:\n%s", uid, out)
	}
	return m[1]
}

// Export is the armored public key of fpr.
func (g *GPG) Export(fpr string) []byte { return g.Must(nil, "--armor", "--export", fpr) }

// ImportKey imports an armored key.
func (g *GPG) ImportKey(armored []byte) { g.Must(armored, "--import") }

// ArmorBlock finds an armored PGP message.
var ArmorBlock = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)

// DecryptMIME decrypts the armored block of a PGP/MIME message and returns the
// plaintext and gpg's status lines.
func (g *GPG) DecryptMIME(msg []byte) ([]byte, string) {
	g.t.Helper()
	block := ArmorBlock.Find(msg)
	if block == nil {
		g.t.Fatalf("no armored PGP message in:\n%s", msg)
	}
	out, status, err := g.Run(block, "--decrypt")
	if err != nil {
		g.t.Fatalf("gpg --decrypt: %v\n%s", err, status)
	}
	return out, string(status)
}

// VerifySigned checks a multipart/signed message with gpg: part 1 cut out
// byte for byte (RFC 3156 §5) against the detached signature.
func (g *GPG) VerifySigned(msg []byte) string {
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
	_, status, err := g.Run(nil, "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "part1"))
	if err != nil {
		g.t.Fatalf("gpg --verify: %v\n%s", err, status)
	}
	return string(status)
}

// KeysDir writes armored public keys into a keys_dir for the daemon.
func KeysDir(t testing.TB, keys map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, name+".asc"), k, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TOMLMember is a [[members]] entry of an SRC member with a pinned key.
func TOMLMember(email, fpr string) string {
	return fmt.Sprintf("[[members]]\nemail = %q\nroles = [\"src\"]\nfingerprint = %q\n", email, fpr)
}

// MIMEText decodes the text parts of a MIME entity (such as a decrypted
// PGP/MIME payload) so tests read what the recipient's client would show.
func MIMEText(b []byte) string {
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

// Dir is the GnuPG home, for a program that runs gpg itself (GNUPGHOME).
func (g *GPG) Dir() string { return g.dir }
