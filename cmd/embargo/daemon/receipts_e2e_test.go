package daemon_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// refusalWorld is a committee whose member Alice has, besides her pinned
// key, an expired and a revoked signing subkey on it, a second key nobody
// pinned, and a stranger (Mallory) with a key of his own.
type refusalWorld struct {
	*clientWorld
	alice2                 *daemontest.GPG
	a2fpr                  string
	mallory                *daemontest.GPG
	mfpr                   string
	expiredSub, revokedSub string // key IDs of Alice's signing subkeys
	signedByRevoked        []byte // clear-signed with the revoked subkey before it was revoked
}

var subkeyLine = regexp.MustCompile(`(?m)^sub:[a-z-]*:\d+:\d+:([0-9A-F]{16}):\d+:(\d*):[^\n]*:s:`)

func newRefusalWorld(t *testing.T) *refusalWorld {
	t.Helper()
	w := &refusalWorld{clientWorld: &clientWorld{alice: daemontest.NewGPG(t)}, alice2: daemontest.NewGPG(t), mallory: daemontest.NewGPG(t)}
	a := w.alice
	w.afpr = a.GenKey("Alice <alice@ex.test>")
	past := fmt.Sprintf("%d!", time.Now().Add(-72*time.Hour).Unix())
	// A signing subkey that lived one day, three days ago, and one that is
	// revoked below.
	a.Must(nil, "--faked-system-time", past, "--quick-add-key", w.afpr, "ed25519", "sign", "1d")
	a.Must(nil, "--faked-system-time", past, "--quick-add-key", w.afpr, "ed25519", "sign", "1y")
	subs := subkeyLine.FindAllStringSubmatch(string(a.Must(nil, "--with-colons", "--list-keys", w.afpr)), -1)
	if len(subs) != 2 {
		t.Fatalf("signing subkeys: %v", subs)
	}
	w.expiredSub, w.revokedSub = subs[0][1], subs[1][1]
	w.signedByRevoked = a.Must([]byte("/set credit revoked subkey\n"), "--local-user", w.revokedSub+"!", "--clearsign")
	// gpg --edit-key: revoke the second signing subkey (key 3: the
	// encryption subkey is key 1).
	a.Must([]byte("key 3\nrevkey\ny\n0\n\ny\nsave\n"), "--command-fd", "0", "--edit-key", w.afpr)
	w.a2fpr = w.alice2.GenKey("Alice <alice@ex.test>")
	w.mfpr = w.mallory.GenKey("Mallory <mallory@evil.test>")

	bob := daemontest.NewGPG(t)
	w.bfpr = bob.GenKey("Bob <bob@ex.test>")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": a.Export(w.afpr), "bob": bob.Export(w.bfpr)})
	members := daemontest.TOMLMember("alice@ex.test", w.afpr) + daemontest.TOMLMember("bob@ex.test", w.bfpr)
	w.h = daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members}, daemon.Options{})
	a.ImportKey(exportListKey(t, w.h, "security"))
	w.secFpr = a.Fingerprint("security@ex.test")
	w.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "heap overflow", "Steps."))
	msgs := w.next(t, 3)
	w.id = idRE.FindString(string(daemontest.To(msgs, "rep@out.test")[0].Data))
	return w
}

// threadMail is a member's message into the thread with the given body
// entity (header fields and body).
func (w *refusalWorld) threadMail(from, bodyEntity string) []byte {
	return []byte(daemontest.CRLF(fmt.Sprintf("From: %s\nTo: security+%s@ex.test\nSubject: Re: [%s] heap overflow\nMessage-ID: <%d@ex.test>\nDate: %s\nMIME-Version: 1.0\n",
		from, w.id, w.id, time.Now().UnixNano(), time.Now().UTC().Format(time.RFC1123Z))) + daemontest.CRLF(bodyEntity))
}

func (w *refusalWorld) clear(g *daemontest.GPG, text string, args ...string) string {
	return daemontest.Entity(string(g.Must([]byte(text), append(args, "--clearsign")...)), "Content-Type: text/plain; charset=utf-8")
}

// refusalCase is one way a member's command message fails.
type refusalCase struct {
	name   string
	from   string
	raw    func(w *refusalWorld) []byte
	reason []string // what the one receipt says: why, and how to fix it
}

func refusalCases() []refusalCase {
	const cmd = "/set credit should not apply\n"
	alice := "alice@ex.test"
	return []refusalCase{
		{"not signed", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, daemontest.Entity(cmd, "Content-Type: text/plain; charset=utf-8"))
		}, []string{"because the message is not signed", "Sign it with your pinned OpenPGP key"}},
		{"bad signature: changed after signing", alice, func(w *refusalWorld) []byte {
			signed := w.alice.SignedMIME(w.afpr, "sb", "pgp-sha256", daemontest.Entity(cmd+"\nTaking it.\n", "Content-Type: text/plain; charset=utf-8"))
			return w.threadMail(alice, strings.Replace(signed, "Taking it.", "Taking it!", 1))
		}, []string{"the signature does not match the message", "Send it again straight to the list"}},
		{"signed by a key not pinned for the member", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice2, cmd, "-u", w.a2fpr))
		}, []string{"your key is not the one pinned for you", "ask the SRC to rotate it"}},
		{"a stranger's signature under the member's From", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.mallory, cmd, "-u", w.mfpr))
		}, []string{"your key is not the one pinned for you"}},
		{"signature expired", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.afpr, "--default-sig-expire", "seconds=60",
				"--faked-system-time", fmt.Sprintf("%d!", time.Now().Add(-time.Hour).Unix())))
		}, []string{"has expired", "gpg --quick-set-expire"}},
		{"signing subkey expired", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.expiredSub+"!",
				"--faked-system-time", fmt.Sprintf("%d!", time.Now().Add(-71*time.Hour).Unix())))
		}, []string{"has expired", "Sign again with a current key"}},
		{"signing subkey revoked", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, daemontest.Entity(string(w.signedByRevoked), "Content-Type: text/plain; charset=utf-8"))
		}, []string{"is revoked", "ask the SRC to pin your new key"}},
		{"weak hash (SHA-1)", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.afpr, "--digest-algo", "SHA1"))
		}, []string{"weak hash (SHA-1)", "--digest-algo SHA256"}},
		{"partial: text before the clear-signed block", alice, func(w *refusalWorld) []byte {
			signed := string(w.alice.Must([]byte(cmd), "-u", w.afpr, "--clearsign"))
			return w.threadMail(alice, daemontest.Entity("/set credit unsigned\n\n"+signed, "Content-Type: text/plain; charset=utf-8"))
		}, []string{"only part of the message is signed", "no text outside the signature"}},
		{"partial: a list footer beside the signed part", alice, func(w *refusalWorld) []byte {
			signed := w.alice.SignedMIME(w.afpr, "sb", "pgp-sha256", daemontest.Entity(cmd, "Content-Type: text/plain; charset=utf-8"))
			return w.threadMail(alice, daemontest.Entity(daemontest.Multipart("lf", "", signed, daemontest.Entity("-- \nlist footer\n", "Content-Type: text/plain")),
				`Content-Type: multipart/mixed; boundary="lf"`))
		}, []string{"only part of the message is signed", "no list footer"}},
		{"the only signature is in a forwarded message", alice, func(w *refusalWorld) []byte {
			fwd := string(w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.afpr)))
			return w.threadMail(alice, daemontest.Entity(daemontest.Multipart("fw", "", daemontest.Entity(cmd, "Content-Type: text/plain; charset=utf-8"),
				daemontest.Entity(fwd, "Content-Type: message/rfc822")), `Content-Type: multipart/mixed; boundary="fw"`))
		}, []string{"inside a forwarded message", "Forwarded commands never count"}},
		{"two signatures", alice, func(w *refusalWorld) []byte {
			w.alice.ImportKey(w.alice2.Must(nil, "--armor", "--export-secret-keys", w.a2fpr))
			return w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.afpr, "-u", w.a2fpr))
		}, []string{"more than one signature", "Sign it once"}},
		{"unreadable signature", alice, func(w *refusalWorld) []byte {
			signed := w.alice.SignedMIME(w.afpr, "sb", "pgp-sha256", daemontest.Entity(cmd, "Content-Type: text/plain; charset=utf-8"))
			return w.threadMail(alice, regexp.MustCompile(`(?s)(-----BEGIN PGP SIGNATURE-----\r\n\r\n)[A-Za-z0-9+/]{10}`).ReplaceAllString(signed, "${1}!!!!!!!!!!"))
		}, []string{"the signature cannot be read", "RFC 3156"}},
		{"two command blocks", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, "/set credit one\n\n> quoted\n\n/set credit two\n", "-u", w.afpr))
		}, []string{"two command blocks: lines 1 and 5; put all commands in one block"}},
		{"an unknown command", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, cmd+"/frobnicate\n", "-u", w.afpr))
		}, []string{"/frobnicate: unknown command; send /help"}},
		{"a malformed argument", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, "/cvss not-a-vector\n", "-u", w.afpr))
		}, []string{"line 1: /cvss", "example: /cvss"}},
		{"a signature 25 hours old", alice, func(w *refusalWorld) []byte {
			return w.threadMail(alice, w.clear(w.alice, cmd, "-u", w.afpr, "--faked-system-time", fmt.Sprintf("%d!", time.Now().Add(-25*time.Hour).Unix())))
		}, []string{"more than 24 h ago: sign the commands again"}},
	}
}

// TestRefusalReceipts: every way a member's command message can fail gets
// exactly one receipt, encrypted to the member, that says nothing was
// applied, why, and how to fix it; the incident does not change. A stranger
// gets none.
func TestRefusalReceipts(t *testing.T) {
	w := newRefusalWorld(t)
	for _, c := range refusalCases() {
		t.Run(c.name, func(t *testing.T) {
			defer w.h.On(t)()
			before := w.incident(t)
			if err := daemontest.SendSMTP(w.h.Addr(), c.from, []string{"security+" + w.id + "@ex.test"}, c.raw(w)); err != nil {
				t.Fatalf("send: %v", err)
			}
			msgs := w.next(t, 2) // bob's copy and the receipt
			if len(daemontest.To(msgs, "alice@ex.test")) != 1 || len(daemontest.To(msgs, "bob@ex.test")) != 1 {
				t.Fatalf("alice got %d messages, bob %d; want one each:\n%s", len(daemontest.To(msgs, "alice@ex.test")), len(daemontest.To(msgs, "bob@ex.test")), daemontest.Summary(msgs))
			}
			rs := w.receipts(t, msgs)
			if len(rs) != 1 {
				t.Fatalf("%d receipts, want 1", len(rs))
			}
			daemontest.MustContain(t, "the receipt", unwrapped(rs[0]), append([]string{"othing was applied"}, c.reason...)...)
			if inc := w.incident(t); inc.Advisory.Credit != before.Advisory.Credit || len(inc.History) != len(before.History) {
				t.Errorf("the incident changed: credit %q, %d changes", inc.Advisory.Credit, len(inc.History))
			}
		})
	}
	t.Run("an unsigned /oncall outside any thread", func(t *testing.T) {
		defer w.h.On(t)()
		raw := []byte(daemontest.CRLF(fmt.Sprintf("From: alice@ex.test\nTo: security@ex.test\nSubject: on call\nMessage-ID: <%d@ex.test>\n\n/oncall me\n", time.Now().UnixNano())))
		if err := daemontest.SendSMTP(w.h.Addr(), "alice@ex.test", []string{"security@ex.test"}, raw); err != nil {
			t.Fatal(err)
		}
		// No report is opened: the one message is the receipt.
		msgs := w.next(t, 1)
		rs := w.receipts(t, msgs)
		if len(msgs) != 1 || len(rs) != 1 {
			t.Fatalf("got %d messages, %d receipts:\n%s", len(msgs), len(rs), daemontest.Summary(msgs))
		}
		daemontest.MustContain(t, "the receipt", unwrapped(rs[0]), "Commands for on-call", "because the message is not signed", "> /oncall me")
	})
	t.Run("a stranger gets nothing", func(t *testing.T) {
		defer w.h.On(t)()
		raw := w.threadMail("mallory@evil.test", w.clear(w.mallory, "/set credit mallory\n", "-u", w.mfpr))
		if err := daemontest.SendSMTP(w.h.Addr(), "mallory@evil.test", []string{"security+" + w.id + "@ex.test"}, raw); err != nil {
			t.Fatal(err)
		}
		// Not of the incident: a new report, acknowledged like any other;
		// nothing says the incident exists, no receipt, no change.
		msgs := w.next(t, 3)
		if rs := w.receipts(t, msgs); len(rs) != 0 {
			t.Errorf("a stranger's commands got receipts: %v", rs)
		}
		got := daemontest.To(msgs, "mallory@evil.test")
		if len(got) != 1 {
			t.Fatalf("the stranger got:\n%s", daemontest.Summary(msgs))
		}
		if hd := daemontest.Header(t, got[0]); !strings.Contains(hd.Get("Subject"), "Vulnerability report received") {
			t.Errorf("the stranger got %q", hd.Get("Subject"))
		}
		if inc := w.incident(t); inc.Advisory.Credit != "" {
			t.Errorf("a stranger changed the incident: %q", inc.Advisory.Credit)
		}
	})
}

// unwrapped undoes the wrapping of a mail body, for matching phrases.
func unwrapped(s string) string { return strings.Join(strings.Fields(s), " ") }
