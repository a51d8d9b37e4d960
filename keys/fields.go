package keys

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Rendered header fields. A caller that stores a message's header fields
// as go-message rendered them (textproto.WriteHeader without the final
// blank line) can hand those bytes to EncryptStreamFields and
// ProtectHeaderFields instead of a mail.Header: the bytes are checked and
// copied, field by field, not parsed and rendered again, which is most of
// the cost of a small sealed copy besides the cryptography.

// maxFields bounds a block of rendered header fields, and the entity header
// ProtectHeaderFields reads (RFC 5322 sets no limit; ours is generous).
const maxFields = 64 << 10

// checkFields reports whether b is rendered header fields: lines ending in
// CRLF, none empty, each a field ("Name:" with a name of printable ASCII
// but ":", RFC 5322 §3.6.8) or the folded continuation of the one before
// (starting with a space or a tab), no NUL, CR or LF elsewhere.
func checkFields(b []byte) error {
	if len(b) > maxFields {
		return fmt.Errorf("%w: %d bytes of header fields", ErrMalformed, len(b))
	}
	for first := true; len(b) > 0; first = false {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return fmt.Errorf("%w: a header line does not end in CRLF", ErrMalformed)
		}
		line := b[:i]
		b = b[i+2:]
		switch {
		case len(line) == 0:
			return fmt.Errorf("%w: an empty line among the header fields", ErrMalformed)
		case line[0] == ' ' || line[0] == '\t':
			if first {
				return fmt.Errorf("%w: the header starts with a continuation line", ErrMalformed)
			}
		default:
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return fmt.Errorf("%w: a header line is neither a field nor a continuation", ErrMalformed)
			}
			for _, c := range line[:colon] {
				if c < 33 || c > 126 {
					return fmt.Errorf("%w: a header field name holds 0x%02x", ErrMalformed, c)
				}
			}
		}
		if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, '\n') >= 0 {
			return fmt.Errorf("%w: NUL, CR or LF inside a header line", ErrMalformed)
		}
	}
	return nil
}

// eachField calls fn with the name and the whole bytes (folded lines and
// their CRLFs included) of every field of checked header fields, in order.
func eachField(b []byte, fn func(name, field []byte)) {
	for len(b) > 0 {
		end := 0
		for {
			end += bytes.Index(b[end:], []byte("\r\n")) + 2
			if end == len(b) || (b[end] != ' ' && b[end] != '\t') {
				break
			}
		}
		fn(b[:bytes.IndexByte(b, ':')], b[:end])
		b = b[end:]
	}
}

// isMIMEField reports the fields a PGP/MIME wrapper writes itself.
func isMIMEField(name []byte) bool {
	return bytes.EqualFold(name, []byte("MIME-Version")) ||
		len(name) >= 8 && bytes.EqualFold(name[:8], []byte("Content-"))
}

// EncryptStreamFields is EncryptStream for an outer header given as
// rendered header fields (see checkFields); its MIME fields, if any, are
// dropped, as EncryptStream drops them.
func EncryptStreamFields(w io.Writer, outer []byte, inner io.Reader, to, signer *Key, o Options) error {
	if err := checkFields(outer); err != nil {
		return fmt.Errorf("keys: outer header: %w", err)
	}
	head := bytes.NewBuffer(make([]byte, 0, len(outer)+512))
	eachField(outer, func(name, field []byte) {
		if !isMIMEField(name) {
			head.Write(field)
		}
	})
	return encryptStream(w, head, inner, to, signer, o)
}

// fieldsOf renders h as header fields, without its MIME fields.
func fieldsOf(h mail.Header) ([]byte, error) {
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, contentFree(h).Header.Header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return b.Bytes()[:b.Len()-2], nil // without the blank line
}

// ProtectHeaderFields is ProtectHeadersReader for the header given as
// rendered header fields (see checkFields): the protected fields among them
// are copied as they are, folding included.
func ProtectHeaderFields(inner io.Reader, h []byte) (io.Reader, error) {
	if err := checkFields(h); err != nil {
		return nil, fmt.Errorf("keys: protected headers: %w", err)
	}
	// A small buffer: the header's lines are read through it (longer ones
	// too: ReadHeader joins them), and the body, read in large pieces,
	// passes by it.
	br := bufio.NewReaderSize(inner, 512)
	ent, err := readEntityHeader(br)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(h) + len(ent.rendered))
	eachField(h, func(name, field []byte) {
		if protectedFields[lower(string(name))] && !ent.has[lower(string(name))] {
			b.Write(field)
		}
	})
	b.Write(ent.rendered)
	return io.MultiReader(&b, br), nil
}

// entityHeader is an inner entity's header made ready for protected
// headers: rendered with protected-headers="v1" in its Content-Type, and
// the (lower-case) names of its fields, which the protected copies skip.
type entityHeader struct {
	raw      string // the header as read, blank line included
	rendered []byte
	has      map[string]bool
}

// lastEntity is the entity header prepared last: the copies of one message
// to many recipients share their body, hence its header, and a cache of one
// spares each of them the parsing and rendering. Its key is the header's
// bytes themselves, so it cannot serve another header.
var lastEntity atomic.Pointer[entityHeader]

// readEntityHeader reads the entity's header from br, up to and including
// the blank line, and prepares it (or takes the prepared one from
// lastEntity).
func readEntityHeader(br *bufio.Reader) (*entityHeader, error) {
	var raw []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			raw = append(raw, line...)
			continue
		}
		raw = append(raw, line...)
		if err != nil {
			return nil, fmt.Errorf("keys: inner entity: %w: header not ended: %v", ErrMalformed, err)
		}
		if len(raw) > maxFields {
			return nil, fmt.Errorf("keys: inner entity: %w: header over %d bytes", ErrMalformed, maxFields)
		}
		if len(line) <= 2 && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	if e := lastEntity.Load(); e != nil && e.raw == string(raw) {
		return e, nil
	}
	eh, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("keys: inner entity: %w: %v", ErrMalformed, err)
	}
	e := &entityHeader{raw: string(raw), has: map[string]bool{}}
	for f := eh.Fields(); f.Next(); {
		e.has[lower(f.Key())] = true
	}
	mh := message.Header{Header: eh}
	t, params, err := mh.ContentType()
	if err != nil {
		t, params = "text/plain", map[string]string{}
	}
	if params == nil {
		params = map[string]string{}
	}
	params["protected-headers"] = "v1"
	mh.SetContentType(t, params)
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, mh.Header); err != nil {
		return nil, fmt.Errorf("keys: inner header: %w", err)
	}
	e.rendered = b.Bytes()
	lastEntity.Store(e)
	return e, nil
}
