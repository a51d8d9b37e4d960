package listd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/smtpd/message"
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
}

// errBareLine means a rendered message is not clean CRLF: a bug, never sent
// (threats.md B2).
var errBareLine = errors.New("listd: rendered message has a bare CR or LF")

// bytes renders the message with CRLF line ends.
func (o *outMail) bytes() ([]byte, error) {
	var h mail.Header
	h.SetDate(o.Date)
	h.SetAddressList("From", []*mail.Address{o.From})
	h.SetAddressList("To", o.To)
	if o.ReplyTo != nil {
		h.SetAddressList("Reply-To", []*mail.Address{o.ReplyTo})
	}
	h.SetSubject(o.Subject)
	h.SetMessageID(o.MessageID)
	if o.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{o.InReplyTo})
	}
	if len(o.References) > 0 {
		h.SetMsgIDList("References", o.References)
	}
	if o.AutoSubmit != "" {
		h.Set("Auto-Submitted", o.AutoSubmit)
	}
	if o.ListID != "" {
		h.Set("List-Id", o.ListID)
		h.Set("Precedence", "list")
	}
	if o.XLoop != "" {
		h.Set("X-Loop", o.XLoop)
	}
	var buf bytes.Buffer
	body := strings.ReplaceAll(o.Body, "\r\n", "\n")
	if len(o.Attachments) == 0 {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		w, err := mail.CreateSingleInlineWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("listd: compose: %w", err)
		}
		if _, err := io.WriteString(w, body); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	} else {
		w, err := mail.CreateWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("listd: compose: %w", err)
		}
		var th mail.InlineHeader
		th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
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
			if ct == "" || strings.ContainsAny(ct, "\r\n\"") {
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
	}
	out := buf.Bytes()
	if !cleanCRLF(out) {
		return nil, errBareLine
	}
	return out, nil
}

// cleanCRLF reports whether every CR is followed by LF and every LF preceded by CR.
func cleanCRLF(b []byte) bool {
	for i, c := range b {
		switch c {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}
