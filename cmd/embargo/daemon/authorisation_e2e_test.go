package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// authFixture is a committee with one member of each key state: alice and
// bob (good keys), carol (her key expired half an hour ago), dave (his key
// revoked), a distributor with a good key, and someone whose key nobody
// pinned. The signatures that need a key's past are made before the
// daemon loads the keys.
type authFixture struct {
	h                       *daemontest.Harness
	alice, bob, dist, other *daemontest.GPG
	afpr, bfpr, dfpr, ofpr  string
	carolSigned, daveSigned []byte // "/accept", clear-signed while the keys were good
	id                      string
	seen                    int
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	f := &authFixture{alice: daemontest.NewGPG(t), bob: daemontest.NewGPG(t), dist: daemontest.NewGPG(t), other: daemontest.NewGPG(t)}
	f.afpr, f.bfpr = f.alice.GenKey("Alice <alice@ex.test>"), f.bob.GenKey("Bob <bob@ex.test>")
	f.dfpr, f.ofpr = f.dist.GenKey("Dist <dist@vendor.test>"), f.other.GenKey("Alice <alice@ex.test>")

	// Carol's key was made three days ago and expired 30 minutes ago; she
	// signed an hour ago, while it was good.
	carol := daemontest.NewGPG(t)
	made := time.Now().Add(-72 * time.Hour)
	life := fmt.Sprintf("seconds=%d", int((72*time.Hour - 30*time.Minute).Seconds()))
	carol.Must(nil, "--faked-system-time", fmt.Sprintf("%d!", made.Unix()), "--quick-gen-key", "Carol <carol@ex.test>", "ed25519", "sign,cert", life)
	cfpr := carol.Fingerprint("carol@ex.test")
	carol.Must(nil, "--faked-system-time", fmt.Sprintf("%d!", made.Unix()), "--quick-add-key", cfpr, "cv25519", "encr", life)
	f.carolSigned = carol.Must([]byte("/accept\n"), "--faked-system-time", fmt.Sprintf("%d!", time.Now().Add(-time.Hour).Unix()), "--clearsign", "-u", cfpr)

	// Dave signed, then revoked his key (GnuPG keeps a revocation
	// certificate for every key it makes).
	dave := daemontest.NewGPG(t)
	vfpr := dave.GenKey("Dave <dave@ex.test>")
	f.daveSigned = dave.Must([]byte("/accept\n"), "--clearsign", "-u", vfpr)
	rev, err := os.ReadFile(filepath.Join(dave.Dir(), "openpgp-revocs.d", vfpr+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	dave.ImportKey(regexp.MustCompile(`(?m)^:`).ReplaceAll(rev, nil))

	kd := daemontest.KeysDir(t, map[string][]byte{"alice": f.alice.Export(f.afpr), "bob": f.bob.Export(f.bfpr),
		"carol": carol.Export(cfpr), "dave": dave.Export(vfpr), "dist": f.dist.Export(f.dfpr)})
	members := daemontest.TOMLMember("alice@ex.test", f.afpr) + daemontest.TOMLMember("bob@ex.test", f.bfpr) +
		daemontest.TOMLMember("carol@ex.test", cfpr) + daemontest.TOMLMember("dave@ex.test", vfpr) +
		fmt.Sprintf("[[members]]\nemail = \"dist@vendor.test\"\nroles = [\"distributor\"]\nfingerprint = %q\n", f.dfpr)
	f.h = daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members}, daemon.Options{})
	pub := exportListKey(t, f.h, "security")
	for _, g := range []*daemontest.GPG{f.alice, f.bob, f.dist, f.other} {
		g.ImportKey(pub)
	}
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "auth table", "details"))
	msgs := f.settle()
	f.id = idRE.FindString(daemontest.Body(t, daemontest.To(msgs, "rep@out.test")[0]))
	return f
}

// settle waits until the relay has received nothing new for 300 ms and
// returns what arrived since the last call.
func (f *authFixture) settle() []queuetest.Message {
	n := -1
	for len(f.h.Rec.Messages()) != n {
		n = len(f.h.Rec.Messages())
		time.Sleep(300 * time.Millisecond)
	}
	all := f.h.Rec.Messages()
	out := all[f.seen:]
	f.seen = len(all)
	return out
}

func (f *authFixture) incident() workflow.Incident {
	var inc workflow.Incident
	f.h.D.View(func(tx *bolt.Tx) error {
		p, err := incidentdb.Get(tx, workflow.ID(f.id))
		if err == nil {
			inc = *p
		}
		return err
	})
	return inc
}

// inThread wraps a body in a message to the incident's thread.
func (f *authFixture) inThread(from, extraHeader, body string) string {
	return fmt.Sprintf("From: %s\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <%d@ex.test>\n%s\n%s",
		from, f.id, f.id, time.Now().UnixNano(), extraHeader, strings.ReplaceAll(body, "\r\n", "\n"))
}

// TestCommandAuthorisation is the authorisation table of the attack
// campaign (docs/threat-model.md E1–E5): a command message that must not
// count, who gets a receipt saying why (encrypted to their pinned key:
// nobody else, and nobody without a usable key), and the incident left as
// it was. The rows of TestCommandAttacks (unsigned, a 25-hour-old
// signature, another incident named, an unknown command, a quoted command,
// a replay) are not repeated here.
func TestCommandAuthorisation(t *testing.T) {
	f := newAuthFixture(t)
	clear := func(g *daemontest.GPG, fpr, text string) string {
		return string(g.Must([]byte(text), "--clearsign", "-u", fpr))
	}
	aliceAccept := clear(f.alice, f.afpr, "/accept\n")
	boundary := "----=_fwd"
	forwarded := "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"" + boundary + "\"\n\n--" + boundary +
		"\nContent-Type: text/plain\n\nFYI, alice's command below.\n--" + boundary + "\nContent-Type: message/rfc822\n\n" +
		f.inThread("alice@ex.test", "", aliceAccept) + "\n--" + boundary + "--\n"
	tests := []struct {
		name, from, header, body string
		receiptTo                string // "" none
		why                      string // in the receipt
		who                      *daemontest.GPG
	}{
		{"signed by a key nobody pinned, From a member", "alice@ex.test", "", clear(f.other, f.ofpr, "/accept\n"), "alice@ex.test", "not the one pinned for you", f.alice},
		{"signed by a member of another role (a distributor), From an SRC member", "alice@ex.test", "", clear(f.dist, f.dfpr, "/accept\n"), "dist@vendor.test", "you may not run /accept", f.dist},
		{"signed by an expired key", "carol@ex.test", "", string(f.carolSigned), "", "", nil},
		{"signed by a revoked key", "dave@ex.test", "", string(f.daveSigned), "", "", nil},
		{"partly signed: a command outside the signature", "alice@ex.test", "", "/accept\n\n" + clear(f.alice, f.afpr, "Looks good.\n"), "alice@ex.test", "part of the message is signed (text before the clear-signed block)", f.alice},
		{"a signed command forwarded as message/rfc822", "bob@ex.test", "", forwarded, "", "", nil},
	}
	before := f.incident()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := tc.header
			body := tc.body
			if strings.HasPrefix(body, "MIME-Version:") {
				hdr, body, _ = strings.Cut(body, "\n\n")
				hdr += "\n"
			}
			f.h.MustSend(tc.from, []string{"security+" + f.id + "@ex.test"}, f.inThread(tc.from, hdr, body))
			msgs := f.settle()
			inc := f.incident()
			if inc.Phase != before.Phase || len(inc.History) != len(before.History) || inc.FixLead != before.FixLead {
				t.Fatalf("the incident changed: phase %s, %d history entries, lead %q", inc.Phase, len(inc.History), inc.FixLead)
			}
			for _, m := range msgs {
				for _, to := range m.To {
					if to == tc.from && to != tc.receiptTo {
						t.Errorf("%s was answered", tc.from)
					}
				}
			}
			if tc.receiptTo == "" {
				return
			}
			receipts := 0
			for _, m := range daemontest.To(msgs, tc.receiptTo) {
				plain, _ := tc.who.DecryptMIME(m.Data)
				if text := daemontest.MIMEText(plain); strings.Contains(text, "Commands for") {
					receipts++
					daemontest.MustContain(t, "the receipt", text, tc.why)
				}
			}
			if receipts != 1 {
				t.Errorf("%d receipts to %s, want 1", receipts, tc.receiptTo)
			}
		})
	}
	// The table is not vacuous: alice's own signed /accept applies.
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"}, f.inThread("alice@ex.test", "", aliceAccept))
	f.settle()
	if inc := f.incident(); inc.Phase != workflow.PhaseFix {
		t.Errorf("a good /accept left the incident in %s", inc.Phase)
	}
}
