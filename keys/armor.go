package keys

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// armorWriter writes ASCII armor (RFC 4880 §6.2) with CRLF line ends, the
// form a PGP/MIME part needs on the wire (RFC 3156 §4), byte for byte what
// go-crypto's armor.Encode writes with each LF made CRLF: the header line, a
// blank line (no armor headers), base64 in lines of 64 characters, the
// CRC-24 checksum line (RFC 4880 §6.1) and the tail line, without a final
// line end. The checksum is kept: RFC 9580 §6.1 no longer asks for it, but
// older readers among the recipients' clients refuse armor without it.
//
// It replaces armor.Encode plus a line-end rewrite: a table-driven CRC-24
// instead of one computed bit by bit, and output gathered into large writes
// instead of one write per line. Close must be called; it writes the rest
// and the tail, and does not close w.
type armorWriter struct {
	w         io.Writer
	blockType string
	out       []byte // encoded output not yet written to w
	rest      []byte // input not yet encoded: less than one line
	crc       uint32
	lines     int
	err       error
}

const (
	armorLineBytes = 48 // input bytes per armor line: 64 base64 characters
	armorFlushAt   = 8 << 10
)

// armorBufs hold the armor writers' output between flushes.
var armorBufs = sync.Pool{New: func() any { b := make([]byte, 0, armorFlushAt+256); return &b }}

func newArmorWriter(w io.Writer, blockType string) *armorWriter {
	buf := armorBufs.Get().(*[]byte)
	a := &armorWriter{w: w, blockType: blockType, crc: crc24Init, out: (*buf)[:0]}
	a.out = append(a.out, "-----BEGIN "+blockType+"-----\r\n\r\n"...)
	return a
}

func (a *armorWriter) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	n := len(p)
	a.crc = crc24Update(a.crc, p)
	if len(a.rest) > 0 {
		k := min(armorLineBytes-len(a.rest), len(p))
		a.rest = append(a.rest, p[:k]...)
		p = p[k:]
		if len(a.rest) < armorLineBytes {
			return n, nil
		}
		a.line(a.rest)
		a.rest = a.rest[:0]
	}
	for len(p) >= armorLineBytes {
		a.line(p[:armorLineBytes])
		p = p[armorLineBytes:]
		if len(a.out) >= armorFlushAt && a.flush() != nil {
			return 0, a.err
		}
	}
	a.rest = append(a.rest, p...)
	return n, nil
}

// line encodes one line (or the last, shorter one) and its CRLF.
func (a *armorWriter) line(p []byte) {
	a.out = base64.StdEncoding.AppendEncode(a.out, p)
	a.out = append(a.out, '\r', '\n')
	a.lines++
}

func (a *armorWriter) flush() error {
	if a.err == nil && len(a.out) > 0 {
		_, a.err = a.w.Write(a.out)
		a.out = a.out[:0]
	}
	return a.err
}

// Close writes the last line, the checksum line and the tail line.
func (a *armorWriter) Close() error {
	if a.err != nil {
		return a.err
	}
	if len(a.rest) > 0 {
		a.line(a.rest)
		a.rest = a.rest[:0]
	}
	if a.lines == 0 {
		a.out = append(a.out, '\r', '\n') // go-crypto writes an empty line for empty input
	}
	sum := [3]byte{byte(a.crc >> 16), byte(a.crc >> 8), byte(a.crc)}
	a.out = append(a.out, '=')
	a.out = base64.StdEncoding.AppendEncode(a.out, sum[:])
	a.out = append(a.out, "\r\n-----END "+a.blockType+"-----"...)
	err := a.flush()
	if cap(a.out) <= 4*armorFlushAt { // never keep a buffer a huge write grew
		buf := a.out[:0]
		armorBufs.Put(&buf)
	}
	a.out = nil
	if err != nil {
		return err
	}
	a.err = errors.New("keys: armor writer closed")
	return nil
}

// CRC-24 of RFC 4880 §6.1, a byte at a time from a table.
const (
	crc24Init = 0xb704ce
	crc24Poly = 0x1864cfb
)

// crc24Tables are the slicing-by-8 tables of CRC-24 computed in the top 24
// bits of a 32-bit register (the polynomial and the register shifted left
// by 8, so a byte enters at bits 31-24): crc24Tables[0] is the classic
// byte-at-a-time table, crc24Tables[k] advances it by k more zero bytes.
var crc24Tables = func() (t [8][256]uint32) {
	const poly = crc24Poly & 0xffffff << 8 // the x^24 term falls off the register
	for i := range t[0] {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ poly
			} else {
				c <<= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < 8; k++ {
		for i := range t[k] {
			prev := t[k-1][i]
			t[k][i] = prev<<8 ^ t[0][prev>>24]
		}
	}
	return t
}()

// crc24Update continues a CRC-24 (RFC 4880 §6.1) over p, eight bytes at a
// time.
func crc24Update(crc uint32, p []byte) uint32 {
	t := &crc24Tables
	c := crc << 8
	for len(p) >= 8 {
		a := c ^ binary.BigEndian.Uint32(p)
		b := binary.BigEndian.Uint32(p[4:])
		c = t[7][a>>24] ^ t[6][a>>16&0xff] ^ t[5][a>>8&0xff] ^ t[4][a&0xff] ^
			t[3][b>>24] ^ t[2][b>>16&0xff] ^ t[1][b>>8&0xff] ^ t[0][b&0xff]
		p = p[8:]
	}
	for _, x := range p {
		c = c<<8 ^ t[0][byte(c>>24)^x]
	}
	return c >> 8
}

// crlfViolation returns the offset in b of the first CR not followed by LF
// or LF not preceded by CR, or -1. prevCR says the byte before b was a CR;
// a CR ending b is not a violation (the next chunk decides). The common
// case, canonical text, takes two vectorised counts and a scan for LF.
func crlfViolation(b []byte, prevCR bool) int {
	if len(b) == 0 {
		return -1
	}
	paired := 0 // CRs of b followed by an LF in b
	for off := 0; ; {
		k := bytes.IndexByte(b[off:], '\n')
		if k < 0 {
			break
		}
		pos := off + k
		if pos == 0 && !prevCR || pos > 0 && b[pos-1] != '\r' {
			return firstViolation(b, prevCR)
		}
		if pos > 0 {
			paired++
		}
		off = pos + 1
	}
	if prevCR && b[0] != '\n' {
		return 0
	}
	trailing := 0
	if b[len(b)-1] == '\r' {
		trailing = 1
	}
	if bytes.Count(b, []byte{'\r'}) == paired+trailing {
		return -1
	}
	return firstViolation(b, prevCR)
}

// firstViolation is crlfViolation byte by byte: the slow path, taken only
// once a violation is known to be there, to find the first.
func firstViolation(b []byte, prevCR bool) int {
	for i, c := range b {
		switch {
		case c == '\n' && (i == 0 && !prevCR || i > 0 && b[i-1] != '\r'):
			return i
		case i == 0 && prevCR && c != '\n':
			return 0
		case c == '\r' && i+1 < len(b) && b[i+1] != '\n':
			return i
		}
	}
	return -1
}
