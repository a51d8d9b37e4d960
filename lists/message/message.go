// Package message parses inbound mail into the few facts embargo acts on, within
// hard limits, and rejects what it cannot read safely.
//
// It follows RFC 5322 (message format), RFC 2045–2047 (MIME, encoded words),
// RFC 2046 section 5.1.1 (boundaries), RFC 3676 (format=flowed, undone in the
// text it hands out), RFC 3834 (automatic responses) and RFC 2369/2919 (list
// headers). Limits come from docs/threat-model.md C1–C4 and C6: header bytes,
// fields, MIME depth, part count. A message that breaks them is refused at the end
// of DATA with a 5xx, so the sender learns at once instead of via a bounce.
package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // legacy charsets (docs/threat-model.md C3)
	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/lists"
)

// Limits bound what Parse accepts. Zero fields take the defaults of docs/threat-model.md §4.
type Limits struct {
	MaxHeaderBytes int // top-level header section; default 100 KiB
	MaxFields      int // header fields per entity; default 500
	MaxDepth       int // MIME nesting; default 16
	MaxParts       int // MIME parts in all; default 200
	MaxAddrHeader  int // bytes of an address header before it is parsed (C4); default 4 KiB
	AllowUTF8      bool
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 100 << 10
	}
	if l.MaxFields == 0 {
		l.MaxFields = 500
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = 16
	}
	if l.MaxParts == 0 {
		l.MaxParts = 200
	}
	if l.MaxAddrHeader == 0 {
		l.MaxAddrHeader = 4 << 10
	}
	return l
}

// mediaError refuses a message Parse cannot read safely. Parse's refusals are
// *lists.Refusal values: a sentence for the sender with its SMTP status,
// which smtpd answers with.
func mediaError(format string, args ...any) *lists.Refusal {
	// RFC 3463 section 3.7: X.6.0 other or undefined media error.
	return &lists.Refusal{Code: 554, Enhanced: "5.6.0", Text: fmt.Sprintf(format, args...)}
}

// Attachment is a non-text part of the message, decoded.
type Attachment struct {
	Name string // sanitised file name, may be empty
	Type string // media type, e.g. "application/pdf"
	Data []byte
}

// Message holds what embargo reads from an inbound mail.
type Message struct {
	Header      mail.Header // the top-level header, raw fields preserved
	From        string      // the author's address
	FromName    string      // display name, sanitised
	Subject     string      // decoded and sanitised
	MessageID   string      // without angle brackets
	Refs        []string    // In-Reply-To first, then References newest first
	Date        time.Time   // zero if absent or unreadable
	Auto        bool        // automatic or list mail (RFC 3834 section 2, RFC 2369, RFC 2919)
	XLoop       []string    // X-Loop values, lower-cased
	Received    int         // number of Received fields (hop count)
	Text        string      // the text/plain parts, decoded to UTF-8 (format=flowed undone, RFC 3676), LF line ends
	HTMLOmitted int         // text/html parts that had no text alternative and were left out
	Attachments []Attachment

	unread *gomessage.Entity // the body ParseHeader left for ParseBody
	lim    Limits
}

// singletons may appear at most once (RFC 5322 section 3.6, and docs/threat-model.md C6: two From
// fields let us and the member's client see different authors).
var singletons = []string{"From", "To", "Subject", "Date", "Message-Id", "Content-Type", "Sender", "Reply-To", "In-Reply-To", "References"}

// Parse reads raw (CRLF line ends, as received) within limits: the header
// facts and the body's text and attachments. A message it refuses gets a
// *lists.Refusal (5xx) the sender can read.
func Parse(raw []byte, lim Limits) (*Message, error) {
	return parse(raw, lim, true)
}

// ParseHeader reads only the top-level header of raw, within the same limits
// as Parse, and leaves Text, HTMLOmitted and Attachments empty: for a message
// whose content may be read from another entity (the decrypted or the signed
// one), so that the outer body is walked only if it is the content
// (ParseBody), and its header is parsed once either way. It measures the
// header of every MIME part too, without parsing one (bound.go), and
// refuses one over the limits as the walk would: what reads the message
// after it parses those headers.
func ParseHeader(raw []byte, lim Limits) (*Message, error) {
	return parse(raw, lim, false)
}

// ParseBody reads the body of a message that ParseHeader returned (Text,
// HTMLOmitted, Attachments) within the same limits; Parse is ParseHeader
// then ParseBody. It reads the body once: a second call is an error.
func (m *Message) ParseBody() error {
	if m.unread == nil {
		return errors.New("message: the body was read already")
	}
	ent := m.unread
	m.unread = nil
	return m.walk(ent, m.lim)
}

func parse(raw []byte, lim Limits, body bool) (*Message, error) {
	return parseBounded(raw, lim, body, true)
}

// parseBounded is parse; with bound false it skips boundHeaders, for the
// test that holds the scan to the walk's verdicts.
func parseBounded(raw []byte, lim Limits, body, bound bool) (*Message, error) {
	lim = lim.withDefaults()
	hdrEnd := bytes.Index(raw, []byte("\r\n\r\n"))
	headerLen := hdrEnd + 4
	if hdrEnd < 0 {
		headerLen = len(raw)
	}
	if headerLen > lim.MaxHeaderBytes {
		return nil, &lists.Refusal{Code: 552, Enhanced: "5.3.4", Text: fmt.Sprintf("Message header is larger than %d bytes", lim.MaxHeaderBytes)}
	}
	if err := check8bit(raw[:headerLen], lim.AllowUTF8); err != nil {
		return nil, err
	}
	// Every header, the parts' too, is measured before go-message reads
	// one whole (bound.go): also when only the top-level header is read
	// here, since what reads the message next (keys.Open, the walk) parses
	// the parts' headers.
	if bound {
		if err := boundHeaders(raw, lim); err != nil {
			return nil, err
		}
	}
	ent, err := gomessage.ReadWithOptions(bytes.NewReader(raw), &gomessage.ReadOptions{MaxHeaderBytes: int64(lim.MaxHeaderBytes)})
	if err != nil && ent == nil {
		return nil, mediaError("Message header cannot be parsed (RFC 5322 section 2.2)")
	}
	m := &Message{Header: mail.Header{Header: ent.Header}}
	if n := m.Header.Fields(); countFields(n) > lim.MaxFields {
		return nil, mediaError("Message has more than %d header fields", lim.MaxFields)
	}
	for _, k := range singletons {
		if len(m.Header.Values(k)) > 1 {
			return nil, mediaError("Message has more than one %s header field (RFC 5322 section 3.6)", k)
		}
	}
	if err := m.readHeader(lim); err != nil {
		return nil, err
	}
	if !body {
		m.unread, m.lim = ent, lim
		return m, nil
	}
	if err := m.walk(ent, lim); err != nil {
		return nil, err
	}
	return m, nil
}

// headerBytes is the size of a header as it was read: each field with its
// folding and line end, and the blank line after it.
func headerBytes(f gomessage.HeaderFields) int {
	n := 2
	for f.Next() {
		raw, err := f.Raw()
		if err != nil {
			n += len(f.Key()) + len(f.Value()) + 4
			continue
		}
		n += len(raw)
	}
	return n
}

func countFields(f gomessage.HeaderFields) int {
	n := 0
	for f.Next() {
		n++
	}
	return n
}

// check8bit refuses raw 8-bit bytes in the header section unless SMTPUTF8 was
// negotiated (RFC 6532 section 3 needs it); without it, non-ASCII must be RFC 2047 encoded.
func check8bit(h []byte, allowUTF8 bool) error {
	for i, b := range h {
		if b == 0 {
			return mediaError("Message header contains a NUL byte")
		}
		if b >= 0x80 {
			if allowUTF8 && utf8.Valid(h) {
				return nil
			}
			_ = i
			return mediaError("Message header contains 8-bit bytes; encode them as RFC 2047 words or use SMTPUTF8 (RFC 6532)")
		}
	}
	return nil
}

func (m *Message) readHeader(lim Limits) error {
	h := m.Header
	from := h.Get("From")
	if len(from) > lim.MaxAddrHeader {
		return mediaError("From header is longer than %d bytes", lim.MaxAddrHeader)
	}
	if from != "" {
		addrs, err := h.AddressList("From")
		if err != nil || len(addrs) != 1 {
			return mediaError("From header must hold exactly one valid address (RFC 5322 section 3.6.2)")
		}
		m.From = strings.ToLower(addrs[0].Address)
		m.FromName = Sanitize(addrs[0].Name)
	}
	if s, err := h.Subject(); err == nil {
		m.Subject = Sanitize(s)
	} else {
		m.Subject = Sanitize(h.Get("Subject"))
	}
	m.MessageID = msgID(h, "Message-Id")
	if len(m.MessageID) > 250 {
		m.MessageID = ""
	}
	refs := msgIDs(h, "In-Reply-To")
	r := msgIDs(h, "References")
	for i := len(r) - 1; i >= 0; i-- { // newest reference last in the header
		refs = append(refs, r[i])
	}
	if len(refs) > 100 {
		refs = refs[:100]
	}
	m.Refs = refs
	if d, err := h.Date(); err == nil {
		m.Date = d.UTC()
	}
	m.Received = len(h.Values("Received"))
	for _, v := range h.Values("X-Loop") {
		m.XLoop = append(m.XLoop, strings.ToLower(strings.TrimSpace(v)))
	}
	m.Auto = isAuto(h)
	return nil
}

// isAuto implements the RFC 3834 section 2 "do not respond" rules and the list and bulk
// conventions of docs/threat-model.md B8.
func isAuto(h mail.Header) bool {
	if v := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); v != "" && !strings.HasPrefix(v, "no") {
		return true
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "bulk", "junk", "list":
		return true
	}
	for _, k := range []string{"List-Id", "List-Unsubscribe", "List-Post", "X-Autoreply", "X-Autorespond"} {
		if h.Has(k) {
			return true
		}
	}
	return false
}

var msgIDPattern = regexp.MustCompile(`<([^<>\s]{1,250})>`)

func msgID(h mail.Header, k string) string {
	if id, err := h.MessageID(); k == "Message-Id" && err == nil && id != "" {
		return id
	}
	ids := msgIDs(h, k)
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

// msgIDs reads a list of message identifiers. go-message is strict and gives up
// on the first malformed one (docs/dependencies.md §2), so fall back to a pattern.
func msgIDs(h mail.Header, k string) []string {
	ids, err := h.MsgIDList(k)
	if err == nil {
		return ids
	}
	var out []string
	for _, m := range msgIDPattern.FindAllStringSubmatch(h.Get(k), 100) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		if v := strings.TrimSpace(h.Get(k)); v != "" && !strings.ContainsAny(v, " \t<>") && len(v) <= 250 {
			out = append(out, v) // "abc@example.org" without brackets
		}
	}
	return out
}

// walk visits the MIME tree with our own depth and part limits (go-message has
// none: docs/threat-model.md C2) and collects text and attachments.
func (m *Message) walk(ent *gomessage.Entity, lim Limits) error {
	parts := 0
	var text strings.Builder
	htmlSeen := 0
	textSeen := false
	err := ent.Walk(func(path []int, e *gomessage.Entity, err error) error {
		parts++
		if parts > lim.MaxParts {
			return mediaError("Message has more than %d MIME parts", lim.MaxParts)
		}
		if len(path) > lim.MaxDepth {
			return mediaError("Message nests MIME parts deeper than %d levels", lim.MaxDepth)
		}
		if countFields(e.Header.Fields()) > lim.MaxFields {
			return mediaError("A MIME part has more than %d header fields", lim.MaxFields)
		}
		if headerBytes(e.Header.Fields()) > lim.MaxHeaderBytes {
			// The top-level bound holds for every part's header too
			// (docs/threat-model.md C1): go-message bounds only the
			// top-level one, and a part's header is as much a header bomb.
			return partHeaderTooLarge(lim.MaxHeaderBytes)
		}
		mt, params, perr := e.Header.ContentType()
		if perr != nil && e.Header.Get("Content-Type") != "" {
			mt = "application/octet-stream" // unreadable type: keep the bytes, opaque
		}
		if mt == "" {
			mt = "text/plain"
		}
		if strings.HasPrefix(mt, "multipart/") {
			b := params["boundary"]
			// RFC 2046 section 5.1.1: 1 to 70 characters.
			if b == "" || len(b) > 70 {
				return mediaError("A multipart part has a missing or over-long boundary (RFC 2046 section 5.1.1)")
			}
			return nil
		}
		unknown := err != nil // unknown charset or transfer encoding: opaque, not fatal (C3)
		disp, dparams, _ := e.Header.ContentDisposition()
		body, rerr := io.ReadAll(e.Body)
		if rerr != nil {
			if !unknown {
				return mediaError("A MIME part cannot be decoded: check its Content-Transfer-Encoding")
			}
		}
		name := dparams["filename"]
		if name == "" {
			name = params["name"]
		}
		switch {
		case mt == "text/plain" && disp != "attachment" && !unknown:
			if textSeen {
				text.WriteString("\n")
			}
			textSeen = true
			t := strings.ReplaceAll(string(body), "\r\n", "\n")
			if strings.EqualFold(params["format"], "flowed") {
				t = DecodeFlowed(t, strings.EqualFold(params["delsp"], "yes"))
			}
			text.WriteString(t)
		case mt == "text/html" && disp != "attachment":
			htmlSeen++
		default:
			m.Attachments = append(m.Attachments, Attachment{Name: SanitizeFilename(name), Type: mt, Data: body})
		}
		return nil
	})
	if err != nil {
		var me *lists.Refusal
		if errors.As(err, &me) {
			return me
		}
		return mediaError("Message has a broken MIME structure (RFC 2046 section 5.1): %s", brokenReason(err))
	}
	m.Text = sanitizeText(text.String())
	if !textSeen {
		m.HTMLOmitted = htmlSeen
	}
	return nil
}

func brokenReason(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "a multipart body ends before its closing boundary"
	default:
		return "a part or boundary cannot be read"
	}
}

// Sanitize makes an attacker-controlled string safe to show and to put in a
// header built by go-message: it drops C0/C1 controls (CR and LF included) and the
// bidi overrides that can disguise text (docs/threat-model.md B10), and trims it.
func Sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case unicode.IsControl(r), isBidi(r), r == utf8.RuneError:
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

func sanitizeText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r), isBidi(r):
			return -1
		}
		return r
	}, s)
}

// isBidi reports the Unicode bidi embedding, override and isolate controls.
func isBidi(r rune) bool {
	return (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F || r == 0x061C
}

// SanitizeFilename keeps a harmless base name.
func SanitizeFilename(name string) string {
	if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
		name = dec
	}
	name = Sanitize(name)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimLeft(name, ".")
	if len(name) > 100 {
		name = name[:100]
	}
	return name
}
