package listd

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/lists/message"
)

// FuzzReportRender sends a report whose subject, sender's name, text and
// attachment name come from the fuzzer through the whole service, the
// templates included: the acknowledgement and the committee's copies are
// queued, then made as the delivery worker makes them (Seal) and checked
// by checkQueued: each is clean CRLF (docs/threat-model.md B2), carries no
// field but those the service writes, outside and inside its encryption
// (B10), and each member can read theirs; alice's protected Subject is the
// report's, tagged.
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
		alice := false
		for _, c := range checkQueued(t, s, db, 0, k.readers()) {
			if c.To[0] == "alice@ex.test" && c.Kind != "ack" {
				if !strings.HasPrefix(c.Subject, "[SEC-") {
					t.Errorf("protected Subject %q has no incident tag (report subject %q)", c.Subject, subject)
				}
				alice = true
			}
		}
		if !alice {
			t.Fatal("an accepted report queued no copy for alice")
		}
	})
}

// fuzzReport writes the report through go-message, as a mail client
// would: the fuzzed values encoded where they need it. Not with outMail,
// which cleans display names (cleanName): the sender's name must arrive
// as hostile as a client may send it.
func fuzzReport(subject, name, text, attName string) ([]byte, bool) {
	var atts []fuzzAttachment
	if attName != "" {
		atts = append(atts, fuzzAttachment{name: attName, data: []byte("proof of concept")})
	}
	return fuzzMail("rep@out.test", name, "security@ex.test", subject, "fuzz.report@out.test", text, atts...)
}

// fuzzAttachment is an attachment of fuzzMail: its file name, its type
// (application/octet-stream when empty) and its bytes.
type fuzzAttachment struct {
	name, ctype string
	data        []byte
}

// fuzzMail writes a message from name <from> to to as fuzzReport does:
// the text quoted-printable, each attachment base64. It reports false
// when go-message cannot write it, or writes a bare CR or LF.
func fuzzMail(from, name, to, subject, msgid, text string, atts ...fuzzAttachment) ([]byte, bool) {
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Name: name, Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetSubject(subject)
	h.SetMessageID(msgid)
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
	for _, a := range atts {
		var ah mail.AttachmentHeader
		if a.ctype != "" {
			ah.SetContentType(a.ctype, nil)
		}
		ah.SetFilename(a.name)
		ah.Set("Content-Transfer-Encoding", "base64")
		aw, err := w.CreateAttachment(ah)
		if err != nil {
			return nil, false
		}
		aw.Write(a.data)
		aw.Close()
	}
	if err := w.Close(); err != nil {
		return nil, false
	}
	return b.Bytes(), message.CleanLineEnds(b.Bytes())
}
