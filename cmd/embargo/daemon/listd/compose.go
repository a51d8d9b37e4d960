package listd

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

// outMail is one message embargo writes. Every header is set here through
// go-message, which refuses CR and LF in values (docs/threat-model.md B10): nothing from a
// template or from inbound mail can add a header.
type outMail struct {
	From        *mail.Address
	To          []*mail.Address
	ReplyTo     *mail.Address
	Subject     string
	MessageID   string
	InReplyTo   string
	References  []string
	Date        time.Time
	AutoSubmit  string // RFC 3834 §5: "auto-replied", "auto-generated" or ""
	ListID      string // RFC 2919, e.g. "<security.example.org>"
	XLoop       string
	Body        string // LF line ends
	Attachments []message.Attachment
	Extra       [][2]string // further fields (List-Unsubscribe, List-Post), name and value
}

// errBareLine means a rendered message is not clean CRLF: a bug, never sent
// (docs/threat-model.md B2).
var errBareLine = errors.New("listd: rendered message has a bare CR or LF")

// header returns the message's header fields, without the MIME fields.
func (o *outMail) header() mail.Header {
	var h mail.Header
	// go-message's Set prepends: set in reverse so the fields come out in the
	// familiar order (From, To, Subject, Date first).
	for i := len(o.Extra) - 1; i >= 0; i-- {
		h.Add(o.Extra[i][0], o.Extra[i][1])
	}
	if o.XLoop != "" {
		h.Set("X-Loop", o.XLoop)
	}
	if o.ListID != "" {
		h.Set("Precedence", "list")
		h.Set("List-Id", o.ListID)
	}
	if o.AutoSubmit != "" {
		h.Set("Auto-Submitted", o.AutoSubmit)
	}
	if len(o.References) > 0 {
		h.SetMsgIDList("References", o.References)
	}
	if o.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{o.InReplyTo})
	}
	h.SetMessageID(o.MessageID)
	if o.ReplyTo != nil {
		setAddressList(&h, "Reply-To", cleanNames(o.ReplyTo))
	}
	h.SetDate(o.Date)
	setSubject(&h, o.Subject)
	setAddressList(&h, "To", cleanNames(o.To...))
	setAddressList(&h, "From", cleanNames(o.From))
	return h
}

// setSubject sets the Subject as go-message does, as encoded words
// (RFC 2047) where the text is not printable ASCII, and encodes a
// printable ASCII subject too when it holds "=?": written as it is, text
// that looks like an encoded word is decoded by the reader into what it
// encodes, a CR LF and a field included (docs/threat-model.md B10).
// FuzzNoticeRender found it in an advisory's summary, which a /set writes.
func setSubject(h *mail.Header, s string) {
	if !strings.Contains(s, "=?") {
		h.SetSubject(s)
		return
	}
	h.Set("Subject", encodeWords(s))
}

// setAddressList is go-message's SetAddressList, but for a display name
// that holds "=?": go-message writes a printable ASCII name as a quoted
// string, and readers decode an encoded word even there (RFC 2047 §5(3)
// forbids it; Go's mime.WordDecoder, Python's email and many MUAs do), so
// such a name is written as encoded words too (setSubject). A reporter's
// name reaches the From of the committee's copies (FuzzReportRender).
func setAddressList(h *mail.Header, key string, addrs []*mail.Address) {
	if len(addrs) == 0 {
		h.Del(key)
		return
	}
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
		if strings.Contains(a.Name, "=?") {
			parts[i] = encodeWords(a.Name) + " " + (&mail.Address{Address: a.Address}).String()
		}
	}
	h.Set(key, strings.Join(parts, ", "))
}

// encodeWords writes s as base64 encoded words of at most 75 characters
// (RFC 2047 §2), split between characters where s is UTF-8, and separated
// by spaces, which a decoder drops between encoded words (RFC 2047 §6.2).
func encodeWords(s string) string {
	const max = 45 // bytes a word carries: 60 base64 characters, 72 in all
	var words []string
	for len(s) > 0 {
		n := min(len(s), max)
		for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
			n--
		}
		if n == 0 {
			n = min(len(s), max)
		}
		words = append(words, "=?utf-8?b?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, " ")
}

// cleanNames returns the addresses with display names fit for a header
// (cleanName). The addresses themselves are left as they are.
func cleanNames(as ...*mail.Address) []*mail.Address {
	out := make([]*mail.Address, len(as))
	for i, a := range as {
		out[i] = a
		if a == nil || cleanName(a.Name) == a.Name {
			continue
		}
		c := *a
		c.Name = cleanName(a.Name)
		out[i] = &c
	}
	return out
}

// cleanName drops from a display name the control characters (C0, DEL,
// C1) and invalid bytes, and, from a name that must be written as an
// encoded word (not all ASCII), the backslashes: Go's encoder leaves a
// backslash bare inside the encoded word, where RFC 2047 §5(3) allows
// none, and go-message and net/mail then cannot read the address back
// (FuzzCompose found both); a recipient's MUA might not either. A roster
// name typed with a stray byte is the only way to get there.
func cleanName(n string) string {
	ascii := true
	for i := 0; i < len(n); i++ {
		ascii = ascii && n[i] < utf8.RuneSelf
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\\' && !ascii {
			return -1
		}
		return r
	}, n)
}

// entity renders the content: its MIME header fields, a blank line and the
// encoded body, 7-bit (quoted-printable text, base64 attachments), so that it
// can be signed as is (RFC 3156 §3).
//
// The copies of one message share this entity, which the queue stores once
// and the delivery worker seals for each recipient.
func (o *outMail) entity() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(o.entitySize()) // one allocation even for a 10 MB report
	// Every line end becomes LF, a lone CR included: quoted-printable text
	// has no lone CR (RFC 2045 §6.7), and Go's quotedprintable.Writer, given
	// one followed by a byte it encodes, drops the LF after that byte
	// ("\r\x1d\n" comes out "\r\n=1D"; found by FuzzCompose).
	body := strings.ReplaceAll(strings.ReplaceAll(o.Body, "\r\n", "\n"), "\r", "\n")
	if len(o.Attachments) == 0 {
		var h gomessage.Header
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		if err := writeEntity(&buf, h, strings.NewReader(body)); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	var h mail.Header
	h.SetContentType("multipart/mixed", nil)
	w, err := mail.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("listd: compose: %w", err)
	}
	var th mail.InlineHeader
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	th.Set("Content-Transfer-Encoding", "quoted-printable")
	tw, err := w.CreateSingleInline(th)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(tw, body); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	for i, a := range o.Attachments {
		var ah mail.AttachmentHeader
		ct := a.Type
		if ct == "" || strings.ContainsAny(ct, "\r\n\";") {
			ct = "application/octet-stream"
		}
		ah.SetContentType(ct, nil)
		name := a.Name
		if name == "" {
			name = fmt.Sprintf("attachment-%d", i+1)
		}
		if strings.Contains(name, "=?") {
			// Shaped like an encoded word: written as encoded words, as a
			// display name holding "=?" is (setAddressList). Readers decode
			// encoded words in a filename, quoted or in RFC 2231 form
			// (go-message, many mail clients; RFC 2047 §5 has none
			// there), and would decode this one into CR LF and a field;
			// encoded, it decodes to the name as written
			// (docs/threat-model.md B10).
			name = encodeWords(name)
		}
		ah.SetFilename(name)
		// Base64 for every attachment: no inbound byte sequence reaches the
		// relay unencoded (docs/threat-model.md B2).
		ah.Set("Content-Transfer-Encoding", "base64")
		aw, err := w.CreateAttachment(ah)
		if err != nil {
			return nil, err
		}
		if _, err := aw.Write(a.Data); err != nil {
			return nil, err
		}
		if err := aw.Close(); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// entitySize is a generous estimate of the entity's length: quoted-printable
// text grows by a few percent (up to 3 times for text full of non-ASCII
// bytes, where the buffer then grows once), base64 by 4/3 plus a CRLF every
// 76 characters.
func (o *outMail) entitySize() int {
	n := len(o.Body)*11/10 + 1024
	for _, a := range o.Attachments {
		n += len(a.Data)/57*78 + 80 + 512
	}
	return n
}

// writeEntity writes a single-part entity with h (no MIME-Version: this is a
// part, possibly inside a signature or encryption).
func writeEntity(w io.Writer, h gomessage.Header, body io.Reader) error {
	pw, err := gomessage.CreateWriter(w, h)
	if err != nil {
		return fmt.Errorf("listd: compose: %w", err)
	}
	if _, err := io.Copy(pw, body); err != nil {
		return err
	}
	return pw.Close()
}

// plain renders the message unsigned and unencrypted.
func (o *outMail) plain() ([]byte, error) {
	ent, err := o.entity()
	if err != nil {
		return nil, err
	}
	head, err := o.plainHead(ent)
	if err != nil {
		return nil, err
	}
	return checked(append(head, ent...))
}

// plainHead is what precedes ent in the plaintext message: the header
// fields and MIME-Version (unless ent, a multipart, has it).
func (o *outMail) plainHead(ent []byte) ([]byte, error) {
	b, err := headerBytes(o.header())
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(ent, []byte("Mime-Version:")) && !bytes.HasPrefix(ent, []byte("MIME-Version:")) {
		b = append(b, "MIME-Version: 1.0\r\n"...)
	}
	return b, nil
}

// headerBytes renders h's fields through go-message (which refuses CR and LF
// in values), CRLF line ends, without the blank line that ends a header.
func headerBytes(h mail.Header) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(1024) // a list message's header: grown once, not from 64 bytes up
	if err := textproto.WriteHeader(&b, h.Header.Header); err != nil {
		return nil, fmt.Errorf("listd: compose: %w", err)
	}
	b.Truncate(b.Len() - 2)
	return b.Bytes(), nil
}

// signed renders the message as PGP/MIME multipart/signed by signer (the
// announce list's message, which its fan-out sends as it is).
func (o *outMail) signed(signer *keys.Key, ko keys.Options) ([]byte, error) {
	ent, err := o.entity()
	if err != nil {
		return nil, err
	}
	out, err := keys.Sign(o.header(), ent, signer, ko)
	if err != nil {
		return nil, err
	}
	return checked(out)
}

// checked refuses a rendered message that is not clean CRLF.
func checked(b []byte) ([]byte, error) {
	if !message.CleanLineEnds(b) {
		return nil, errBareLine
	}
	return b, nil
}
