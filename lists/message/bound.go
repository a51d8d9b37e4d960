package message

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	gomessage "github.com/emersion/go-message"

	"github.com/embargo-project/embargo/lists"
)

// The bound around each header read (docs/threat-model.md C1).
//
// go-message reads the header of every MIME part whole, into a slice and a
// map of fields, before the walk can look at the part: only the top-level
// header has a limit (ReadOptions.MaxHeaderBytes). A part whose header is
// tiny fields ("X:1", five bytes each) filling a 4 MiB message is 800 000
// fields, about 370 MiB allocated to parse them, and keys.Open parses the
// same part again with the same reader: eight such messages at once took
// the daemon to 2.6 GiB. boundHeaders therefore checks, before anything
// parses the message, the header of the message and of each part the walk
// would read, with the walk's own limits and refusals, by scanning bytes:
// nothing is allocated per field or per line.
//
// The scan follows go-message's multipart reader (textproto.MultipartReader):
// the same delimiter lines (RFC 2046 §5.1.1, with its tolerance of LF line
// ends and transport padding), the same region for each part's header (a
// header is read past the part's end until a blank line, as go-message
// reads it), the same depth-first order. It stops where the walk stops,
// after the entity one past MaxParts or MaxDepth (go-message reads that
// entity's header before the walk refuses it), and wherever go-message's
// reader would fail (the walk then refuses the message as broken). It never
// refuses what the walk would take: for every header it checks, its count
// of fields and bytes is the walk's.

// errBoundDone ends the scan where the walk stops reading headers.
var errBoundDone = errors.New("message: no header beyond this one is read")

// boundHeaders checks the header of raw and of every MIME part of it that
// the walk reads: at most lim.MaxFields fields and lim.MaxHeaderBytes bytes
// each. lim has its defaults.
func boundHeaders(raw []byte, lim Limits) error {
	b := &bounder{lim: lim}
	_, err := b.entity(raw, 0, nil, nil, 0)
	if errors.Is(err, errBoundDone) {
		return nil
	}
	return err
}

type bounder struct {
	lim   Limits
	parts int
}

// entity checks the entity whose header starts at region[start:] and is
// read up to the end of region if need be. Its body ends at the next
// delimiter of its multipart (dash, after nl) or, for the message (dash
// nil), at the end of region. It returns where the body ends.
func (b *bounder) entity(region []byte, start int, dash, nl []byte, depth int) (int, error) {
	h := scanHeader(region[start:], b.lim)
	b.parts++
	if err := b.refusal(h, depth); err != nil {
		return 0, err
	}
	if h.broken || h.stopped || b.parts > b.lim.MaxParts || depth > b.lim.MaxDepth {
		return 0, errBoundDone // the walk refuses this entity, and reads nothing after it
	}
	bodyStart, end := start+h.end, len(region)
	if dash != nil {
		end = partEnd(region, bodyStart, dash, nl)
	}
	if h.boundary != "" {
		if err := b.children(region[bodyStart:end], h.boundary, depth+1); err != nil {
			return 0, err
		}
	}
	return end, nil
}

// refusal is the walk's refusal of a header (walk, parse), or nil.
func (b *bounder) refusal(h scannedHeader, depth int) error {
	switch {
	case depth == 0 && h.fields > b.lim.MaxFields:
		return mediaError("Message has more than %d header fields", b.lim.MaxFields)
	case depth == 0:
		return nil // its size is checked before the scan (parse)
	case h.fields > b.lim.MaxFields:
		return mediaError("A MIME part has more than %d header fields", b.lim.MaxFields)
	case h.bytes > b.lim.MaxHeaderBytes:
		return partHeaderTooLarge(b.lim.MaxHeaderBytes)
	}
	return nil
}

// partHeaderTooLarge is the refusal of a MIME part's header over the limit:
// the top-level bound holds for every part's header too.
func partHeaderTooLarge(limit int) error {
	return &lists.Refusal{Code: 552, Enhanced: "5.3.4", Text: fmt.Sprintf("A MIME part's header is larger than %d bytes", limit)}
}

// children checks the parts of a multipart body line by line as
// go-message's NextPart reads them: the preamble is skipped up to the first
// delimiter line, a part's body ends at a line end and "--" boundary
// followed by white space, a line end or "-" (partEnd), and after it come a
// line end and the next delimiter line or the close delimiter. Where
// NextPart fails, the scan stops: the walk refuses the message there.
func (b *bounder) children(body []byte, boundary string, depth int) error {
	dash := []byte("--" + boundary)
	closing := []byte("--" + boundary + "--")
	nl := []byte("\r\n")
	partsRead, expectNew := 0, false
	isFinal := func(line []byte) bool {
		rest, ok := bytes.CutPrefix(line, closing)
		rest = bytes.TrimLeft(rest, " \t")
		return ok && (len(rest) == 0 || bytes.Equal(rest, nl))
	}
	for pos := 0; pos < len(body); {
		line, next := lineAt(body, pos)
		if line[len(line)-1] != '\n' {
			return nil // the last line: the close delimiter, or NextPart fails
		}
		rest, isDash := bytes.CutPrefix(line, dash)
		rest = bytes.TrimLeft(rest, " \t")
		if isDash && partsRead == 0 && len(rest) == 1 && rest[0] == '\n' {
			nl = nl[1:] // go-message takes LF line ends from the first delimiter line
		}
		switch {
		case isDash && bytes.Equal(rest, nl):
			partsRead, expectNew = partsRead+1, false
			end, err := b.entity(body, next, dash, nl, depth)
			if err != nil {
				return err
			}
			pos = end
		case isFinal(line), expectNew:
			return nil
		case partsRead == 0:
			pos = next // the preamble
		case bytes.Equal(line, nl):
			pos, expectNew = next, true
		default:
			return nil
		}
	}
	return nil // no close delimiter: go-message fails at the end
}

// partEnd is where a part's body that starts at from ends: at the line end
// before the next delimiter, or at the delimiter itself right at from
// (go-message's scanUntilBoundary); else at the end of body.
func partEnd(body []byte, from int, dash, nl []byte) int {
	if delimiterAt(body, from, dash) {
		return from
	}
	nlDash := append(append([]byte{}, nl...), dash...)
	for at := from; ; {
		i := bytes.Index(body[at:], nlDash)
		if i < 0 {
			return len(body)
		}
		if delimiterAt(body, at+i+len(nl), dash) {
			return at + i
		}
		at += i + 1
	}
}

// delimiterAt reports whether body holds dash at i followed by the end of
// the body, white space, a line end or "-".
func delimiterAt(body []byte, i int, dash []byte) bool {
	if !bytes.HasPrefix(body[i:], dash) {
		return false
	}
	j := i + len(dash)
	return j == len(body) || strings.IndexByte(" \t\r\n-", body[j]) >= 0
}

// lineAt returns the line that starts at pos, with its LF if it has one,
// and where the next line starts.
func lineAt(b []byte, pos int) (line []byte, next int) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		return b[pos:], len(b)
	}
	return b[pos : pos+i+1], pos + i + 1
}

// scannedHeader is what scanHeader found of a header.
type scannedHeader struct {
	fields, bytes int
	end           int    // where the body starts (after the blank line)
	boundary      string // of a multipart whose parts the walk reads; else ""
	broken        bool   // go-message fails to read it: the walk refuses the message
	stopped       bool   // over a limit: not read to its end
}

// scanHeader measures the header at the start of b as go-message's
// textproto.ReadHeader reads it: fields with their continuation lines up
// to a blank line or the end of b. It counts what the walk counts of the
// fields ReadHeader keeps (those with a name): each of them, and its bytes
// with a CRLF for each line, and the blank line. It stops once either is
// over its limit, or at a line ReadHeader fails on.
func scanHeader(b []byte, lim Limits) scannedHeader {
	h := scannedHeader{bytes: 2}
	var ctype []byte // the first Content-Type field's value, its lines joined by LF
	kept, inCtype, seenCtype := false, false, false
	for pos := 0; pos < len(b); {
		line, next := lineAt(b, pos)
		content := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(content) == 0 {
			h.end = next
			break
		}
		first := pos == 0
		pos, h.end = next, next
		if content[0] == ' ' || content[0] == '\t' {
			if first {
				h.broken = true // a header cannot start with a continuation line
				return h
			}
			if inCtype {
				ctype = append(append(ctype, '\n'), content...)
			}
		} else {
			name, value, ok := bytes.Cut(content, []byte(":"))
			name = bytes.Trim(name, " \t")
			if !ok || !validFieldName(name) {
				h.broken = true
				return h
			}
			kept = len(name) > 0 // ReadHeader skips a field without a name
			if kept {
				h.fields++
			}
			inCtype = !seenCtype && bytes.EqualFold(name, []byte("Content-Type"))
			if inCtype {
				seenCtype, ctype = true, append([]byte{}, value...)
			}
		}
		if kept {
			h.bytes += len(content) + 2
		}
		if h.fields > lim.MaxFields || h.bytes > lim.MaxHeaderBytes {
			h.stopped = true
			return h
		}
	}
	if seenCtype {
		h.boundary = multipartBoundary(ctype)
	}
	return h
}

// validFieldName reports whether name has only the characters go-message
// takes in a field name (RFC 5322 §2.2: printable ASCII but the colon).
func validFieldName(name []byte) bool {
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// multipartBoundary is the boundary go-message reads the parts by, when the
// Content-Type value v (its continuation lines joined by LF) makes a
// multipart whose parts the walk reads; else "".
func multipartBoundary(v []byte) string {
	var parts []string
	for _, l := range bytes.Split(v, []byte("\n")) {
		if l = bytes.Trim(l, " \t"); len(l) > 0 {
			parts = append(parts, string(l))
		}
	}
	// A header of our own, never written anywhere: go-message parses the
	// value as it parses the part's (parameters decoded from RFC 2047
	// words too).
	var hd gomessage.Header
	hd.Set("Content-Type", strings.Join(parts, " "))
	mt, params, err := hd.ContentType()
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return "" // go-message reads no parts, or the walk refuses the entity first
	}
	if b := params["boundary"]; b != "" && len(b) <= 70 {
		return b
	}
	return ""
}
