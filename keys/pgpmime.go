package keys

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Limits on the MIME structure walked to classify a message (docs/threat-model.md C2),
// and on each header in it (docs/threat-model.md C1): lists/message's.
const (
	maxDepth        = 16
	maxParts        = 200
	maxHeaderBytes  = 100 << 10
	maxHeaderFields = 500
)

// toCRLF canonicalises line ends to CRLF (RFC 3156 §5: signed data is the
// CRLF form of the entity). Existing CRLF pairs are kept, a lone LF becomes
// CRLF; a lone CR is left alone. Mail from Maildir or mbox arrives with LF.
func toCRLF(b []byte) []byte {
	n := 0
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// entity is one MIME entity (RFC 2045 §2.4) cut from CRLF-canonical bytes,
// keeping the raw bytes so that signed parts are checked exactly as sent.
//
// What is derived from an entity (its decoded body, its parts, the message
// inside a message/rfc822) is computed once and kept, so that classifying,
// decrypting and verifying one message parses each of its entities once
// (docs/design.md §1: a message is opened once). An entity belongs to one
// call and is never shared between goroutines.
type entity struct {
	raw       []byte // header, blank line and body, as received
	header    textproto.Header
	body      []byte // the body, still transfer-encoded
	mediaType string // lower case; "text/plain" when absent (RFC 2045 §5.2)
	params    map[string]string

	stats *parseStats // shared by the entities of one message; may be nil

	decDone bool
	dec     []byte
	decErr  error

	mpDone  bool
	mp      *multipart
	mpErr   error
	kids    []*entity
	kidErrs []error

	embDone bool
	emb     *entity
	embErr  error
}

// parseStats counts the entities parsed for one message: a test holds Open
// to one parse per entity.
type parseStats struct{ entities int }

// parseEntity splits b (CRLF-canonical) into header and body. Duplicate
// Content-Type or Content-Transfer-Encoding fields are refused: two readers
// could pick different ones (docs/threat-model.md C6).
func parseEntity(b []byte) (*entity, error) { return parseEntityIn(b, nil) }

// parseEntityIn is parseEntity, counted in st (nil: not counted).
func parseEntityIn(b []byte, st *parseStats) (*entity, error) {
	if st != nil {
		st.entities++
	}
	var hdr, body []byte
	switch {
	case bytes.HasPrefix(b, []byte("\r\n")):
		body = b[2:]
	default:
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			hdr, body = b[:i+2], b[i+4:]
		} else {
			hdr = b
			if !bytes.HasSuffix(hdr, []byte("\r\n")) {
				hdr = append(hdr[:len(hdr):len(hdr)], '\r', '\n')
			}
		}
	}
	if err := boundHeader(hdr); err != nil {
		return nil, err
	}
	// A buffer the size of the header, up to bufio's 4 KiB default:
	// each entity parsed, on intake and per signed copy, allocates less.
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(hdr), strings.NewReader("\r\n")), min(len(hdr)+2, 4096))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	for _, k := range []string{"Content-Type", "Content-Transfer-Encoding"} {
		if len(h.Values(k)) > 1 {
			return nil, fmt.Errorf("%w: duplicate %s", ErrMalformed, k)
		}
	}
	e := &entity{raw: b, header: h, body: body, mediaType: "text/plain", params: map[string]string{}, stats: st}
	if ct := h.Get("Content-Type"); strings.TrimSpace(ct) != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Type: %v", ErrMalformed, err)
		}
		e.mediaType, e.params = strings.ToLower(mt), params
	}
	return e, nil
}

// boundHeader refuses a header over the limits every header is held to
// (docs/threat-model.md C1) before textproto.ReadHeader reads it whole:
// it keeps each field in a slice and a map, about 470 bytes a field, so a
// part header of five-byte fields filling a 4 MiB message would take 370
// MiB. Only the bytes are counted here: a field is a line that does not
// start with white space.
func boundHeader(hdr []byte) error {
	if len(hdr) > maxHeaderBytes {
		return fmt.Errorf("%w: a header of more than %d bytes", ErrMalformed, maxHeaderBytes)
	}
	fields := 0
	for rest := hdr; len(rest) > 0; {
		if rest[0] != ' ' && rest[0] != '\t' {
			if fields++; fields > maxHeaderFields {
				return fmt.Errorf("%w: a header of more than %d fields", ErrMalformed, maxHeaderFields)
			}
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
	}
	return nil
}

// decodedBody undoes the Content-Transfer-Encoding (RFC 2045 §6), once.
// Charsets are not converted: signed bytes must stay the bytes that were
// signed.
func (e *entity) decodedBody() ([]byte, error) {
	if !e.decDone {
		e.dec, e.decErr = e.decode()
		e.decDone = true
	}
	return e.dec, e.decErr
}

// multipart returns e's body cut at its delimiters, once. It is lenient: a
// missing close delimiter leaves closed false (see strictMultipart).
func (e *entity) multipart() (*multipart, error) {
	if !e.mpDone {
		e.mp, e.mpErr = cutMultipart(e.body, e.params["boundary"], true)
		if e.mpErr == nil {
			e.kids = make([]*entity, len(e.mp.parts))
			e.kidErrs = make([]error, len(e.mp.parts))
		}
		e.mpDone = true
	}
	return e.mp, e.mpErr
}

// strictMultipart is multipart for what is verified or decrypted, which
// must be complete: a missing close delimiter means a truncated message.
func (e *entity) strictMultipart() (*multipart, error) {
	mp, err := e.multipart()
	if err != nil {
		return nil, err
	}
	if !mp.closed {
		return nil, fmt.Errorf("%w: multipart without closing delimiter", ErrMalformed)
	}
	return mp, nil
}

// part parses part i of e's multipart body, once.
func (e *entity) part(i int) (*entity, error) {
	mp, err := e.multipart()
	if err != nil {
		return nil, err
	}
	if e.kids[i] == nil && e.kidErrs[i] == nil {
		e.kids[i], e.kidErrs[i] = parseEntityIn(mp.parts[i], e.stats)
	}
	return e.kids[i], e.kidErrs[i]
}

// embedded parses the message inside a message/rfc822 entity, once.
func (e *entity) embedded() (*entity, error) {
	if !e.embDone {
		inner, err := e.decodedBody()
		if err == nil {
			e.emb, err = parseEntityIn(inner, e.stats)
		}
		e.embErr, e.embDone = err, true
	}
	return e.emb, e.embErr
}

func (e *entity) decode() ([]byte, error) {
	switch cte := strings.ToLower(strings.TrimSpace(e.header.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
		return e.body, nil
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, e.body)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(e.body)))
		if err != nil {
			return nil, fmt.Errorf("%w: quoted-printable: %v", ErrMalformed, err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: Content-Transfer-Encoding %q", ErrMalformed, cte)
	}
}

// multipart is a multipart body cut at its delimiters (RFC 2046 §5.1.1).
// parts[i] is exactly the octets between two delimiter lines: the CRLF that
// precedes a delimiter belongs to the delimiter, not to the part.
type multipart struct {
	preamble []byte
	parts    [][]byte
	epilogue []byte
	closed   bool // the close delimiter was there
}

// splitMultipart cuts body (CRLF-canonical) at the delimiter lines of
// boundary. A delimiter line is "--" boundary, optionally "--" for the last
// one, then optional transport padding (linear whitespace). A missing close
// delimiter is an error: the message was truncated.
func splitMultipart(body []byte, boundary string) (*multipart, error) {
	return cutMultipart(body, boundary, false)
}

// cutMultipart is splitMultipart; lenient accepts a missing close delimiter
// (the rest is the last part), which only the classifying scan may do:
// what is verified or decrypted must be complete.
func cutMultipart(body []byte, boundary string, lenient bool) (*multipart, error) {
	if boundary == "" || len(boundary) > 70 {
		return nil, fmt.Errorf("%w: bad multipart boundary", ErrMalformed)
	}
	delim := []byte("--" + boundary)
	m := &multipart{}
	partStart := -1 // start of the current part's content; -1 before the first delimiter
	for pos := 0; pos <= len(body); {
		lineEnd := bytes.Index(body[pos:], []byte("\r\n"))
		next := len(body) + 1
		line := body[pos:]
		if lineEnd >= 0 {
			line = body[pos : pos+lineEnd]
			next = pos + lineEnd + 2
		}
		if bytes.HasPrefix(line, delim) {
			rest := line[len(delim):]
			closing := bytes.HasPrefix(rest, []byte("--"))
			if closing {
				rest = rest[2:]
			}
			if len(bytes.TrimRight(rest, " \t")) == 0 {
				// pos is the start of a delimiter line; the CRLF before it
				// (if any) is part of the delimiter.
				end := pos
				if end >= 2 {
					end -= 2
				}
				if partStart < 0 {
					m.preamble = body[:end]
				} else {
					if len(m.parts) >= maxParts {
						return nil, fmt.Errorf("%w: more than %d parts", ErrMalformed, maxParts)
					}
					if end < partStart { // empty part right after the delimiter line
						end = partStart
					}
					m.parts = append(m.parts, body[partStart:end])
				}
				if closing {
					if next <= len(body) {
						m.epilogue = body[next:]
					}
					m.closed = true
					return m, nil
				}
				if next > len(body) {
					partStart = -1 // nothing follows the delimiter
					break
				}
				partStart = next
			}
		}
		pos = next
	}
	if lenient {
		if partStart >= 0 {
			m.parts = append(m.parts, body[partStart:])
		}
		if len(m.parts) > 0 {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: multipart without closing delimiter", ErrMalformed)
}

// armorSpan locates one ASCII-armored block (RFC 4880 §6.2) in data.
type armorSpan struct {
	typ        string
	start, end int // from the BEGIN line to the end of the END line
}

// findArmor returns every complete armored block in data, in order. A BEGIN
// line must start a line ("-----BEGIN <type>-----", surrounding blanks
// ignored) and is closed by the matching END line.
func findArmor(data []byte) []armorSpan {
	var out []armorSpan
	var open *armorSpan
	for pos := 0; pos < len(data); {
		lineEnd := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if lineEnd >= 0 {
			next = pos + lineEnd + 1
		}
		line := bytes.TrimSpace(data[pos:next])
		if t, ok := armorLine(line, "-----BEGIN "); ok {
			// A BEGIN inside an open block abandons that block: what came
			// before is then plain text, not armor.
			open = &armorSpan{typ: t, start: pos}
		} else if t, ok := armorLine(line, "-----END "); ok && open != nil && t == open.typ {
			open.end = next
			out = append(out, *open)
			open = nil
		}
		pos = next
	}
	return out
}

func armorLine(line []byte, prefix string) (string, bool) {
	if !bytes.HasPrefix(line, []byte(prefix)) || !bytes.HasSuffix(line, []byte("-----")) || len(line) < len(prefix)+5 {
		return "", false
	}
	return string(line[len(prefix) : len(line)-5]), true
}

// isBlank reports whether b holds only whitespace.
func isBlank(b []byte) bool { return len(bytes.TrimSpace(b)) == 0 }

// wholeArmor returns the single armored block of type typ that makes up all
// of text (whitespace aside). ok is false if text has no block of that type;
// extra is true if it has one but also other text or further blocks.
func wholeArmor(text []byte, typ string) (block []byte, ok, extra bool) {
	spans := findArmor(text)
	n := 0
	var s armorSpan
	for _, sp := range spans {
		if sp.typ == typ {
			n++
			s = sp
		}
	}
	if n == 0 {
		return nil, false, false
	}
	if n > 1 || len(spans) > 1 || !isBlank(text[:s.start]) || !isBlank(text[s.end:]) {
		return nil, true, true
	}
	return text[s.start:s.end], true, false
}

// pgpMarkers summarises where OpenPGP material appears in a MIME tree.
type pgpMarkers struct {
	signed, encrypted                   bool // outside any message/rfc822
	forwardedSigned, forwardedEncrypted bool // inside a message/rfc822
}

var (
	markClearsign = []byte("-----BEGIN PGP SIGNED MESSAGE-----")
	markSignature = []byte("-----BEGIN PGP SIGNATURE-----")
	markMessage   = []byte("-----BEGIN PGP MESSAGE-----")
)

// scan walks e and records OpenPGP signatures and ciphertexts, wherever they
// are: used to tell "not signed" from "partially signed" (Johnny, threats
// E2) and "not encrypted" from EFAIL layouts (docs/threat-model.md D2, D9). The walk is
// bounded in depth and part count.
func scan(e *entity) (pgpMarkers, error) {
	var m pgpMarkers
	parts := 0
	var walk func(e *entity, depth int, fwd bool) error
	walk = func(e *entity, depth int, fwd bool) error {
		if depth > maxDepth {
			return fmt.Errorf("%w: MIME nesting deeper than %d", ErrMalformed, maxDepth)
		}
		if parts++; parts > maxParts {
			return fmt.Errorf("%w: more than %d MIME parts", ErrMalformed, maxParts)
		}
		sig := func() {
			if fwd {
				m.forwardedSigned = true
			} else {
				m.signed = true
			}
		}
		enc := func() {
			if fwd {
				m.forwardedEncrypted = true
			} else {
				m.encrypted = true
			}
		}
		switch {
		case e.mediaType == "multipart/signed", e.mediaType == "application/pgp-signature":
			sig()
		case e.mediaType == "multipart/encrypted", e.mediaType == "application/pgp-encrypted":
			enc()
		}
		switch {
		case strings.HasPrefix(e.mediaType, "multipart/"):
			mp, err := e.multipart()
			if err != nil {
				return err
			}
			for i := range mp.parts {
				pe, err := e.part(i)
				if err != nil {
					return err
				}
				if err := walk(pe, depth+1, fwd); err != nil {
					return err
				}
			}
			return nil
		case e.mediaType == "message/rfc822", e.mediaType == "message/global":
			pe, err := e.embedded()
			if err != nil {
				return err
			}
			return walk(pe, depth+1, true)
		}
		body, err := e.decodedBody()
		if err != nil {
			return err
		}
		if bytes.Contains(body, markClearsign) || bytes.Contains(body, markSignature) {
			sig()
		}
		if bytes.Contains(body, markMessage) {
			enc()
		}
		if fn := attachmentName(e); strings.HasSuffix(fn, ".pgp") || strings.HasSuffix(fn, ".gpg") {
			enc()
		}
		return nil
	}
	err := walk(e, 0, false)
	return m, err
}

func attachmentName(e *entity) string {
	name := e.params["name"]
	if cd := e.header.Get("Content-Disposition"); cd != "" {
		if _, p, err := mime.ParseMediaType(cd); err == nil && p["filename"] != "" {
			name = p["filename"]
		}
	}
	return strings.ToLower(name)
}

// textEntity wraps plaintext as a text/plain entity (header, blank line,
// CRLF body) so callers parse inline and clear-signed text like MIME.
func textEntity(text []byte, charset string) []byte {
	if charset == "" || strings.ContainsAny(charset, "\r\n\"\\") {
		charset = "utf-8"
	}
	ct := mime.FormatMediaType("text/plain", map[string]string{"charset": charset})
	if ct == "" {
		ct = "text/plain; charset=utf-8"
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: " + ct + "\r\n")
	b.WriteString("Content-Transfer-Encoding: 8bit\r\n\r\n")
	b.Write(toCRLF(text))
	return b.Bytes()
}
