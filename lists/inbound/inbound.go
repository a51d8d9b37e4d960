// Package inbound opens an inbound message once, before any transaction
// (docs/design.md §1): its header facts are read, its protection classified,
// decrypted and verified (keys.Open), the text of what was signed (or of the
// message) decoded from its transfer encoding, charset and format=flowed
// (lists/message), and its command block parsed (workflow.Parse). The result
// is one immutable Message that every later stage reads; nothing re-parses
// the raw bytes and nothing changes the value.
//
// The package is pure: no I/O, no clock (the time comes in keys.Options). It
// sits apart from lists/message so that the MIME parser stays a leaf that
// needs neither OpenPGP nor the command grammar.
package inbound

import (
	"fmt"
	"slices"
	"time"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// Options say how to open a message.
type Options struct {
	// Limits bound the parse (set AllowUTF8 when the sender negotiated
	// SMTPUTF8).
	Limits message.Limits
	// ListKey is the key of the list the message was sent to; nil means
	// nothing is decrypted (keys.Opened.NotDecrypted says so).
	ListKey *keys.Key
	// Members are the pinned member keys: the only signers that count.
	Members *keys.Keyring
	// Keys carries the clock, randomness and plaintext cap.
	Keys keys.Options
}

// Message is one inbound message, opened. It is immutable: every method
// returns a value or a fresh copy, except the byte slices of Raw,
// Protection and Attachments, which are shared and must not be modified.
type Message struct {
	raw         []byte
	outer       *message.Message // header facts only
	prot        *keys.Opened
	subject     string
	signedHdr   []string // To, Cc and Subject of the signed entity (RFC 9788 §2)
	text        string
	htmlOmitted int
	attachments []message.Attachment
	commands    []workflow.Command
	commandErr  error
	hasCommands bool
}

// Open reads raw (the message as received) once. The error is a refusal
// to give the sender at once, with nothing stored:
//   - a *lists.Refusal: the header breaks a limit or cannot be read, or the
//     content entity (the decrypted one included) breaks a MIME limit;
//   - a keys error: a wholly encrypted message that cannot be used
//     (keys.ErrNoIntegrity, ErrTampered, ErrTooLarge, ErrWrongKey,
//     ErrMalformed, ErrNoSecretKey).
//
// Every other outcome is in the Message: whether it was encrypted, the
// signature verdict with its reason, the text, and the command block or
// why it does not parse.
//
// When the error comes after the header was read, Open returns with it a
// Message that holds the outer header facts alone (no text, not encrypted,
// not signed), so that the caller can still name the sender, or check the
// recipients, of what it refuses, without reading the message again.
func Open(raw []byte, o Options) (*Message, error) {
	// The header first: cheap, and a refusal there needs no decryption.
	outer, err := message.ParseHeader(raw, o.Limits)
	if err != nil {
		return nil, err
	}
	headerOnly := func() *Message {
		return &Message{raw: raw, outer: outer, prot: &keys.Opened{}, subject: outer.Subject}
	}
	prot, err := keys.Open(raw, o.ListKey, o.Members, o.Keys)
	if err != nil {
		return headerOnly(), err
	}
	m := &Message{raw: raw, prot: prot, subject: outer.Subject}
	content := outer
	if prot.Encrypted() || prot.Signature().OK() {
		// The content is another entity: the decrypted one, or exactly
		// what was signed. The outer body is never read into the text, so
		// nothing unsigned or unencrypted is merged with it (EFAIL,
		// docs/threat-model.md D2; Johnny, E2).
		content, err = message.Parse(prot.Content(), o.Limits)
		if err != nil {
			return headerOnly(), err
		}
		if prot.Encrypted() && content.Subject != "" {
			m.subject = content.Subject // a protected header (the outer one is often generic)
		}
		if prot.Signature().OK() {
			m.signedHdr = signedFields(content)
		}
	} else if err := outer.ParseBody(); err != nil {
		return headerOnly(), err
	}
	m.outer = outer // read for its header facts only (Outer copies them)
	m.text, m.htmlOmitted, m.attachments = content.Text, content.HTMLOmitted, content.Attachments
	m.commands, m.commandErr = workflow.Parse(m.text)
	m.hasCommands = m.commandErr != nil || len(m.commands) > 0
	return m, nil
}

// Raw is the message as received. Read-only.
func (m *Message) Raw() []byte { return m.raw }

// Outer returns the outer header facts (From, Subject as sent, Message-ID,
// Refs, Date, Auto, X-Loop, Received, the raw header fields) as a new
// *message.Message with no text or attachments.
func (m *Message) Outer() *message.Message {
	o := m.outer
	return &message.Message{Header: o.Header.Copy(), From: o.From, FromName: o.FromName, Subject: o.Subject,
		MessageID: o.MessageID, Refs: slices.Clone(o.Refs), Date: o.Date, Auto: o.Auto,
		XLoop: slices.Clone(o.XLoop), Received: o.Received}
}

// Merged returns a new *message.Message in the shape the daemon's handlers
// take: the outer header facts, the protected Subject when the message was
// encrypted and carried one, and the text and attachments of the content.
func (m *Message) Merged() *message.Message {
	c := m.Outer()
	c.Subject = m.subject
	c.Text, c.HTMLOmitted, c.Attachments = m.text, m.htmlOmitted, slices.Clone(m.attachments)
	return c
}

// From is the author's address from the outer From header (lower case).
// It authenticates nothing: only Signature does.
func (m *Message) From() string { return m.outer.From }

// FromName is the author's display name, sanitised.
func (m *Message) FromName() string { return m.outer.FromName }

// MessageID is the outer Message-ID without angle brackets.
func (m *Message) MessageID() string { return m.outer.MessageID }

// Refs are In-Reply-To, then References newest first.
func (m *Message) Refs() []string { return slices.Clone(m.outer.Refs) }

// Date is the Date header in UTC, zero if absent or unreadable.
func (m *Message) Date() time.Time { return m.outer.Date }

// Auto reports automatic or list mail (RFC 3834 §2, RFC 2369, RFC 2919).
func (m *Message) Auto() bool { return m.outer.Auto }

// XLoop are the X-Loop values, lower-cased.
func (m *Message) XLoop() []string { return slices.Clone(m.outer.XLoop) }

// Subject is the protected Subject of an encrypted message when it has one
// (draft-autocrypt-lamps-protected-headers), else the outer Subject;
// decoded and sanitised.
func (m *Message) Subject() string { return m.subject }

// SignedHeader is the To, Cc and Subject fields of the entity the signature
// covers, when it counts: the protected header fields that RFC 9788 §2
// places on the Cryptographic Payload (Thunderbird writes them into signed
// and encrypted mail). Empty when the signature does not count or the
// signed entity carries none. Each value is as written (To and Cc
// unfolded, Subject decoded and sanitised); a new slice.
func (m *Message) SignedHeader() []string { return slices.Clone(m.signedHdr) }

// signedFields are the protected To, Cc and Subject of the signed entity.
func signedFields(content *message.Message) []string {
	var out []string
	for _, k := range []string{"To", "Cc"} {
		out = append(out, content.Header.Values(k)...)
	}
	if content.Subject != "" {
		out = append(out, content.Subject)
	}
	return out
}

// Protection is what keys.Open found: encryption, ciphertext hash, the
// decrypted and the signed entity, and the signature verdict.
func (m *Message) Protection() *keys.Opened { return m.prot }

// Encrypted reports whether the whole top level was encrypted to the list
// key and decrypted.
func (m *Message) Encrypted() bool { return m.prot.Encrypted() }

// Signature is the verdict on the signature; only Status keys.SigGood
// counts, and then Text is exactly the signed text.
func (m *Message) Signature() keys.Verdict { return m.prot.Signature() }

// Text is the decoded text/plain (UTF-8, LF, format=flowed undone) of the
// signed entity when the signature counts, else of the decrypted entity
// when encrypted, else of the whole message.
func (m *Message) Text() string { return m.text }

// HTMLOmitted counts text/html parts left out for lack of a text
// alternative.
func (m *Message) HTMLOmitted() int { return m.htmlOmitted }

// Attachments are the content's non-text parts (a new slice; the Data
// slices are shared and read-only).
func (m *Message) Attachments() []message.Attachment { return slices.Clone(m.attachments) }

// HasCommands reports whether Text has a command block, well formed or not:
// a committee member whose commands did not count can be told why.
func (m *Message) HasCommands() bool { return m.hasCommands }

// Commands is the parsed command block of Text (a new slice), and the error
// that names the line when the block does not parse (a
// *workflow.CommandError: unknown command, two blocks, …). The commands
// count only when Signature().OK(): Text is then exactly the signed text.
func (m *Message) Commands() ([]workflow.Command, error) {
	return cloneCommands(m.commands), m.commandErr
}

// SignedCommands returns the commands only when they count: the signature is
// good. Otherwise ok is false and why says what to tell the signer: the
// signature's reason, or the command block's error.
func (m *Message) SignedCommands() (cmds []workflow.Command, ok bool, why error) {
	v := m.prot.Signature()
	switch {
	case !v.OK():
		return nil, false, fmt.Errorf("the message's signature does not count: %w", v.Err)
	case m.commandErr != nil:
		return nil, false, m.commandErr
	}
	return cloneCommands(m.commands), true, nil
}

// cloneCommands copies commands deeply enough that the caller cannot change
// the Message's own.
func cloneCommands(cmds []workflow.Command) []workflow.Command {
	if cmds == nil {
		return nil
	}
	out := make([]workflow.Command, len(cmds))
	for i, c := range cmds {
		c.Args = slices.Clone(c.Args)
		out[i] = c
	}
	return out
}
