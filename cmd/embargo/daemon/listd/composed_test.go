package listd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// TestComposedHeadersAsRendered: the header blocks the Sealer writes from
// a composed spec are byte for byte those the transaction rendered before
// (sealSpec, signSpec): the header protected inside and the one relays
// see, for a committee copy, an acknowledgement (no threading outside)
// and a notice with extra fields, names and subjects that need RFC 2047,
// and a date in another zone. A field JSON or go-message cannot carry
// back unchanged is refused, so that the caller renders it as before.
func TestComposedHeadersAsRendered(t *testing.T) {
	s, _ := storeService(t, newStoreKeys(t))
	sec := s.o.Roster.List(lists.Security)
	date := time.Date(2026, 11, 23, 11, 0, 7, 0, time.FixedZone("CEST", 2*3600))
	copyMail := outMail{
		From:       &mail.Address{Name: "Zoë Ørsted via security", Address: "security@ex.test"},
		To:         []*mail.Address{{Name: "Alice", Address: "alice@ex.test"}},
		ReplyTo:    &mail.Address{Name: "ex.test Security", Address: "security@ex.test"},
		Subject:    "[SEC-2026-0001] Grüße: \"quoted\" <and> a long subject that has to be folded because it goes on and on",
		MessageID:  "report.0190000000000abcdef0123456789@ex.test",
		InReplyTo:  "thread.0190000000000123@ex.test",
		References: []string{"thread.0190000000000123@ex.test"},
		Date:       date, ListID: sec.ListID(), XLoop: sec.Address,
	}
	ack := outMail{
		From: s.listAddress(sec), To: []*mail.Address{{Address: "rep@out.test"}}, ReplyTo: s.reporterReplyTo(sec, &workflow.Incident{ID: "SEC-2026-0001"}),
		Subject: "[SEC-2026-0001] Vulnerability report received", MessageID: "ack.1@ex.test",
		InReplyTo: "r1@out.test", References: []string{"r1@out.test"}, Date: date, AutoSubmit: "auto-replied", XLoop: sec.Address,
	}
	notice := outMail{
		From: s.listAddress(sec), To: []*mail.Address{{Name: "Bob", Address: "bob@ex.test"}}, Subject: "[embargo] delivery failed",
		MessageID: "alert.2@ex.test", Date: date.UTC(), AutoSubmit: "auto-generated", XLoop: sec.Address,
		Extra: [][2]string{{"List-Post", "NO"}, {"X-Extra", "ünïcode"}},
	}
	for name, om := range map[string]outMail{"copy": copyMail, "ack": ack, "notice": notice} {
		outer := s.outerMail(sec, &om)
		for _, o := range []*outMail{&outer, nil} {
			spec, err := compose(&om, o, false, false)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_, gotIn, gotOut, err := readComposed(spec)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			assertSameHeader(t, name+" inner", gotIn, &om)
			if o == nil {
				if gotOut != nil {
					t.Errorf("%s: signed only, yet an outer header", name)
				}
				continue
			}
			assertSameHeader(t, name+" outer", gotOut, o)
		}
	}

	for name, bad := range map[string]func(*outMail){
		"subject not UTF-8":    func(o *outMail) { o.Subject = "a\xffb" },
		"LF in a Message-ID":   func(o *outMail) { o.InReplyTo = "a@b\nBcc: x@y" },
		"CR in a name":         func(o *outMail) { o.To = []*mail.Address{{Name: "A\rB", Address: "a@ex.test"}} },
		"extra field not UTF8": func(o *outMail) { o.Extra = [][2]string{{"X-A", "\xfe"}} },
	} {
		om := copyMail
		bad(&om)
		outer := s.outerMail(sec, &om)
		if _, err := compose(&om, &outer, false, false); !errors.Is(err, errNotComposable) {
			t.Errorf("%s: compose = %v, want errNotComposable", name, err)
		}
	}
	om := copyMail
	outer := s.outerMail(sec, &om)
	outer.Date = outer.Date.Add(time.Second)
	if _, err := compose(&om, &outer, false, false); !errors.Is(err, errNotComposable) {
		t.Errorf("an outer header that differs in a field the spec does not store: %v, want errNotComposable", err)
	}
}

func assertSameHeader(t *testing.T, name string, got, want *outMail) {
	t.Helper()
	g, err := headerBytes(got.header())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	w, err := headerBytes(want.header())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s: written at delivery\n%s\nwant, as rendered in the transaction\n%s", name, g, w)
	}
}

// TestComposedAckSameAfterRestart: the acknowledgement and the committee
// copies of a report are queued, the daemon stops before delivering them,
// and an hour later a new process on the reopened store delivers them. The
// acknowledgement is byte for byte the message the transaction used to
// render and sign (but for the MIME boundaries and the signature, which
// the boundaries change): the Date of the commit, the text rendered then,
// the list's key attached. Each copy decrypts to the header and text of
// the commit, as the transaction would have rendered it. The rows hold the
// text and the header's fields, not an entity or rendered header blocks.
func TestComposedAckSameAfterRestart(t *testing.T) {
	w := newSealWorld(t, 2)
	committed := w.now
	raw := plainMail("Rep <rep@out.test>", "security@ex.test", "overflow in the parser", "r1@out.test", "Steps to reproduce.\n")
	if err := w.s.Handle(context.Background(), reporterEnv, raw); err != nil {
		t.Fatal(err)
	}
	var ackRow queue.Row
	copyRows := map[string]queue.Row{}
	for _, r := range w.rows() {
		if r.Seal == nil || len(r.Seal.Compose) == 0 || len(r.Seal.Outer) > 0 || len(r.Seal.Inner) > 0 {
			t.Fatalf("row %s is not composed at delivery: %+v", r.Kind, r.Seal)
		}
		w.db.View(func(tx *bolt.Tx) error { r, _ = queue.Get(tx, r.ID); return nil })
		if bytes.Contains(r.Body, []byte("Content-Type")) {
			t.Errorf("row %s holds an entity, want the text", r.Kind)
		}
		if r.Kind == "ack" {
			ackRow = r
		} else {
			copyRows[r.To[0]] = r
		}
	}
	if ackRow.ID == 0 || bytes.Contains(ackRow.Body, []byte("Content-Type")) || bytes.Contains(ackRow.Body, []byte("PUBLIC KEY")) {
		t.Fatalf("the acknowledgement's row holds %q, want its text alone", ackRow.Body)
	}
	w.db.Close()

	w.advance(time.Hour) // a later process: delivery must not use its clock
	w.open()
	stop := w.worker(w.relay)
	w.settle()
	stop()

	sent := w.relay.to("rep@out.test")
	if len(sent) != 1 {
		t.Fatalf("the reporter got %d messages, want the acknowledgement", len(sent))
	}
	got, _ := os.ReadFile(sent[0].path)
	sec := w.o.Roster.List(lists.Security)
	text, err := w.o.Templates.Render("ack", map[string]any{"Project": "ex.test", "ID": "SEC-2026-0001",
		"IncidentAddress": "security+SEC-2026-0001@ex.test", "ListAddress": sec.Address, "KeyFingerprint": w.o.ListKey.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := w.o.ListKey.ArmoredPublic()
	want := outMail{ // what renderAck built and rendered in the transaction
		From:    &mail.Address{Name: "ex.test Security Response", Address: sec.Address},
		To:      []*mail.Address{{Address: "rep@out.test"}},
		ReplyTo: &mail.Address{Name: "ex.test Security", Address: sec.Address},
		Subject: "[SEC-2026-0001] Vulnerability report received", MessageID: ackRow.MessageID,
		InReplyTo: "r1@out.test", References: []string{"r1@out.test"}, Date: committed,
		AutoSubmit: "auto-replied", XLoop: sec.Address, Body: text,
		Attachments: []message.Attachment{{Name: "security-key.asc", Type: "application/pgp-keys", Data: pub}},
	}
	ent, err := want.entity()
	if err != nil {
		t.Fatal(err)
	}
	wantMsg, err := keys.Sign(want.header(), ent, w.o.ListKey, w.s.keyOptions())
	if err != nil {
		t.Fatal(err)
	}
	if g, wm := normalizeMIME(got), normalizeMIME(wantMsg); g != wm {
		t.Errorf("acknowledgement delivered after a restart:\n%s\nwant, as the transaction rendered it:\n%s", g, wm)
	}
	if op, err := keys.Open(got, w.o.ListKey, keys.NewKeyring(w.o.ListKey), keys.Options{Now: w.clock}); err != nil || !op.Signature().OK() {
		t.Errorf("the acknowledgement does not verify: %v", err)
	}

	for addr, key := range w.secrets {
		sent := w.relay.to(addr)
		if len(sent) != 1 {
			t.Fatalf("%s got %d copies, want 1", addr, len(sent))
		}
		data, _ := os.ReadFile(sent[0].path)
		dec, err := keys.Decrypt(data, key, nil, keys.Options{Now: w.clock})
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		// The inner message is what the transaction rendered: the copy's
		// header fields, protected, before the entity of the text.
		row := copyRows[addr]
		_, om, _, err := readComposed(row.Seal.Compose)
		if err != nil {
			t.Fatal(err)
		}
		om.Body = string(row.Body)
		ent, _ := om.entity()
		ib, _ := headerBytes(om.header())
		inner, err := keys.ProtectHeaderFields(bytes.NewReader(ent), ib)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := io.ReadAll(inner); !bytes.Equal(dec.Inner, want) {
			t.Errorf("%s's copy decrypts to\n%s\nwant\n%s", addr, dec.Inner, want)
		}
		m, err := message.Parse(dec.Inner, message.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "[SEC-2026-0001] overflow in the parser" || !m.Date.Equal(committed) ||
			!strings.Contains(m.Text, "Steps to reproduce.") || m.Header.Get("To") != "<"+addr+">" {
			t.Errorf("%s's copy: subject %q, date %v, to %q, text %q", addr, m.Subject, m.Date, m.Header.Get("To"), m.Text)
		}
	}
}

// normalizeMIME names a message's MIME boundaries by their order and drops
// its signature, which covers them: what stays is the same for the same
// message whatever boundaries were drawn.
func normalizeMIME(b []byte) string {
	s := string(b)
	for i, m := range regexp.MustCompile(`boundary="?([^";\r\n]+)"?`).FindAllStringSubmatch(s, -1) {
		s = strings.ReplaceAll(s, m[1], fmt.Sprintf("BOUNDARY-%d", i))
	}
	return regexp.MustCompile(`(?s)-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----`).ReplaceAllString(s, "SIGNATURE")
}
