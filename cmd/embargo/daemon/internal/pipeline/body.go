package pipeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Txn is one mail transaction: the envelope and the message, which is
// Header followed by Body. Header is the copy's own fields (a one-click
// List-Unsubscribe, a DKIM-Signature), CRLF lines, or empty; Body is the
// rest, shared by every copy of a release and prepared once.
type Txn struct {
	From   string // envelope sender; "" is the null reverse-path (RFC 5321 §4.5.5)
	To     []string
	Header []byte
	Body   *Body
	// MakeHeader, when set, makes Header just before the transaction
	// begins: a copy's own signature is then computed while the copies
	// before it are in flight, and the first copy of a batch does not wait
	// for the last one's. An error refuses the transaction (permanent).
	MakeHeader func() ([]byte, error)

	smtputf8 bool // an address is not ASCII: MAIL gets SMTPUTF8 (set by check)
}

// Body is the shared part of a message, checked and dot-stuffed once
// (RFC 5321 §4.5.2) so that each copy costs only its own header.
type Body struct {
	stuffed  []byte // dot-stuffed, ending in CRLF
	size     int    // octets before stuffing, as SIZE= counts them (RFC 1870)
	eightBit bool
	asIs     bool // made by NewBodyAsIs
}

// Size is the number of octets of the body as sent, before dot-stuffing.
func (b *Body) Size() int { return b.size }

// Errors of messages that cannot be sent as they are: a renderer bug
// upstream, so the refusal is permanent.
var (
	ErrBareLineEnd = errors.New("pipeline: message has a bare CR or LF") // docs/threat-model.md B2
	ErrLongLine    = errors.New("pipeline: message has a line over 998 octets (RFC 5321 §4.5.3.1.6)")
)

// maxLine is the longest text line without its CRLF (RFC 5321 §4.5.3.1.6).
const maxLine = 998

// NewBody checks msg (CRLF line ends only, no line over 998 octets) and
// prepares it. A message that does not end with CRLF gets one: the end of
// data needs it, and DKIM's canonical body has it anyway (RFC 6376 §3.4.4).
// A message with no line to dot-stuff is kept as it is, not copied: it
// must not change while the Body is in use.
func NewBody(msg []byte) (*Body, error) {
	return newBody(msg, maxLine)
}

// NewBodyAsIs is NewBody for the outbound queue's copies, which have
// always left as they were made: a line over 998 octets is sent as it is,
// and 8-bit content goes to a relay without 8BITMIME too, as go-smtp's
// client, the queue's before this one, sent them (a refusal here would
// fail the copy for good). A bare CR or LF is still refused
// (docs/threat-model.md B2).
func NewBodyAsIs(msg []byte) (*Body, error) {
	b, err := newBody(msg, -1)
	if b != nil {
		b.asIs = true
	}
	return b, err
}

// newBody checks msg, with lines up to limit octets (-1: any length).
func newBody(msg []byte, limit int) (*Body, error) {
	if err := checkText(msg, limit); err != nil {
		return nil, err
	}
	b := &Body{size: len(msg)}
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		msg = append(msg[:len(msg):len(msg)], '\r', '\n')
		b.size += 2
	}
	b.stuffed = msg
	if bytes.HasPrefix(msg, []byte(".")) || bytes.Contains(msg, []byte("\r\n.")) {
		b.stuffed = stuff(nil, msg)
	}
	b.eightBit = has8Bit(msg)
	return b, nil
}

// CheckLineEnds refuses a bare CR or LF (docs/threat-model.md B2), naming
// the first: the check every copy passes before a relay takes it, whichever
// relay (the queue's Maildir too).
func CheckLineEnds(b []byte) error { return checkText(b, -1) }

// checkText refuses bare CR and LF, and lines over limit octets unless
// limit is -1. Line by line with IndexByte (vectorised), not byte by byte:
// it runs over every byte of every copy sent.
func checkText(b []byte, limit int) error {
	for i := 0; i < len(b); {
		line := b[i:]
		lf := bytes.IndexByte(line, '\n')
		if lf >= 0 {
			line = line[:lf]
		}
		// The only CR allowed in a line is its last byte, before the LF.
		if cr := bytes.IndexByte(line, '\r'); cr >= 0 && (lf < 0 || cr != len(line)-1) {
			return fmt.Errorf("%w: bare CR at byte %d", ErrBareLineEnd, i+cr)
		}
		n := len(line) // the last line, without line end
		if lf >= 0 {
			if lf == 0 || line[lf-1] != '\r' {
				return fmt.Errorf("%w: bare LF at byte %d", ErrBareLineEnd, i+lf)
			}
			n = lf - 1
		}
		if limit >= 0 && n > limit {
			return fmt.Errorf("%w: line at byte %d", ErrLongLine, i)
		}
		if lf < 0 {
			return nil
		}
		i += lf + 1
	}
	return nil
}

// stuff appends b to dst with a dot added before every line that starts
// with one (RFC 5321 §4.5.2). b starts at the beginning of a line.
func stuff(dst, b []byte) []byte {
	dst = slices.Grow(dst, len(b)+len(b)/64+4)
	for len(b) > 0 {
		if b[0] == '.' {
			dst = append(dst, '.')
		}
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return append(dst, b...)
		}
		dst = append(dst, b[:i+2]...)
		b = b[i+2:]
	}
	return dst
}

func has8Bit(b []byte) bool {
	for ; len(b) >= 8; b = b[8:] { // a word at a time
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// checkAddr refuses what cannot be written into MAIL or RCPT as it is:
// addresses come from the subscriber store or the roster, checked when they
// were added, so a bad one is a bug. A non-ASCII address (nonASCII) needs
// the relay's SMTPUTF8 (RFC 6531 §3.4), which smtputf8 says it offers, and
// must be UTF-8.
func checkAddr(a string, null, smtputf8 bool) (nonASCII bool, err error) {
	if a == "" && null {
		return false, nil
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 254 {
		return false, fmt.Errorf("pipeline: address %q is not local@domain", a)
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return false, fmt.Errorf("pipeline: address %q has a control, space or angle bracket", a)
		} else if c >= 0x80 {
			nonASCII = true
		}
	}
	switch {
	case nonASCII && !smtputf8:
		return true, fmt.Errorf("pipeline: address %q is not ASCII and the relay lacks SMTPUTF8 (RFC 6531 §3.4)", a)
	case nonASCII && !utf8.ValidString(a):
		return true, fmt.Errorf("pipeline: address %q is not UTF-8 (RFC 6531 §3.3)", a)
	}
	return nonASCII, nil
}
