package listd

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// keyEntity is a MIME entity with a text and an attached public key.
func keyEntity(text string, k *keys.Key) []byte {
	pub, _ := k.ArmoredPublic()
	return []byte("Content-Type: multipart/mixed; boundary=kb\r\n\r\n--kb\r\n" + textEntity + text + "\r\n--kb\r\n" +
		"Content-Type: application/pgp-keys\r\nContent-Disposition: attachment; filename=key.asc\r\n\r\n" +
		strings.ReplaceAll(strings.TrimSpace(string(pub)), "\n", "\r\n") + "\r\n--kb--\r\n")
}

// TestReporterKeys is the reporter-key table (docs/threat-model.md D5): one
// store, a sequence of messages, each with the key that must be pinned
// after it, the number of keys kept, how many SRC alerts it raises, and
// which key mail to the reporter is encrypted to.
func TestReporterKeys(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k, func(o *Options) { o.TrustedAuthservIDs = []string{"mx.ex.test"} })
	gen := func(name string) *keys.Key {
		key, err := keys.GenerateListKey(name, "rep@out.test", ko)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	k1, k2, k3, k4 := gen("first"), gen("attacker"), gen("rotated"), gen("later")
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	n := 0
	mid := func() string { n++; return fmt.Sprintf("m%d@out.test", n) }
	// plain is mail from addr with key attached and extra header fields.
	plain := func(from, to string, key *keys.Key, extra ...string) []byte {
		hdr := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Re: [SEC-2026-0001]\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n", from, to, mid())
		for _, e := range extra {
			hdr += e + "\r\n"
		}
		return append([]byte(hdr), keyEntity("here is my key", key)...)
	}
	signedBy := func(signer *keys.Key, from, to string, inner []byte) []byte {
		b, err := keys.Sign(outerHeader(from, to, "Re: [SEC-2026-0001]", mid()), inner, signer, sko)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	command := func(text string) []byte {
		return signedBy(k.alice, "alice@ex.test", "security+SEC-2026-0001@ex.test", []byte(textEntity+text))
	}
	const thread = "security+SEC-2026-0001@ex.test"
	steps := []struct {
		name     string
		from, to string
		raw      []byte
		pinned   *keys.Key // after the message; nil: none
		kept     int       // keys kept for the incident
		alerts   int       // reporter-key alerts this message raised (one per SRC member)
		replyKey *keys.Key // the key a /reply in this message is encrypted to; nil: no /reply or not encrypted
	}{
		{"the report with a key pins it", "rep@out.test", "security@ex.test", plain("rep@out.test", "security@ex.test", k1), k1, 1, 0, nil},
		{"a third party's key in From: the reporter is kept, unused", "mallory@evil.test", thread, plain("rep@out.test", thread, k2), k1, 2, 2, nil},
		{"the same key again raises nothing", "mallory@evil.test", thread, plain("rep@out.test", thread, k2), k1, 2, 0, nil},
		{"forged Authentication-Results do not replace a pinned key", "mallory@evil.test", thread,
			plain("rep@out.test", thread, k4, "Authentication-Results: mx.ex.test; dkim=pass header.d=out.test"), k1, 3, 2, nil},
		{"/reply is encrypted to the pinned key", "alice@ex.test", thread, command("/reply still there?\n"), k1, 3, 0, k1},
		{"a key signed by the pinned key replaces it", "rep@out.test", thread,
			signedBy(k1, "rep@out.test", thread, keyEntity("my new key", k3)), k3, 4, 2, nil},
		{"/reporter-key and /reply in one message: the reply goes to the chosen key", "alice@ex.test", thread,
			command("/reporter-key " + k1.Fingerprint() + "\n/reply back to the first key\n"), k1, 4, 0, k1},
		{"/reporter-key of a key that never arrived is refused", "alice@ex.test", thread,
			command("/reporter-key 0123456789ABCDEF0123456789ABCDEF01234567\n"), k1, 4, 0, nil},
		{"/reporter-key none unpins; /reply goes unencrypted", "alice@ex.test", thread, command("/reporter-key none\n/reply in clear\n"), nil, 4, 0, nil},
		{"with none pinned, a known key with an authenticated sender is not re-pinned", "rep@out.test", thread,
			plain("rep@out.test", thread, k3, "Authentication-Results: mx.ex.test; dkim=pass header.d=out.test"), nil, 4, 0, nil},
	}
	var alertsBefore int
	for _, st := range steps {
		if err := s.Handle(context.Background(), Envelope{From: st.from, To: []string{st.to}}, st.raw); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		inc := getIncident(t, db, "SEC-2026-0001")
		want := ""
		if st.pinned != nil {
			want = st.pinned.Fingerprint()
		}
		if inc.PinnedReporterKey != want || len(inc.ReporterKeys) != st.kept {
			t.Errorf("%s: pinned %q with %d kept, want %q with %d", st.name, inc.PinnedReporterKey, len(inc.ReporterKeys), want, st.kept)
		}
		alerts := sealRows(t, s, rowsOf(t, db, "alert-reporter-key"))
		if got := len(alerts) - alertsBefore; got != st.alerts {
			t.Errorf("%s: %d reporter-key alerts, want %d", st.name, got, st.alerts)
		}
		for _, a := range alerts[alertsBefore:] {
			text := decryptText(t, a.Data, map[string]*keys.Key{"alice@ex.test": k.alice, "bob@ex.test": k.bob}[a.To[0]])
			for _, x := range inc.ReporterKeys {
				if !strings.Contains(text, x.Fingerprint) {
					t.Errorf("%s: the alert does not name %s:\n%s", st.name, x.Fingerprint, text)
				}
			}
		}
		alertsBefore = len(alerts)
		if st.replyKey != nil || strings.Contains(st.name, "/reply") {
			replies := sealRows(t, s, rowsOf(t, db, "reporter-reply"))
			last := replies[len(replies)-1]
			_, err := keys.Decrypt(last.Data, st.replyKey, nil, keys.Options{Now: func() time.Time { return mon }})
			switch {
			case st.replyKey == nil && bytes.Contains(last.Data, []byte("multipart/encrypted")):
				t.Errorf("%s: the reply is encrypted, want it signed only", st.name)
			case st.replyKey != nil && err != nil:
				t.Errorf("%s: the reply does not decrypt with the expected key: %v", st.name, err)
			}
		}
	}
	// The refused /reporter-key said why, and the applied ones are in the history.
	receipts := sealRows(t, s, rowsOf(t, db, "receipt"))
	if text := decryptText(t, receipts[2].Data, k.alice); !strings.Contains(text, "no key with fingerprint 0123456789ABCDEF0123456789ABCDEF01234567 arrived") {
		t.Errorf("the refusal of an unknown fingerprint:\n%s", text)
	}
	inc := getIncident(t, db, "SEC-2026-0001")
	var hist []string
	for _, h := range inc.History {
		hist = append(hist, h.What)
	}
	if !strings.Contains(strings.Join(hist, "\n"), "pinned the reporter key "+k1.Fingerprint()) || !strings.Contains(strings.Join(hist, "\n"), "unpinned the reporter key") {
		t.Errorf("history: %q", hist)
	}
}

// TestReporterKeyAuthenticated: with no key pinned, a later key is pinned
// by itself only when a trusted MTA authenticated the From domain.
func TestReporterKeyAuthenticated(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k, func(o *Options) { o.TrustedAuthservIDs = []string{"mx.ex.test"} })
	k4, err := keys.GenerateListKey("later", "rep@out.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	k5, _ := keys.GenerateListKey("other", "rep@out.test", ko)
	report := plainMail("rep@out.test", "security@ex.test", "no key", "r1@out.test", "report\n")
	thread := "security+SEC-2026-0001@ex.test"
	msg := func(id string, key *keys.Key, ar string) []byte {
		return append([]byte(fmt.Sprintf("From: rep@out.test\r\nTo: %s\r\nSubject: key\r\nMessage-ID: <%s>\r\nAuthentication-Results: %s\r\n", thread, id, ar)), keyEntity("key", key)...)
	}
	for _, st := range []struct {
		name   string
		raw    []byte
		pinned string
		alerts int
	}{
		{"the report without a key", report, "", 0},
		{"an untrusted authserv-id's pass", msg("a1@out.test", k5, "evil.test; dkim=pass header.d=out.test"), "", 2},
		{"a trusted DKIM pass for the From domain", msg("a2@out.test", k4, "mx.ex.test; dkim=pass (2048-bit key; unprotected) header.d=out.test"), k4.Fingerprint(), 2},
	} {
		before := len(rowsOf(t, db, "alert-reporter-key"))
		if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{thread}}, st.raw); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		inc := getIncident(t, db, "SEC-2026-0001")
		if inc.PinnedReporterKey != st.pinned || len(rowsOf(t, db, "alert-reporter-key"))-before != st.alerts {
			t.Errorf("%s: pinned %q, alerts %d; want %q, %d", st.name, inc.PinnedReporterKey, len(rowsOf(t, db, "alert-reporter-key"))-before, st.pinned, st.alerts)
		}
	}
	inc := getIncident(t, db, "SEC-2026-0001")
	if rk, _ := inc.SeenReporterKey(k4.Fingerprint()); !strings.Contains(rk.Authenticated, "DKIM pass, d=out.test, checked by mx.ex.test") {
		t.Errorf("how the pinned key's sender was authenticated: %q", rk.Authenticated)
	}
}

// TestReporterKeyLegacy: an incident from before keys were tracked keeps
// its one key pinned, and a new key joins the list beside it.
func TestReporterKeyLegacy(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	old, _ := keys.GenerateListKey("old", "rep@out.test", ko)
	newer, _ := keys.GenerateListKey("new", "rep@out.test", ko)
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security@ex.test"}},
		plainMail("rep@out.test", "security@ex.test", "no key", "r1@out.test", "report\n")); err != nil {
		t.Fatal(err)
	}
	pub, _ := old.ArmoredPublic()
	db.Update(func(tx *bolt.Tx) error { _, err := incidentdb.SetReporterKey(tx, "SEC-2026-0001", pub); return err })
	db.View(func(tx *bolt.Tx) error {
		inc, _ := incidentdb.Get(tx, "SEC-2026-0001")
		if got := s.reporterKeyOf(tx, inc, mon); got == nil || got.Fingerprint() != old.Fingerprint() {
			t.Errorf("the legacy key is not the one mail is encrypted to: %v", got)
		}
		return nil
	})
	raw := append([]byte("From: rep@out.test\r\nTo: security+SEC-2026-0001@ex.test\r\nSubject: key\r\nMessage-ID: <l1@out.test>\r\n"), keyEntity("key", newer)...)
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security+SEC-2026-0001@ex.test"}}, raw); err != nil {
		t.Fatal(err)
	}
	inc := getIncident(t, db, "SEC-2026-0001")
	if inc.PinnedReporterKey != old.Fingerprint() || len(inc.ReporterKeys) != 2 || inc.ReporterKeys[0].Authenticated != "pinned before keys were tracked" {
		t.Errorf("after a new key: pinned %q, kept %+v", inc.PinnedReporterKey, inc.ReporterKeys)
	}
}

func getIncident(t *testing.T, db *bolt.DB, id workflow.ID) *workflow.Incident {
	t.Helper()
	var inc *workflow.Incident
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		inc, err = incidentdb.Get(tx, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return inc
}

// rowsOf returns the queued rows of one kind, in queue order, with data.
func rowsOf(t *testing.T, db *bolt.DB, kind string) []queue.Row {
	t.Helper()
	var out []queue.Row
	db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Kind != kind {
				continue
			}
			full, err := queue.Get(tx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, full)
		}
		return nil
	})
	return out
}

// sealRows makes each row's message as the delivery worker would (copies
// are sealed at delivery): Data then holds what the relay would get.
func sealRows(t *testing.T, s *Service, rows []queue.Row) []queue.Row {
	t.Helper()
	for i := range rows {
		if rows[i].Seal == nil {
			continue
		}
		data, err := s.Seal(&rows[i], bytes.NewReader(rows[i].Body))
		if err != nil {
			t.Fatalf("seal row %d (%s): %v", rows[i].ID, rows[i].Kind, err)
		}
		rows[i].Data = data
	}
	return rows
}
