package listd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

// Headers written at delivery.
//
// Every message runs its handler inside the one write transaction that
// all messages waiting share (commit.go), so what runs there bounds how
// many reports a second are taken in. The copies and the acknowledgement
// a report causes were rendered there whole: each copy's two header
// blocks (what relays see, and the header protected inside) and the MIME
// entities, the acknowledgement's with the list's key attached. A row now
// carries the header's fields instead (queue.Seal.Compose) and, for mail
// to the reporter and copies with nothing attached, the text; the Sealer
// writes the header blocks and the entity at delivery, with the same
// functions from the same fields, as it already signs and encrypts there
// (seal.go). What the message says is
// fixed when it is queued: the text is rendered in the transaction, every
// field is stored, and the message is byte for byte what the transaction
// would have written, but for the MIME boundary, random either way. Only
// the list's public key is attached at delivery: the key that signs it.
//
// A field that could not come back the same (not UTF-8, which JSON cannot
// carry; or a CR or LF, which go-message refuses in a header) makes the
// caller render as before, in the transaction, where such a field fails
// the message as it always did (docs/threat-model.md B10).

// composedAddr is a mail address as a composed spec stores it.
type composedAddr struct {
	Name    string `json:"name,omitempty"`
	Address string `json:"address"`
}

// composedOuter is what the header relays see of an encrypted copy says
// in place of the real one (Service.outerMail): every other field is the
// message's own.
type composedOuter struct {
	From    composedAddr  `json:"from"`
	ReplyTo *composedAddr `json:"reply_to,omitempty"`
	Subject string        `json:"subject"`
	// Unthreaded: no In-Reply-To or References outside (an automatic
	// reply: the reporter's Message-ID is not repeated in clear).
	Unthreaded bool `json:"unthreaded,omitempty"`
}

// composed is a queued message's composed spec: outMail's header fields,
// the outer header's own for an encrypted copy, and the form of the
// stored body.
type composed struct {
	From       composedAddr   `json:"from"`
	To         []composedAddr `json:"to,omitempty"`
	ReplyTo    *composedAddr  `json:"reply_to,omitempty"`
	Subject    string         `json:"subject"`
	MessageID  string         `json:"message_id"`
	InReplyTo  string         `json:"in_reply_to,omitempty"`
	References []string       `json:"references,omitempty"`
	Date       time.Time      `json:"date"`
	AutoSubmit string         `json:"auto_submit,omitempty"`
	ListID     string         `json:"list_id,omitempty"`
	XLoop      string         `json:"x_loop,omitempty"`
	Extra      [][2]string    `json:"extra,omitempty"`
	Outer      *composedOuter `json:"outer,omitempty"`
	// Text: the stored body is the text (outMail.Body) and the Sealer
	// writes the MIME entity, with the signing list's public key attached
	// when AttachKey. Without it the stored body is the entity.
	Text      bool `json:"text,omitempty"`
	AttachKey bool `json:"attach_key,omitempty"`
}

// errNotComposable means a field cannot travel in a composed spec: the
// caller renders the headers in the transaction instead.
var errNotComposable = errors.New("listd: a header field cannot be composed at delivery")

// compose is the spec of om (its body aside), with outer the header relays
// see (nil: signed only, om's own header), or errNotComposable.
func compose(om, outer *outMail, text, attachKey bool) ([]byte, error) {
	c := composed{
		To: make([]composedAddr, 0, len(om.To)), Subject: om.Subject, MessageID: om.MessageID,
		InReplyTo: om.InReplyTo, References: om.References, Date: om.Date, AutoSubmit: om.AutoSubmit,
		ListID: om.ListID, XLoop: om.XLoop, Extra: om.Extra, Text: text, AttachKey: attachKey,
	}
	ok := om.From != nil && fieldOK(om.From.Name, om.From.Address)
	if ok {
		c.From = composedAddr{om.From.Name, om.From.Address}
	}
	for _, a := range om.To {
		ok = ok && a != nil && fieldOK(a.Name, a.Address)
		if a != nil {
			c.To = append(c.To, composedAddr{a.Name, a.Address})
		}
	}
	c.ReplyTo, ok = optAddr(om.ReplyTo, ok)
	ok = ok && fieldOK(om.Subject, om.MessageID, om.InReplyTo, om.AutoSubmit, om.ListID, om.XLoop) && fieldOK(om.References...)
	for _, e := range om.Extra {
		ok = ok && fieldOK(e[0], e[1])
	}
	if outer != nil {
		o := &composedOuter{Subject: outer.Subject, Unthreaded: outer.InReplyTo == "" && len(outer.References) == 0}
		ok = ok && outer.From != nil && fieldOK(outer.From.Name, outer.From.Address, outer.Subject)
		if ok {
			o.From = composedAddr{outer.From.Name, outer.From.Address}
		}
		o.ReplyTo, ok = optAddr(outer.ReplyTo, ok)
		c.Outer = o
		// The outer header is the message's own but for these fields.
		ok = ok && sameOuter(om, outer, o.Unthreaded)
	}
	if !ok {
		return nil, errNotComposable
	}
	return json.Marshal(&c)
}

func optAddr(a *mail.Address, ok bool) (*composedAddr, bool) {
	if a == nil {
		return nil, ok
	}
	return &composedAddr{a.Name, a.Address}, ok && fieldOK(a.Name, a.Address)
}

// fieldOK reports whether values come back from JSON as they went in and
// make a header go-message writes.
func fieldOK(vs ...string) bool {
	for _, v := range vs {
		if !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n") {
			return false
		}
	}
	return true
}

// sameOuter checks that outer is om's header with only the fields
// composedOuter stores changed: what the Sealer rebuilds it from.
func sameOuter(om, outer *outMail, unthreaded bool) bool {
	if len(outer.To) != len(om.To) || len(outer.Extra) > 0 || outer.MessageID != om.MessageID ||
		!outer.Date.Equal(om.Date) || outer.AutoSubmit != om.AutoSubmit || outer.ListID != om.ListID || outer.XLoop != om.XLoop {
		return false
	}
	for i := range om.To {
		if outer.To[i] != om.To[i] {
			return false
		}
	}
	return unthreaded || outer.InReplyTo == om.InReplyTo && slices.Equal(outer.References, om.References)
}

// readComposed decodes a composed spec into the message's outMail (its
// body aside) and the outer header's (nil without one).
func readComposed(spec []byte) (*composed, *outMail, *outMail, error) {
	var c composed
	if err := json.Unmarshal(spec, &c); err != nil {
		return nil, nil, nil, fmt.Errorf("listd: composed spec: %w", err)
	}
	om := &outMail{
		From: c.From.addr(), ReplyTo: c.ReplyTo.addrOrNil(), Subject: c.Subject, MessageID: c.MessageID,
		InReplyTo: c.InReplyTo, References: c.References, Date: c.Date, AutoSubmit: c.AutoSubmit,
		ListID: c.ListID, XLoop: c.XLoop, Extra: c.Extra,
	}
	for _, a := range c.To {
		om.To = append(om.To, a.addr())
	}
	if c.Outer == nil {
		return &c, om, nil, nil
	}
	outer := &outMail{
		From: c.Outer.From.addr(), To: om.To, ReplyTo: c.Outer.ReplyTo.addrOrNil(), Subject: c.Outer.Subject,
		MessageID: om.MessageID, InReplyTo: om.InReplyTo, References: om.References, Date: om.Date,
		AutoSubmit: om.AutoSubmit, ListID: om.ListID, XLoop: om.XLoop,
	}
	if c.Outer.Unthreaded {
		outer.InReplyTo, outer.References = "", nil
	}
	return &c, om, outer, nil
}

func (a composedAddr) addr() *mail.Address { return &mail.Address{Name: a.Name, Address: a.Address} }

func (a *composedAddr) addrOrNil() *mail.Address {
	if a == nil {
		return nil
	}
	return a.addr()
}

// sealComposed makes a row's message from its composed spec and body: the
// headers written from the spec's fields, the entity from the stored text
// when the spec says so, then signed, or encrypted and signed, as Seal does
// with header blocks. Errors are permanent, but for reading the body.
func (s *Service) sealComposed(r *queue.Row, rd *readErr, signer *keys.Key) ([]byte, error) {
	sp := r.Seal
	c, om, outer, err := readComposed(sp.Compose)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	if sp.SignOnly && lists.Name(sp.Signer) == lists.Distributors {
		// docs/threat-model.md D6: the embargo list sends only ciphertext.
		return nil, queue.Permanent(errors.New("listd: the distributors list sends nothing unencrypted"))
	}
	if !sp.SignOnly && outer == nil {
		return nil, queue.Permanent(errors.New("listd: an encrypted copy's spec has no outer header"))
	}
	var ent []byte // the entity, whole: a text's, or for signing only
	if c.Text || sp.SignOnly {
		// ReadFrom wants MinRead bytes free before it reads: with room for
		// BodySize only, it would copy the whole body once more at EOF.
		stored := bytes.NewBuffer(make([]byte, 0, r.BodySize+bytes.MinRead))
		if _, err := stored.ReadFrom(rd); err != nil {
			return nil, err
		}
		ent = stored.Bytes()
	}
	if c.Text {
		om.Body = string(ent)
		if c.AttachKey {
			pub, err := s.signerPublic(sp.Signer, signer)
			if err != nil {
				return nil, queue.Permanent(err)
			}
			om.Attachments = []message.Attachment{listKeyAttachment(pub)}
		}
		if ent, err = om.entity(); err != nil {
			return nil, queue.Permanent(err)
		}
	}
	if sp.SignOnly {
		out, err := keys.Sign(om.header(), ent, signer, s.keyOptions())
		if err != nil {
			return nil, queue.Permanent(err)
		}
		return out, nil
	}
	to, err := s.sealKey(r)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	ob, err := headerBytes(outer.header())
	if err != nil {
		return nil, queue.Permanent(err)
	}
	ib, err := headerBytes(om.header())
	if err != nil {
		return nil, queue.Permanent(err)
	}
	body := io.Reader(rd) // a stored entity is read a chunk at a time, as Seal does
	if ent != nil {
		body = bytes.NewReader(ent)
	}
	inner, err := keys.ProtectHeaderFields(body, ib)
	if err != nil {
		return nil, rd.or(queue.Permanent(err))
	}
	var out bytes.Buffer
	out.Grow(len(ob) + 1024 + (max(len(ent), r.BodySize)+len(ib)+2048)*11/8)
	if err := keys.EncryptStreamFields(&out, ob, inner, to, signer, s.keyOptions()); err != nil {
		return nil, rd.or(queue.Permanent(err))
	}
	return out.Bytes(), nil
}

// signerPublic is the armored public key of the list that signs a row: the
// security list's is made once (listKeyArmored).
func (s *Service) signerPublic(list string, signer *keys.Key) ([]byte, error) {
	if lists.Name(list) == lists.Security && signer == s.o.ListKey {
		return s.listKeyArmored()
	}
	return signer.ArmoredPublic()
}

// listKeyAttachment attaches the security list's armored public key, as
// the acknowledgement does.
func listKeyAttachment(pub []byte) message.Attachment {
	return message.Attachment{Name: "security-key.asc", Type: "application/pgp-keys", Data: pub}
}
