package listd

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

// outerFields are the header fields the service writes (outMail, and the
// list fields of the announce copies): a field outside them in what it
// renders was injected (docs/threat-model.md B10).
var outerFields = map[string]bool{
	"From": true, "To": true, "Reply-To": true, "Subject": true, "Date": true,
	"Message-Id": true, "In-Reply-To": true, "References": true,
	"Auto-Submitted": true, "Precedence": true, "List-Id": true, "X-Loop": true,
	"Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true,
	"List-Post": true, "List-Help": true, "List-Unsubscribe": true, "List-Unsubscribe-Post": true,
}

// FuzzReportRender sends a report whose subject, sender's name, text and
// attachment name come from the fuzzer through the whole service, the
// templates included: the acknowledgement and the committee's copies are
// queued, then made as the delivery worker makes them (Seal). Each is
// clean CRLF (docs/threat-model.md B2), carries no field but those the
// service writes, outside and inside its encryption (B10), and alice can
// read her copy, whose protected Subject is the report's, tagged.
func FuzzReportRender(f *testing.F) {
	k := newStoreKeys(f)
	f.Add("heap overflow in the parser", "Reporter", "Details.\nMore.\n", "poc.c")
	f.Add("Subject\r\nBcc: victim@example.com", "Name\r\nX-Injected: 1", "body\r\n.\r\nMAIL FROM:<x@y>\r\n", "evil\r\nname.txt")
	f.Add("=?UTF-8?Q?x=0D=0ABcc:_a@evil.test?=", "Ré\\Porter \u202e", "{{.ID}} {{template \"ack\"}}\n", "")
	f.Add(strings.Repeat("long ", 200), strings.Repeat("n", 300), strings.Repeat("x", 5000), strings.Repeat("a", 300))
	f.Fuzz(func(t *testing.T, subject, name, text, attName string) {
		s, db := storeService(t, k)
		raw, ok := fuzzReport(subject, name, text, attName)
		if !ok {
			return
		}
		env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}, Client: "192.0.2.1"}
		if err := s.Handle(context.Background(), env, raw); err != nil {
			return // refused: the sender is told, nothing is queued
		}
		var rows []queue.Row
		err := db.View(func(tx *bolt.Tx) error {
			list, err := queue.List(tx)
			for _, r := range list {
				if err != nil {
					break
				}
				r, err = queue.Get(tx, r.ID)
				rows = append(rows, r)
			}
			return err
		})
		if err != nil {
			t.Fatalf("reading the queue: %v", err)
		}
		alice := false
		for _, r := range rows {
			out := r.Data
			if r.Seal != nil {
				var err error
				if out, err = s.Seal(&r, bytes.NewReader(r.Body)); err != nil {
					t.Fatalf("row %s to %v: sealing failed: %v", r.Kind, r.To, err)
				}
			}
			checkCopy(t, r, out)
			if r.To[0] == "alice@ex.test" && r.Kind != "ack" {
				checkAliceCopy(t, out, k.alice, subject)
				alice = true
			}
		}
		if !alice {
			t.Fatalf("an accepted report queued no copy for alice (%d rows)", len(rows))
		}
	})
}

// fuzzReport writes the report through go-message, as a mail client
// would: the fuzzed values encoded where they need it. Not with outMail,
// which cleans display names (cleanName): the sender's name must arrive
// as hostile as a client may send it.
func fuzzReport(subject, name, text, attName string) ([]byte, bool) {
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Name: name, Address: "rep@out.test"}})
	h.SetAddressList("To", []*mail.Address{{Address: "security@ex.test"}})
	h.SetSubject(subject)
	h.SetMessageID("fuzz.report@out.test")
	h.SetDate(mon.Add(-time.Minute))
	var b bytes.Buffer
	w, err := mail.CreateWriter(&b, h)
	if err != nil {
		return nil, false
	}
	var th mail.InlineHeader
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	th.Set("Content-Transfer-Encoding", "quoted-printable")
	tw, err := w.CreateSingleInline(th)
	if err != nil {
		return nil, false
	}
	io.WriteString(tw, text)
	tw.Close()
	if attName != "" {
		var ah mail.AttachmentHeader
		ah.SetFilename(attName)
		ah.Set("Content-Transfer-Encoding", "base64")
		aw, err := w.CreateAttachment(ah)
		if err != nil {
			return nil, false
		}
		aw.Write([]byte("proof of concept"))
		aw.Close()
	}
	if err := w.Close(); err != nil {
		return nil, false
	}
	return b.Bytes(), message.CleanLineEnds(b.Bytes())
}

// checkCopy: clean CRLF, and only the service's own fields outside.
func checkCopy(t *testing.T, r queue.Row, out []byte) {
	t.Helper()
	if !message.CleanLineEnds(out) {
		t.Fatalf("row %s to %v: a bare CR or LF", r.Kind, r.To)
	}
	m, err := mail.CreateReader(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("row %s to %v: does not read back: %v", r.Kind, r.To, err)
	}
	for f := m.Header.Fields(); f.Next(); {
		if !outerFields[f.Key()] {
			t.Fatalf("row %s to %v: field %q injected", r.Kind, r.To, f.Key())
		}
	}
}

// checkAliceCopy decrypts alice's copy: the inner header has only the
// service's fields, and its Subject is the report's with the ID tag.
func checkAliceCopy(t *testing.T, out []byte, alice *keys.Key, subject string) {
	t.Helper()
	dec, err := keys.Decrypt(out, alice, nil, keys.Options{Now: func() time.Time { return mon }})
	if err != nil {
		t.Fatalf("alice cannot decrypt her copy: %v", err)
	}
	m, err := mail.CreateReader(bytes.NewReader(dec.Inner))
	if err != nil {
		t.Fatalf("the decrypted copy does not read back: %v", err)
	}
	for f := m.Header.Fields(); f.Next(); {
		if !outerFields[f.Key()] {
			t.Fatalf("field %q injected inside the encryption", f.Key())
		}
	}
	got, _ := m.Header.Subject()
	if !strings.HasPrefix(got, "[SEC-") {
		t.Errorf("protected Subject %q has no incident tag (report subject %q)", got, subject)
	}
}
