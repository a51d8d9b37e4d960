package daemon_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// This file drives mutt and neomutt (the Debian packages) as a member
// would, through a terminal: neither signs nor encrypts in batch mode, so
// each runs in a pseudo-terminal made by script(1) and is sent keys as a
// person would press them, once the screen shows what they answer.

// term is a program running in a pseudo-terminal.
type term struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// startTerm runs argv in a pseudo-terminal (script -q -f -e -c), in dir,
// with env.
func startTerm(t *testing.T, dir string, env []string, argv ...string) *term {
	t.Helper()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) (util-linux) not installed: mutt needs a terminal to sign and encrypt")
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	// Rows and columns for the curses screen; script passes its own
	// terminal size, which is none here.
	line := "stty rows 40 cols 120; exec " + strings.Join(quoted, " ")
	tm := &term{t: t, done: make(chan struct{})}
	tm.cmd = exec.Command(script, "-q", "-f", "-e", "-c", line, "/dev/null")
	tm.cmd.Dir, tm.cmd.Env = dir, env
	if tm.in, err = tm.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	tm.cmd.Stdout = tm
	tm.cmd.Stderr = tm
	if err := tm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tm.cmd.Wait(); close(tm.done) }()
	t.Cleanup(func() {
		select {
		case <-tm.done:
		default:
			tm.cmd.Process.Kill()
			<-tm.done
		}
	})
	return tm
}

func (tm *term) Write(p []byte) (int, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.Write(p)
}

// screen is what the program wrote so far, escape sequences removed.
func (tm *term) screen() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return ansi.ReplaceAllString(tm.out.String(), "")
}

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?>=]*[ -/]*[@-~]|\][^\x07]*\x07|P[^\x1b]*\x1b\\|[()][0-9A-B]|[=>78])`)

// expect waits until the screen, after from bytes, matches re; it returns
// the end of the match, or fails the test.
func (tm *term) expect(from int, re string, d time.Duration) int {
	tm.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for {
		s := tm.screen()
		if from > len(s) {
			from = len(s)
		}
		if loc := rx.FindStringIndex(s[from:]); loc != nil {
			return from + loc[1]
		}
		select {
		case <-tm.done:
			tm.t.Fatalf("%s exited before the screen showed %q:\n%s", tm.cmd.Args[len(tm.cmd.Args)-2], re, tail(tm.screen()))
		default:
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("the screen never showed %q:\n%s", re, tail(tm.screen()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (tm *term) press(keys string) {
	tm.t.Helper()
	if _, err := io.WriteString(tm.in, keys); err != nil {
		tm.t.Fatalf("press %q: %v", keys, err)
	}
}

// exit waits for the program to end.
func (tm *term) exit(d time.Duration) {
	tm.t.Helper()
	select {
	case <-tm.done:
	case <-time.After(d):
		tm.t.Fatalf("%s did not exit:\n%s", tm.cmd.Args, tail(tm.screen()))
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

// muttClient is one configuration of mutt or neomutt for a member.
type muttClient struct {
	prog  string // "mutt" or "neomutt"
	gpgme bool   // crypt_use_gpgme, else the classic gpg commands
	// sign, encrypt: crypt_autosign and crypt_replysign,
	// crypt_autoencrypt and crypt_replyencrypt.
	sign, encrypt bool
	inline        bool   // pgp_autoinline: traditional inline signatures
	flowed        bool   // text_flowed
	smtpURL       string // neomutt's smtp_url; else sendmail, a script that keeps the message
	below         bool   // the commands below the quote, else above
	from          string // the sender, "Name <addr>"; default alice
}

// muttRun is one member's mutt: a home, a configuration, and where the
// sent message lands.
type muttRun struct {
	dir, sent string
	env       []string
}

// classicPGP are the classic gpg commands of Debian's /etc/Muttrc.d/gpg.rc.
const classicPGP = `set pgp_decode_command="gpg --status-fd=2 %?p?--passphrase-fd 0 --pinentry-mode=loopback? --no-verbose --quiet --batch --output - %f"
set pgp_verify_command="gpg --status-fd=2 --no-verbose --quiet --batch --output - --verify %s %f"
set pgp_decrypt_command="gpg --status-fd=2 %?p?--passphrase-fd 0 --pinentry-mode=loopback? --no-verbose --quiet --batch --output - %f"
set pgp_sign_command="gpg --no-verbose --batch --quiet --output - %?p?--passphrase-fd 0 --pinentry-mode=loopback? --armor --detach-sign --textmode %?a?-u %a? %f"
set pgp_clearsign_command="gpg --no-verbose --batch --quiet --output - %?p?--passphrase-fd 0 --pinentry-mode=loopback? --armor --textmode --clearsign %?a?-u %a? %f"
set pgp_encrypt_only_command="/usr/lib/mutt/pgpewrap gpg --batch --quiet --no-verbose --output - --encrypt --textmode --armor --always-trust -- -r %r -- %f"
set pgp_encrypt_sign_command="/usr/lib/mutt/pgpewrap gpg %?p?--passphrase-fd 0 --pinentry-mode=loopback? --batch --quiet --no-verbose --textmode --output - --encrypt --sign %?a?-u %a? --armor --always-trust -- -r %r -- %f"
set pgp_import_command="gpg --no-verbose --import %f"
set pgp_export_command="gpg --no-verbose --export --armor %r"
set pgp_verify_key_command="gpg --verbose --batch --fingerprint --check-sigs %r"
set pgp_list_pubring_command="gpg --no-verbose --batch --quiet --with-colons --with-fingerprint --with-fingerprint --list-keys %r"
set pgp_list_secring_command="gpg --no-verbose --batch --quiet --with-colons --with-fingerprint --with-fingerprint --list-secret-keys %r"
set pgp_good_sign="^\\[GNUPG:\\] GOODSIG"
set pgp_check_gpg_decrypt_status_fd
`

// setupMutt writes the member's configuration, an editor that puts the
// commands into the reply, and the sendmail stand-in, into a new home.
func setupMutt(t *testing.T, g *daemontest.GPG, c muttClient, fpr, commands string) *muttRun {
	t.Helper()
	if _, err := exec.LookPath(c.prog); err != nil {
		t.Skipf("%s not installed (Debian package %s)", c.prog, c.prog)
	}
	r := &muttRun{dir: t.TempDir()}
	r.sent = filepath.Join(r.dir, "sent.eml")
	os.MkdirAll(filepath.Join(r.dir, "Mail"), 0o700)
	sendmail := filepath.Join(r.dir, "sendmail")
	writeExec(t, sendmail, "#!/bin/sh\ncat > "+r.sent+".tmp && mv "+r.sent+".tmp "+r.sent+"\n")
	// The editor writes the command block above the quote (or below it),
	// as the member types it. mutt takes a file whose mtime, in whole
	// seconds, did not change for an unmodified message and aborts it;
	// Linux stamps files from a coarse clock that can lag time(2) by a
	// tick, so an editor this fast can, near a second's boundary, leave
	// the same second ("Aborted unmodified message", seen once under
	// -race). A person types for longer: the stamp is set far back.
	cmdFile := filepath.Join(r.dir, "commands.txt")
	daemontest.WriteFile(t, cmdFile, commands)
	editor := filepath.Join(r.dir, "editor")
	const edited = " > \"$1.new\" && mv \"$1.new\" \"$1\" && touch -m -d @1000000000 \"$1\"\n"
	if c.below {
		writeExec(t, editor, "#!/bin/sh\n{ cat \"$1\"; echo; cat "+cmdFile+"; }"+edited)
	} else {
		writeExec(t, editor, "#!/bin/sh\n{ cat "+cmdFile+"; echo; cat \"$1\"; }"+edited)
	}
	var rc strings.Builder
	if !c.gpgme {
		rc.WriteString(classicPGP)
	}
	fmt.Fprintf(&rc, "set crypt_use_gpgme=%s\n", yesNo(c.gpgme))
	fmt.Fprintf(&rc, "set pgp_default_key=%q\nset pgp_sign_as=%q\n", fpr, fpr)
	fmt.Fprintf(&rc, "set crypt_autosign=%s\nset crypt_autoencrypt=%s\nset crypt_replyencrypt=%s\nset crypt_replysign=%s\n",
		yesNo(c.sign), yesNo(c.encrypt), yesNo(c.encrypt), yesNo(c.sign))
	fmt.Fprintf(&rc, "set pgp_autoinline=%s\nset pgp_replyinline=%s\nset text_flowed=%s\n", yesNo(c.inline), yesNo(c.inline), yesNo(c.flowed))
	rc.WriteString("set crypt_protected_headers_write=yes\nset crypt_protected_headers_read=yes\n")
	from := c.from
	if from == "" {
		from = "Alice <alice@ex.test>"
	}
	fmt.Fprintf(&rc, "set from=%q\nset use_from=yes\nset realname=%q\nset hostname=\"ex.test\"\n", from, strings.TrimSpace(from[:strings.Index(from, "<")]))
	fmt.Fprintf(&rc, "set folder=%q\nset spoolfile=%q\nset record=\"\"\nset postponed=%q\n",
		filepath.Join(r.dir, "Mail"), filepath.Join(r.dir, "Mail"), filepath.Join(r.dir, "postponed"))
	fmt.Fprintf(&rc, "set editor=%q\nset edit_headers=no\nset autoedit=yes\nset fast_reply=yes\nset include=yes\nset reply_to=yes\n", editor)
	rc.WriteString("set charset=utf-8\nset send_charset=utf-8\nset move=no\nset confirmappend=no\nset mark_old=no\nset wait_key=no\nset pager_stop=yes\n")
	rc.WriteString("set quit=yes\nset beep=no\nset header_cache=\"\"\nset message_cachedir=\"\"\n")
	if c.smtpURL != "" {
		fmt.Fprintf(&rc, "set smtp_url=%q\nset ssl_starttls=no\nset ssl_force_tls=no\n", c.smtpURL)
	} else {
		fmt.Fprintf(&rc, "set sendmail=%q\n", sendmail)
	}
	daemontest.WriteFile(t, filepath.Join(r.dir, "muttrc"), rc.String())
	r.env = append(os.Environ(), "HOME="+r.dir, "GNUPGHOME="+g.Dir(), "TERM=xterm", "LC_ALL=C.UTF-8", "TMPDIR="+r.dir, "EDITOR="+editor)
	return r
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
}

// reply opens mbox (one message, the member's copy) in the client, replies
// to it with the commands, and sends. It returns the message as sent (nil
// with smtp_url: the daemon got it) and the screen.
func (r *muttRun) reply(t *testing.T, c muttClient, mbox []byte) ([]byte, string) {
	t.Helper()
	path := filepath.Join(r.dir, "copy.mbox")
	daemontest.WriteFile(t, path, string(mbox))
	tm := startTerm(t, r.dir, r.env, c.prog, "-n", "-F", filepath.Join(r.dir, "muttrc"), "-f", path)
	at := tm.expect(0, `r:Reply`, 20*time.Second) // the index, with the copy
	tm.press("\r")                                // read it: the protected Subject replaces "Encrypted message"
	at = tm.expect(at, `PrevPg`, 20*time.Second)  // the pager
	tm.press("r")
	at = tm.expect(at, `y:Send`, 20*time.Second) // the compose menu, with the commands written in
	tm.press("y")
	tm.expect(at, `Mail sent|Message sent`, 30*time.Second)
	tm.press("q")
	time.Sleep(200 * time.Millisecond)
	tm.press("q")
	tm.exit(10 * time.Second)
	if c.smtpURL != "" {
		return nil, tm.screen()
	}
	sent, err := os.ReadFile(r.sent)
	if err != nil {
		t.Fatalf("%s sent nothing: %v\n%s", c.prog, err, tail(tm.screen()))
	}
	return sent, tm.screen()
}

// compose writes a new message from draft (-H) and tries to send it; it
// returns the screen once the client stops at prompt.
func (r *muttRun) compose(t *testing.T, c muttClient, draft, prompt string) string {
	t.Helper()
	path := filepath.Join(r.dir, "draft")
	daemontest.WriteFile(t, path, draft)
	tm := startTerm(t, r.dir, r.env, c.prog, "-n", "-F", filepath.Join(r.dir, "muttrc"), "-H", path)
	at := tm.expect(0, `To: security`, 20*time.Second) // the recipients, from the draft
	tm.press("\r")
	at = tm.expect(at, `y:Send`, 20*time.Second)
	tm.press("y")
	tm.expect(at, prompt, 20*time.Second)
	return tm.screen()
}

// mboxOf wraps one message (CRLF, as relayed) in an mbox file (LF, with
// its From_ line and >From quoting).
func mboxOf(data []byte) []byte {
	lf := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	lf = regexp.MustCompile(`(?m)^(>*From )`).ReplaceAll(lf, []byte(">$1"))
	return append([]byte("From security@ex.test Mon Jan  1 00:00:00 2024\n"), append(lf, '\n')...)
}

// muttCases run mutt and neomutt.
func muttCases() []clientCase {
	const mutt, muttGPGME = "mutt 2.2.12, classic gpg", "mutt 2.2.12, GPGME"
	const neomutt = "NeoMutt 20220429, GPGME, its own SMTP client"
	replying := func(c muttClient, credit string) func(w *clientWorld, t *testing.T) []byte {
		return func(w *clientWorld, t *testing.T) []byte {
			if c.smtpURL == "-" {
				c.smtpURL = "smtp://" + w.h.Addr()
			}
			r := setupMutt(t, w.alice, c, w.afpr, "/set credit "+credit+"\n")
			sent, _ := r.reply(t, c, mboxOf(w.copy.Data))
			return sent
		}
	}
	return []clientCase{
		{name: "mutt-classic-reply-signed-encrypted", client: mutt, layout: "reply to the copy (Reply-To security@), PGP/MIME signed and encrypted, protected headers, above the quote",
			outcome: "applied", credit: "mutt classic", build: replying(muttClient{prog: "mutt", sign: true, encrypt: true}, "mutt classic")},
		{name: "mutt-gpgme-reply-signed-encrypted", client: muttGPGME, layout: "reply to the copy, PGP/MIME signed and encrypted, below the quote",
			outcome: "applied", credit: "mutt GPGME", build: replying(muttClient{prog: "mutt", gpgme: true, sign: true, encrypt: true, below: true}, "mutt GPGME")},
		{name: "mutt-classic-reply-signed", client: mutt, layout: "reply to the copy, PGP/MIME signed only (crypt_replyencrypt off), quoted-printable",
			outcome: "applied", credit: "mutt signed, Grüße", build: replying(muttClient{prog: "mutt", sign: true}, "mutt signed, Grüße")},
		{name: "mutt-classic-reply-inline", client: mutt, layout: "reply to the copy, traditional inline clear-signed (pgp_autoinline)",
			outcome: "applied", credit: "mutt inline", build: replying(muttClient{prog: "mutt", sign: true, inline: true}, "mutt inline")},
		{name: "neomutt-gpgme-reply-flowed", client: neomutt, layout: "reply to the copy, PGP/MIME signed and encrypted, format=flowed, sent straight to the daemon (smtp_url)",
			outcome: "applied", credit: "NeoMutt flowed", build: replying(muttClient{prog: "neomutt", gpgme: true, sign: true, encrypt: true, flowed: true, smtpURL: "-"}, "NeoMutt flowed")},
		{name: "mutt-gpgme-reply-unsigned", client: muttGPGME, layout: "reply to the copy, encrypted but not signed",
			outcome: "refused", reason: "the message is not signed", build: replying(muttClient{prog: "mutt", gpgme: true, encrypt: true}, "mutt unsigned")},
		{name: "mutt-classic-new-to-list", client: mutt, layout: "new message to security@ with [ID] in the Subject, signed and encrypted",
			outcome: "applied", credit: "mutt new message", build: func(w *clientWorld, t *testing.T) []byte {
				c := muttClient{prog: "mutt", sign: true, encrypt: true}
				r := setupMutt(t, w.alice, c, w.afpr, "/set credit mutt new message\n")
				r.compose(t, c, "From: Alice <alice@ex.test>\nTo: security@ex.test\nSubject: ["+w.id+"] commands\n\nAlice\n", `Mail sent|Message sent`)
				return daemontest.ReadFile(t, r.sent)
			}},
		{name: "mutt-classic-new-to-incident-address", client: mutt, layout: "new message to security+ID@, encrypted", live: true,
			reason: "not sent: mutt asks \"Enter keyID for security+ID@\" (no key has that user ID)", build: func(w *clientWorld, t *testing.T) []byte {
				c := muttClient{prog: "mutt", sign: true, encrypt: true}
				r := setupMutt(t, w.alice, c, w.afpr, "/set credit never sent\n")
				r.compose(t, c, "From: Alice <alice@ex.test>\nTo: security+"+w.id+"@ex.test\nSubject: commands\n\nAlice\n", `Enter keyID for security\+`+w.id+`@ex\.test`)
				return nil
			}},
	}
}
