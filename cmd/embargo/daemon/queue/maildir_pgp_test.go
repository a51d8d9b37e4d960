package queue

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/keys"
)

// TestMaildirSignedStillVerifies: a PGP/MIME signed message the list sends,
// written to the Maildir with LF line ends, still verifies with gpg once its
// part 1 is canonicalised to CRLF as a mail client does (RFC 3156 §5), and
// with keys.Verify on the file as it lies there.
func TestMaildirSignedStillVerifies(t *testing.T) {
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Skip("gpg not installed")
	}
	list, err := keys.GenerateListKey("Announce", "announce@embargo.test", keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: "announce@embargo.test"}})
	h.SetAddressList("To", []*mail.Address{{Address: "member@src.test"}})
	h.SetSubject("advisory")
	h.SetMsgIDList("Message-Id", []string{"adv-1@embargo.test"})
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Upgrade now.=20\r\nFrom here on\r\n.\r\n-- \r\nThe security team\r\n"
	signed, err := keys.Sign(h, []byte(inner), list, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "outbox")
	relay, err := NewMaildir(dir, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Send(t.Context(), "announce-bounces@embargo.test", []string{"member@src.test"}, signed); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(filepath.Join(dir, "new"))
	if len(files) != 1 {
		t.Fatalf("new/ holds %d files", len(files))
	}
	file, err := os.ReadFile(filepath.Join(dir, "new", files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(file, '\r') >= 0 {
		t.Fatal("the Maildir file has CR line ends")
	}

	// Cut part 1 and the signature out of the LF file by byte search.
	b := regexp.MustCompile(`boundary="?([^";\n]+)"?`).FindSubmatch(file)
	if b == nil {
		t.Fatal("no boundary")
	}
	delim := "--" + string(b[1])
	segs := strings.Split(string(file), "\n"+delim)
	if len(segs) != 4 { // header and preamble, part 1, part 2, "--" and the epilogue
		t.Fatalf("%d segments", len(segs))
	}
	part1 := strings.TrimPrefix(segs[1], "\n")
	sig := segs[2][strings.Index(segs[2], "\n\n")+2:]

	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	run := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command(gpg, append([]string{"--batch", "--no-tty", "--status-fd", "1", "--trust-model", "always"}, args...)...)
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home, "LC_ALL=C")
		cmd.Stdin = bytes.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String() + errb.String(), err
	}
	defer func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = cmd.Run()
	}()
	pub, _ := list.ArmoredPublic()
	if out, err := run(pub, "--import"); err != nil {
		t.Fatalf("gpg --import: %v\n%s", err, out)
	}
	write := func(name, data string) string {
		p := filepath.Join(home, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sigFile := write("sig.asc", sig)
	crlf := strings.ReplaceAll(part1, "\n", "\r\n")
	out, err := run(nil, "--verify", sigFile, write("part1.crlf", crlf))
	if err != nil || !strings.Contains(out, "[GNUPG:] GOODSIG") {
		t.Fatalf("gpg --verify of the canonicalised part 1: %v\n%s", err, out)
	}
	// The control: the same part with LF line ends does not verify, so the
	// check above is about canonicalisation and not a lucky byte match.
	if out, err := run(nil, "--verify", sigFile, write("part1.lf", part1)); err == nil || strings.Contains(out, "GOODSIG") {
		t.Errorf("gpg verified part 1 with LF line ends:\n%s", out)
	}

	trusted := keys.NewKeyring(list)
	if _, err := keys.Verify(file, trusted, keys.Options{Now: func() time.Time { return time.Now().Add(time.Minute) }}); err != nil {
		t.Errorf("keys.Verify of the Maildir file: %v", err)
	}
}
