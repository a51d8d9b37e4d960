package keys

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden and the fuzz seed corpus")

// fixedNow is the clock of every deterministic test.
var fixedNow = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// detRand returns a deterministic io.Reader (ChaCha8 from a fixed seed).
func detRand(seed byte) io.Reader {
	var s [32]byte
	for i := range s {
		s[i] = seed
	}
	return rand.NewChaCha8(s)
}

// fixedOpts gives byte-for-byte repeatable output.
func fixedOpts(seed byte) Options {
	return Options{
		Now:      func() time.Time { return fixedNow },
		Rand:     detRand(seed),
		Boundary: func() string { return "embargo-test-boundary" },
	}
}

// testKeys are deterministic go-generated keys shared by tests that do not
// need gpg. Generated once: key generation is cheap but not free under
// -race.
type testKeys struct {
	list, member, other *Key
}

var (
	tkOnce sync.Once
	tk     testKeys
	tkErr  error
)

func detKeys(t testing.TB) testKeys {
	t.Helper()
	tkOnce.Do(func() {
		gen := func(name, email string, seed byte) *Key {
			if tkErr != nil {
				return nil
			}
			k, err := GenerateListKey(name, email, Options{Now: func() time.Time { return fixedNow.Add(-24 * time.Hour) }, Rand: detRand(seed)})
			if err != nil {
				tkErr = err
			}
			return k
		}
		tk.list = gen("Example Security Team", "security@example.org", 1)
		tk.member = gen("Member One", "m1@src.test", 2)
		tk.other = gen("Stranger", "stranger@evil.test", 3)
	})
	if tkErr != nil {
		t.Fatal(tkErr)
	}
	return tk
}

// testOuter is the outer header used by builders.
func testOuter(t testing.TB, subject string) mail.Header {
	t.Helper()
	var h mail.Header
	h.SetDate(fixedNow)
	h.SetSubject(subject)
	h.SetAddressList("To", []*mail.Address{{Address: "m1@src.test"}})
	h.SetAddressList("From", []*mail.Address{{Name: "Security Team", Address: "security@example.org"}})
	h.SetMsgIDList("Message-Id", []string{"test-1@example.org"})
	return h
}

// innerText is a small quoted-printable text/plain entity.
const innerText = "Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"/embargo CVE-2025-0001 until 2025-04-01T12:00Z\r\n" +
	"trailing space=20\r\n" +
	"From the team.\r\n" +
	"-- \r\n" +
	"security@example.org\r\n"

// ---- gpg harness (docs/threat-model.md §2.1) ----

// gpgHome is one GnuPG home directory with its own agent.
type gpgHome struct {
	t   testing.TB
	dir string
	bin string
}

// newGPG makes a fresh GNUPGHOME for one test and kills its daemons when the
// test ends. It skips the test only if gpg is not installed.
func newGPG(t testing.TB) *gpgHome {
	t.Helper()
	bin, err := exec.LookPath("gpg")
	if err != nil {
		t.Skip("gpg not installed")
	}
	dir := t.TempDir()
	// gpg-agent's socket path must fit in sun_path (108 bytes) if the home
	// has no /run/user socket directory.
	if len(dir) > 60 {
		d, err := os.MkdirTemp("", "gpg")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, dir: dir, bin: bin}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = g.env()
		_ = cmd.Run()
	})
	return g
}

func (g *gpgHome) env() []string {
	return append(os.Environ(), "GNUPGHOME="+g.dir, "LC_ALL=C")
}

// run runs gpg with a fixed argv prefix and returns stdout (the status lines
// with --status-fd 1) and stderr.
func (g *gpgHome) run(stdin []byte, args ...string) (string, string, error) {
	g.t.Helper()
	argv := append([]string{"--batch", "--no-tty", "--status-fd", "1", "--trust-model", "always",
		"--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	cmd := exec.Command(g.bin, argv...)
	cmd.Env = g.env()
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// must runs gpg and fails the test on a non-zero exit.
func (g *gpgHome) must(stdin []byte, args ...string) string {
	g.t.Helper()
	out, errs, err := g.run(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

var keyCreated = regexp.MustCompile(`\[GNUPG:\] KEY_CREATED [PB] ([0-9A-F]{40})`)

// genKey runs --quick-gen-key and returns the new primary fingerprint.
func (g *gpgHome) genKey(uid, algo, usage, expire string, extra ...string) string {
	g.t.Helper()
	args := append(append([]string{}, extra...), "--quick-gen-key", uid, algo, usage, expire)
	out := g.must(nil, args...)
	m := keyCreated.FindStringSubmatch(out)
	if m == nil {
		g.t.Fatalf("gpg --quick-gen-key: no KEY_CREATED in %q", out)
	}
	return m[1]
}

// edKey makes the standard test key: ed25519 sign,cert + cv25519 encr.
func (g *gpgHome) edKey(uid, expire string) string {
	g.t.Helper()
	fpr := g.genKey(uid, "ed25519", "sign,cert", expire)
	g.must(nil, "--quick-add-key", fpr, "cv25519", "encr", expire)
	return fpr
}

// publicKey exports fpr and parses it.
func (g *gpgHome) publicKey(fpr string) *Key {
	g.t.Helper()
	out, _, err := g.run(nil, "--armor", "--export", fpr)
	if err != nil {
		g.t.Fatal(err)
	}
	ks, err := ReadPublicKeys(strings.NewReader(stripStatus(out)))
	if err != nil {
		g.t.Fatalf("ReadPublicKeys(gpg export %s): %v", fpr, err)
	}
	if len(ks) != 1 || ks[0].Fingerprint() != fpr {
		g.t.Fatalf("ReadPublicKeys(gpg export %s) = %d keys", fpr, len(ks))
	}
	return ks[0]
}

// export returns armored output of a gpg command without status lines.
func (g *gpgHome) export(args ...string) []byte {
	g.t.Helper()
	return []byte(stripStatus(g.must(nil, args...)))
}

func (g *gpgHome) importKey(armored []byte) {
	g.t.Helper()
	g.must(armored, "--import")
}

// stripStatus removes [GNUPG:] status lines from mixed stdout.
func stripStatus(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "[GNUPG:] ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// detachSign signs data (as given) with fpr: armored detached signature.
func (g *gpgHome) detachSign(data []byte, fpr string, extra ...string) []byte {
	g.t.Helper()
	out := filepath.Join(g.dir, fmt.Sprintf("sig-%d.asc", time.Now().UnixNano()))
	args := append([]string{"--local-user", fpr, "--detach-sign", "--armor", "--output", out}, extra...)
	g.must(data, args...)
	b, err := os.ReadFile(out)
	if err != nil {
		g.t.Fatal(err)
	}
	return b
}

// tmpFile writes data to a file in the gpg home and returns its path.
func (g *gpgHome) tmpFile(name string, data []byte) string {
	g.t.Helper()
	p := filepath.Join(g.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		g.t.Fatal(err)
	}
	return p
}

// statusHas reports whether status output has a line starting with prefix.
func statusHas(status, prefix string) bool {
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "[GNUPG:] "+prefix) {
			return true
		}
	}
	return false
}

// ---- message builders ----

// signedMIME wraps inner and an armored signature as multipart/signed.
func signedMIME(inner, sig []byte, boundary string) []byte {
	var b bytes.Buffer
	b.WriteString("From: Member One <m1@src.test>\r\nTo: security@example.org\r\nSubject: signed\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\"; boundary=\"%s\"\r\n\r\n", boundary)
	b.WriteString("This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n")
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.Write(inner)
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n", boundary)
	b.Write(toCRLF(sig))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// encryptedMIME wraps an armored message as multipart/encrypted.
func encryptedMIME(armored []byte, boundary string) []byte {
	var b bytes.Buffer
	b.WriteString("From: Member One <m1@src.test>\r\nTo: security@example.org\r\nSubject: ...\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n", boundary)
	b.Write(toCRLF(armored))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// plainMessage is a text/plain message with body as given.
func plainMessage(body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: Member One <m1@src.test>\r\nTo: security@example.org\r\nSubject: inline\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.Write(toCRLF(body))
	return b.Bytes()
}

// mixed builds a multipart/mixed message of the given raw entities.
func mixed(subtype, boundary string, parts ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: Member One <m1@src.test>\r\nTo: security@example.org\r\nSubject: mixed\r\n")
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: multipart/%s; boundary=\"%s\"\r\n\r\n", subtype, boundary)
	for _, p := range parts {
		fmt.Fprintf(&b, "--%s\r\n", boundary)
		b.Write(p)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

// asEntity turns a whole message into a MIME entity with only its
// Content-Type kept, for nesting as a part.
func asEntity(t testing.TB, msg []byte) []byte {
	t.Helper()
	e, err := parseEntity(toCRLF(msg))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("Content-Type: "+e.header.Get("Content-Type")+"\r\n\r\n"), e.body...)
}

// mustErrIs fails unless err wraps want and none of the other sentinels in
// distinct (so that each refusal has its own reason).
func mustErrIs(t testing.TB, what string, err, want error, distinct []error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
	for _, o := range distinct {
		if o != want && errors.Is(err, o) {
			t.Fatalf("%s: err = %v also matches %v", what, err, o)
		}
	}
}

// cutParts returns the raw parts of the top-level multipart of msg, cut by
// plain byte search (independently of the package's splitter).
func cutParts(t testing.TB, msg []byte) [][]byte {
	t.Helper()
	m := regexp.MustCompile(`boundary="?([^";\r\n]+)"?`).FindSubmatch(msg)
	if m == nil {
		t.Fatal("no boundary")
	}
	delim := []byte("\r\n--" + string(m[1]))
	var parts [][]byte
	start := bytes.Index(msg, delim[2:])
	if start < 0 {
		t.Fatal("no first delimiter")
	}
	pos := start + len(delim) - 2
	for {
		pos += bytes.Index(msg[pos:], []byte("\r\n")) + 2
		end := bytes.Index(msg[pos:], delim)
		if end < 0 {
			t.Fatal("no next delimiter")
		}
		parts = append(parts, msg[pos:pos+end])
		pos += end + len(delim)
		if bytes.HasPrefix(msg[pos:], []byte("--")) {
			return parts
		}
	}
}

// output runs a gpg command that writes data, with --output to a file, and
// returns what it wrote.
func (g *gpgHome) output(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out := filepath.Join(g.dir, fmt.Sprintf("out-%d", time.Now().UnixNano()))
	g.must(stdin, append([]string{"--output", out}, args...)...)
	b, err := os.ReadFile(out)
	if err != nil {
		g.t.Fatal(err)
	}
	os.Remove(out)
	return b
}
