package listd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// encCase is one entry point that authorises commands by a signature: the
// address the command goes to, its text, what must be in place first, and
// whether the command took effect.
type encCase struct {
	name, to, text string
	setup          func(t *testing.T, k *storeKeys, s *Service)
	applied        func(t *testing.T, db *bolt.DB) bool
}

// encCases are every entry point of docs/threat-model.md E1 and E3: the
// incident thread (commands.go), roster commands in an incident's thread
// and to the list alone, a proposal's thread (governance.go), and /oncall
// (tick.go).
func encCases(t *testing.T) []encCase {
	t.Helper()
	replies := func(kind string) func(t *testing.T, db *bolt.DB) bool {
		return func(t *testing.T, db *bolt.DB) bool { return len(rowsOf(t, db, kind)) > 0 }
	}
	var onCallBefore string
	onCall := func(db *bolt.DB) string {
		var st string
		db.View(func(tx *bolt.Tx) error { st = incidentdb.Meta(tx, metaOnCall); return nil })
		return st
	}
	return []encCase{
		{name: "incident thread", to: "security+SEC-2026-0001@ex.test", text: "/accept\n/lead me\n",
			applied: func(t *testing.T, db *bolt.DB) bool {
				return getIncident(t, db, "SEC-2026-0001").Phase != workflow.PhaseTriage
			}},
		{name: "roster command in an incident's thread", to: "security+SEC-2026-0001@ex.test", text: "/member list\n",
			applied: replies("member-list")},
		{name: "roster command to the list alone", to: "security@ex.test", text: "/member list\n", applied: replies("member-list")},
		{name: "proposal thread", to: "security+GOV-2026-0001@ex.test", text: "/admit\n",
			setup: func(t *testing.T, k *storeKeys, s *Service) {
				pub, err := k.applicant.ArmoredPublic()
				if err != nil {
					t.Fatal(err)
				}
				app := strings.ReplaceAll("From: person@newdistro.test\nTo: distributors+apply@ex.test\nSubject: application\nMessage-ID: <app1@newdistro.test>\n"+
					"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"+
					"Alias: security@newdistro.test\nProduct: New Distro\nMaintained: yes\nUsers: many\nRecord: https://newdistro.test/sec\n"+
					"Not-A-Rebuild: own\nCommunity: yes\nEmbargo: accepted\nContributes: reviews\n"+
					"\n--b\nContent-Type: application/pgp-keys\n\n"+string(pub)+"\n--b--\n", "\n", "\r\n")
				handleMail(t, s, "person@newdistro.test", "distributors+apply@ex.test", []byte(app))
			},
			applied: func(t *testing.T, db *bolt.DB) bool {
				var n int
				db.View(func(tx *bolt.Tx) error {
					st, err := govdb.Load(tx)
					if err != nil {
						t.Fatal(err)
					}
					if p, ok := st.Proposal("GOV-2026-0001"); ok {
						n = len(p.Approvals)
					}
					return nil
				})
				return n > 0
			}},
		{name: "/oncall to the list alone", to: "security@ex.test", text: "/oncall me\n",
			setup: func(t *testing.T, k *storeKeys, s *Service) { onCallBefore = onCall(s.o.DB) },
			applied: func(t *testing.T, db *bolt.DB) bool {
				st := onCall(db)
				var v workflow.OnCallState
				return st != onCallBefore && json.Unmarshal([]byte(st), &v) == nil
			}},
	}
}

// encWorld is a store with one report (SEC-2026-0001), alice and bob on the
// SRC, and [commands] require_encryption as given; the case's setup has run.
func encWorld(t *testing.T, k *storeKeys, require bool, c encCase) (*Service, *bolt.DB) {
	t.Helper()
	s, db := storeService(t, k, func(o *Options) {
		o.RequireEncryption = require
		o.Rotation = workflow.Rotation{Members: []string{"bob@ex.test"}} // alice is not on call: /oncall me changes it
	})
	handleMail(t, s, "rep@out.test", "security@ex.test", plainMail("rep@out.test", "security@ex.test", "heap overflow", "r1@out.test", "Steps to reproduce.\n"))
	if c.setup != nil {
		c.setup(t, k, s)
	}
	return s, db
}

func handleMail(t *testing.T, s *Service, from, to string, raw []byte) {
	t.Helper()
	if err := s.Handle(context.Background(), Envelope{From: from, To: []string{to}}, raw); err != nil {
		t.Fatalf("handle mail to %s: %v", to, err)
	}
}

// signedEntity is one PGP/MIME signature by signer over text, as a MIME
// entity without outer fields: the same signature can go out signed only,
// and again inside an encryption (RFC 3156 §6.1).
func signedEntity(t *testing.T, signer *keys.Key, text string) []byte {
	t.Helper()
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	ent, err := keys.Sign(mail.Header{}, []byte(textEntity+strings.ReplaceAll(text, "\n", "\r\n")), signer, sko)
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

// signedOnly is the signed entity under a header from alice to to.
func signedOnly(to, msgid string, ent []byte) []byte {
	return append([]byte(fmt.Sprintf("From: alice@ex.test\r\nTo: %s\r\nSubject: Re: commands\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n", to, msgid)), ent...)
}

// encryptedToList is ent encrypted to the list key, from alice to to;
// signer, when set, also signs in the same step (RFC 3156 §6.2).
func encryptedToList(t *testing.T, k *storeKeys, to, msgid string, ent []byte, signer *keys.Key) []byte {
	t.Helper()
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	raw, err := keys.Encrypt(outerHeader("alice@ex.test", to, "Encrypted message", msgid), ent, k.list, signer, sko)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// aliceReceipts are the decrypted receipts to alice, in queue order.
func aliceReceipts(t *testing.T, s *Service, db *bolt.DB, k *storeKeys) []string {
	t.Helper()
	var out []string
	for _, r := range sealRows(t, s, rowsOf(t, db, "receipt")) {
		if r.To[0] == "alice@ex.test" {
			out = append(out, decryptText(t, r.Data, k.alice))
		}
	}
	return out
}

// TestCommandsRequireEncryption: with [commands] require_encryption, a
// member's commands signed but not encrypted to the list key are refused at
// every entry point: nothing applied, a receipt to the signer (encrypted to
// their key) that says why and how to fix it, and the signature not
// recorded in the replay cache, so that the same signature sent again
// inside an encryption to the list key applies. Encrypted and signed in one
// step applies too; with the switch off, signed only applies as before
// (docs/threat-model.md E1, E3).
func TestCommandsRequireEncryption(t *testing.T) {
	k := newStoreKeys(t)
	for _, c := range encCases(t) {
		t.Run(c.name, func(t *testing.T) {
			s, db := encWorld(t, k, true, c)
			ent := signedEntity(t, k.alice, c.text)
			archived := func() int {
				var n int
				db.View(func(tx *bolt.Tx) error {
					for _, err := incidentdb.Message(tx, uint64(n+1)); err == nil; _, err = incidentdb.Message(tx, uint64(n+1)) {
						n++
					}
					return nil
				})
				return n
			}
			before := archived()
			for i := 1; i <= 2; i++ {
				// The second time the same signature comes again, signed
				// only: still this refusal, not a replay.
				handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, fmt.Sprintf("plain%d@ex.test", i), ent))
				if c.applied(t, db) {
					t.Fatalf("signed only, attempt %d: the command was applied", i)
				}
				rs := aliceReceipts(t, s, db, k)
				if len(rs) != i {
					t.Fatalf("signed only, attempt %d: %d receipts to alice, want %d", i, len(rs), i)
				}
				got := strings.Join(strings.Fields(rs[i-1]), " ") // the receipt is wrapped at 72 columns
				for _, want := range []string{
					"Nothing applied: this committee requires commands to be encrypted to the list key " + k.list.Fingerprint() +
						" as well as signed ([commands] require_encryption). Your message was signed by your pinned key " + k.alice.Fingerprint() + ", but not encrypted.",
					"Send the same commands again, signed and encrypted to security@ex.test",
					"gpg --sign --encrypt --armor -u " + k.alice.Fingerprint() + " -r " + k.list.Fingerprint(),
					"> " + strings.SplitN(c.text, "\n", 2)[0] + " not applied",
					"Sign it with your pinned key and encrypt it: this committee requires both.",
				} {
					if !strings.Contains(got, want) {
						t.Fatalf("signed only, attempt %d: the receipt lacks %q:\n%s", i, want, rs[i-1])
					}
				}
				if strings.Contains(rs[i-1], "replay") {
					t.Fatalf("attempt %d: the refused signature was recorded as seen:\n%s", i, rs[i-1])
				}
			}
			// The message itself is kept as any other (only its commands
			// are refused).
			if got := archived(); got != before+2 {
				t.Errorf("%d messages archived for the two refused ones, want 2", got-before)
			}
			// The same signature, now inside an encryption to the list key.
			handleMail(t, s, "alice@ex.test", c.to, encryptedToList(t, k, c.to, "enc1@ex.test", ent, nil))
			if !c.applied(t, db) {
				t.Fatalf("the same signature encrypted to the list key was not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
		})
		t.Run(c.name+", signed and encrypted in one step", func(t *testing.T) {
			s, db := encWorld(t, k, true, c)
			inner := []byte(textEntity + strings.ReplaceAll(c.text, "\n", "\r\n"))
			handleMail(t, s, "alice@ex.test", c.to, encryptedToList(t, k, c.to, "enc2@ex.test", inner, k.alice))
			if !c.applied(t, db) {
				t.Fatalf("not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
		})
		t.Run(c.name+", require_encryption off", func(t *testing.T) {
			s, db := encWorld(t, k, false, c)
			handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "plain@ex.test", signedEntity(t, k.alice, c.text)))
			if !c.applied(t, db) {
				t.Fatalf("signed only, with require_encryption off: not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
			}
			for _, r := range aliceReceipts(t, s, db, k) {
				if strings.Contains(r, "require_encryption") {
					t.Errorf("a receipt speaks of require_encryption while it is off:\n%s", r)
				}
			}
		})
	}
}

// TestRequireEncryptionReloads: [commands] require_encryption is a setting
// a reload (SIGHUP) puts in force for the next message, both ways.
func TestRequireEncryptionReloads(t *testing.T) {
	k := newStoreKeys(t)
	c := encCases(t)[0] // the incident thread
	s, db := encWorld(t, k, false, c)
	reload := func(on bool) {
		t.Helper()
		set := s.settings()
		set.RequireEncryption = on
		if err := s.Reload(set); err != nil {
			t.Fatal(err)
		}
	}
	reload(true)
	ent := signedEntity(t, k.alice, c.text)
	handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "plain1@ex.test", ent))
	if c.applied(t, db) {
		t.Fatal("require_encryption turned on by a reload: signed only was applied")
	}
	reload(false)
	handleMail(t, s, "alice@ex.test", c.to, signedOnly(c.to, "plain2@ex.test", ent))
	if !c.applied(t, db) {
		t.Fatalf("require_encryption turned off by a reload: signed only was not applied; receipts:\n%s", strings.Join(aliceReceipts(t, s, db, k), "\n-----\n"))
	}
}
