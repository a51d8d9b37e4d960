package listd

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/lists/message"
)

// FuzzCompose renders a message whose subject, display names, body, thread
// IDs, an extra field's value and an attachment come from the fuzzer (in
// the service they come from inbound mail and templates) and reads it back
// with go-message. Either rendering refuses the input, or the output is
// clean CRLF (docs/threat-model.md B2), carries only the fields outMail
// writes (B10: a CR or LF in a value adds none), and gives back the same
// subject, names, body and attachment.
func FuzzCompose(f *testing.F) {
	f.Add("heap overflow in the parser", "Reporter", "Details.\nMore.\n", "a1@example.net", "poc.c", "text/x-c", []byte("int main(){}"), "<mailto:security@example.org>")
	f.Add("Ünïcode subject ✓ =?utf-8?q?x?=", "Ré Porter, \"Jr\"", "line\r\nwith CRLF\r\n.\r\nFrom the start\n", "x@y", "", "", []byte(nil), "")
	f.Add("Subject\r\nBcc: victim@example.com", "Name\r\nX-Injected: 1", "body", "id\r\nX-Evil: 1", "evil\r\nname.txt", "text/plain\r\nX-Bad: 1", []byte("\x00\xff"), "v\r\nX-More: 1")
	f.Add(strings.Repeat("long subject ", 40), strings.Repeat("n", 200), strings.Repeat("x", 2000)+"\n", strings.Repeat("r", 300)+"@h", "a.bin", "application/octet-stream", bytes.Repeat([]byte{0}, 300), "")
	f.Fuzz(func(t *testing.T, subject, name, body, ref, attName, attType string, att []byte, extra string) {
		o := outMail{
			From:       &mail.Address{Name: "Security Response", Address: "security@example.org"},
			To:         []*mail.Address{{Name: name, Address: "alice@example.net"}},
			ReplyTo:    &mail.Address{Name: name, Address: "security+SEC-2026-0001@example.org"},
			Subject:    subject,
			MessageID:  "1a23a62c8b8fd4e29fe0aa02f79.src@example.org",
			InReplyTo:  ref,
			References: []string{ref, "1a23a62c8b8fd4e29fe0aa02f7a.thread@example.org"},
			Date:       time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC),
			AutoSubmit: "auto-generated",
			ListID:     "<security.example.org>",
			XLoop:      "security@example.org",
			Body:       body,
			Extra:      [][2]string{{"List-Post", extra}},
		}
		if att != nil || attName != "" {
			o.Attachments = []message.Attachment{{Name: attName, Type: attType, Data: att}}
		}
		out, err := o.plain()
		if errors.Is(err, errBareLine) {
			t.Fatalf("rendered with a bare CR or LF: %q", out)
		}
		if err != nil {
			return // refused whole: nothing is sent
		}
		r, err := mail.CreateReader(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("go-message cannot read what we rendered: %v\n%q", err, out)
		}
		for f := r.Header.Fields(); f.Next(); {
			if !outerFields[f.Key()] { // rendercheck_test.go
				t.Fatalf("field %q injected:\n%s", f.Key(), out)
			}
		}
		// Unfolding drops the white space at either end of a value
		// that is not encoded (RFC 5322 §2.2.3); invalid UTF-8 is not
		// expected back.
		if got, err := r.Header.Subject(); err != nil || got != subject && got != strings.Trim(subject, " \t") && utf8.ValidString(subject) {
			t.Errorf("Subject = %q (%v), want %q", got, err, subject)
		}
		// The display name comes back without control characters or
		// invalid bytes (cleanName), and without white space at its ends
		// when it was not encoded.
		clean := cleanName(name)
		if to, err := r.Header.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "alice@example.net" || to[0].Name != clean && to[0].Name != strings.TrimSpace(clean) {
			t.Errorf("To = %v (%v): the recipient changed", to, err)
		}
		text, atts := readBack(t, r)
		// Line ends come back as CRLF, a lone CR among them (quoted-printable
		// text has no other line end, RFC 2045 §6.7).
		lf := strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\r", "\n")
		if want := strings.ReplaceAll(lf, "\n", "\r\n"); text != want && utf8.ValidString(body) {
			t.Errorf("body read back differs:\n got %q\nwant %q", text, want)
		}
		if o.Attachments != nil && (len(atts) != 1 || !bytes.Equal(atts[0], att)) {
			t.Errorf("attachment read back differs: %d parts", len(atts))
		}
	})
}

// renderRead renders o and opens it with go-message, failing the test on
// either error.
func renderRead(t *testing.T, o outMail) ([]byte, *mail.Reader) {
	t.Helper()
	out, err := o.plain()
	if err != nil {
		t.Fatal(err)
	}
	r, err := mail.CreateReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	return out, r
}

// readBack returns the decoded text and the attachments' bytes.
func readBack(t *testing.T, r *mail.Reader) (string, [][]byte) {
	t.Helper()
	var text string
	var atts [][]byte
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return text, atts
		}
		if err != nil {
			t.Fatalf("reading a part back: %v", err)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("decoding a part: %v", err)
		}
		switch p.Header.(type) {
		case *mail.InlineHeader:
			text = string(b)
		case *mail.AttachmentHeader:
			atts = append(atts, b)
		}
	}
}

// TestCleanName: what a display name loses on its way into a header.
func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"Alice Example":   "Alice Example",
		`A\B "Jr"`:        `A\B "Jr"`, // ASCII: quoted, the backslash escaped
		`Ré\Porter`:       "RéPorter", // encoded: no backslash inside
		"x\x05y\x7fz":     "xyz",
		"bad \xfa byte":   "bad  byte",
		"tab\tand\u0085x": "tabandx",
	} {
		if got := cleanName(in); got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHeaderLooksEncoded: a subject or a display name that holds text
// shaped like an encoded word (an advisory's summary, set by a /set; a
// reporter's quoted name) reads back as written, never decoded into a CR
// LF and a field (docs/threat-model.md B10): not by go-message, and not by
// a reader that decodes encoded words inside quoted strings too, as Go's
// mime.WordDecoder does.
func TestHeaderLooksEncoded(t *testing.T) {
	ew := "=?UTF-8?Q?x=0D=0ABcc:_a@evil.test?="
	for _, v := range []string{
		"[EMBARGOED] CVE-2026-12345: " + ew,
		ew,
		"Ünïcode " + ew,
		strings.Repeat("ré "+ew+" ", 8),
		"=?", "a =? b ?= c",
	} {
		o := outMail{From: &mail.Address{Name: v + " via security", Address: "security@example.org"}, To: []*mail.Address{{Name: v, Address: "alice@example.net"}},
			Subject: v, MessageID: "m@example.org", Date: time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC), Body: "x\n"}
		out, r := renderRead(t, o)
		if got, err := r.Header.Subject(); err != nil || got != v {
			t.Errorf("Subject %q reads back as %q (%v):\n%s", v, got, err, out)
		}
		if to, err := r.Header.AddressList("To"); err != nil || len(to) != 1 || to[0].Name != v {
			t.Errorf("To name %q reads back as %v (%v)", v, to, err)
		}
		for _, k := range []string{"From", "To"} {
			if got, err := new(mime.WordDecoder).DecodeHeader(r.Header.Get(k)); err != nil || strings.ContainsAny(got, "\r\n") {
				t.Errorf("%s decodes to %q (%v):\n%s", k, got, err, out)
			}
		}
	}
}

// TestAttachmentNameLooksEncoded: an attachment's name shaped like an
// encoded word (a distributor's post carried one, FuzzDistributorPost)
// reads back as written, and no reader that decodes encoded words inside
// the Content-Disposition field finds a CR LF and a field there
// (docs/threat-model.md B10).
func TestAttachmentNameLooksEncoded(t *testing.T) {
	ew := "=?UTF-8?Q?a=0D=0AContent-Type:_text/html?="
	for _, name := range []string{ew, "poc " + ew + ".c", "Ünïcode " + ew, "=?", "a =? b ?= c"} {
		o := outMail{From: &mail.Address{Address: "security@example.org"}, Subject: "s", MessageID: "m@example.org",
			Date: time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC), Body: "x\n", Attachments: []message.Attachment{{Name: name, Type: "text/plain", Data: []byte("y")}}}
		out, r := renderRead(t, o)
		found := false
		for {
			p, err := r.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ah, ok := p.Header.(*mail.AttachmentHeader)
			if !ok {
				continue
			}
			found = true
			if got, err := ah.Filename(); err != nil || got != name {
				t.Errorf("attachment name %q reads back as %q (%v)", name, got, err)
			}
			if got, err := new(mime.WordDecoder).DecodeHeader(ah.Get("Content-Disposition")); err != nil || strings.ContainsAny(got, "\r\n") {
				t.Errorf("Content-Disposition decodes to %q (%v):\n%s", got, err, out)
			}
		}
		if !found {
			t.Errorf("%q: no attachment read back:\n%s", name, out)
		}
	}
}

// TestLoneCRKeepsLineEnds: a lone CR is a line end, and the line end after
// a byte that quoted-printable encodes survives (Go's writer dropped it:
// FuzzCompose, testdata/fuzz/FuzzCompose/20bdd19f70e11089).
func TestLoneCRKeepsLineEnds(t *testing.T) {
	for body, want := range map[string]string{
		"\r\x1d\n":     "\r\n\x1d\r\n",
		"a\rb\r\n":     "a\r\nb\r\n",
		"\r\xc3\xa9\n": "\r\né\r\n",
	} {
		o := outMail{From: &mail.Address{Address: "security@example.org"}, Subject: "s", MessageID: "m@example.org",
			Date: time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC), Body: body}
		_, r := renderRead(t, o)
		if got, _ := readBack(t, r); got != want {
			t.Errorf("body %q reads back as %q, want %q", body, got, want)
		}
	}
}
