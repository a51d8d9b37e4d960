package listd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
)

// outMail is one message embargo writes. Every header is set here through
// go-message, which refuses CR and LF in values (threats.md B10): nothing from a
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
// (threats.md B2).
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
		h.SetAddressList("Reply-To", []*mail.Address{o.ReplyTo})
	}
	h.SetDate(o.Date)
	h.SetSubject(o.Subject)
	h.SetAddressList("To", o.To)
	h.SetAddressList("From", []*mail.Address{o.From})
	return h
}

// entity renders the content: its MIME header fields, a blank line and the
// encoded body, 7-bit (quoted-printable text, base64 attachments), so that it
// can be signed as is (RFC 3156 §3).
func (o *outMail) entity() ([]byte, error) {
	var buf bytes.Buffer
	body := strings.ReplaceAll(o.Body, "\r\n", "\n")
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
		ah.SetFilename(name)
		// Base64 for every attachment: no inbound byte sequence reaches the
		// relay unencoded (threats.md B2).
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
	var b bytes.Buffer
	h := o.header()
	if err := textproto.WriteHeader(&b, h.Header.Header); err != nil {
		return nil, fmt.Errorf("listd: compose: %w", err)
	}
	b.Truncate(b.Len() - 2) // the entity's own fields follow, then its blank line
	if !bytes.HasPrefix(ent, []byte("Mime-Version:")) && !bytes.HasPrefix(ent, []byte("MIME-Version:")) {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	b.Write(ent)
	return checked(b.Bytes())
}

// signed renders the message as PGP/MIME multipart/signed by signer.
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

// sealed renders the message encrypted to exactly one key and signed by
// signer. Relays see outer only; the real header fields travel inside as
// protected headers (threats.md D7).
func (o *outMail) sealed(outer mail.Header, to, signer *keys.Key, ko keys.Options) ([]byte, error) {
	ent, err := o.entity()
	if err != nil {
		return nil, err
	}
	inner, err := keys.ProtectHeaders(ent, o.header())
	if err != nil {
		return nil, err
	}
	out, err := keys.Encrypt(outer, inner, to, signer, ko)
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
