package keys

import (
	"encoding/binary"
	"fmt"
)

// OpenPGP packet tags (RFC 4880 §4.3, RFC 9580 §5).
const (
	tagPKESK      = 1
	tagSignature  = 2
	tagSKESK      = 3
	tagOnePass    = 4
	tagCompressed = 8
	tagSED        = 9 // Symmetrically Encrypted Data: no integrity protection
	tagMarker     = 10
	tagLiteral    = 11
	tagSEIPD      = 18
	tagAEAD       = 20 // LibrePGP OCB encrypted data (gpg 2.3+): AEAD-protected
	tagPadding    = 21
)

// maxPackets bounds how many top-level packets a message may hold.
const maxPackets = 1000

// rawPacket is one top-level packet: its tag and its body, with partial
// body chunks joined.
type rawPacket struct {
	tag  int
	body []byte
}

// splitPackets frames the top level of an OpenPGP packet stream (RFC 4880
// §4.2: old- and new-format headers, partial body lengths). It does not
// look inside packets.
func splitPackets(b []byte) ([]rawPacket, error) {
	var out []rawPacket
	for len(b) > 0 {
		if len(out) >= maxPackets {
			return nil, fmt.Errorf("%w: more than %d packets", ErrMalformed, maxPackets)
		}
		h := b[0]
		if h&0x80 == 0 {
			return nil, fmt.Errorf("%w: bad packet header", ErrMalformed)
		}
		b = b[1:]
		var p rawPacket
		if h&0x40 == 0 { // old format
			p.tag = int(h>>2) & 0x0f
			var n int
			switch h & 3 {
			case 0:
				if len(b) < 1 {
					return nil, errTruncated
				}
				n, b = int(b[0]), b[1:]
			case 1:
				if len(b) < 2 {
					return nil, errTruncated
				}
				n, b = int(binary.BigEndian.Uint16(b)), b[2:]
			case 2:
				if len(b) < 4 {
					return nil, errTruncated
				}
				n, b = int(binary.BigEndian.Uint32(b)), b[4:]
			case 3: // indeterminate: to the end of the data
				n = len(b)
			}
			if n < 0 || n > len(b) {
				return nil, errTruncated
			}
			p.body, b = b[:n], b[n:]
		} else { // new format
			p.tag = int(h & 0x3f)
			for {
				n, partial, rest, err := newLength(b)
				if err != nil {
					return nil, err
				}
				if n > len(rest) {
					return nil, errTruncated
				}
				if !partial && p.body == nil {
					p.body = rest[:n] // the common case: no copy
				} else {
					p.body = append(p.body[:len(p.body):len(p.body)], rest[:n]...)
				}
				b = rest[n:]
				if !partial {
					break
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

var errTruncated = fmt.Errorf("%w: truncated packet", ErrMalformed)

// newLength decodes a new-format length (RFC 4880 §4.2.2).
func newLength(b []byte) (n int, partial bool, rest []byte, err error) {
	if len(b) < 1 {
		return 0, false, nil, errTruncated
	}
	switch l := b[0]; {
	case l < 192:
		return int(l), false, b[1:], nil
	case l < 224:
		if len(b) < 2 {
			return 0, false, nil, errTruncated
		}
		return (int(l)-192)<<8 + int(b[1]) + 192, false, b[2:], nil
	case l < 255:
		return 1 << (l & 0x1f), true, b[1:], nil
	default:
		if len(b) < 5 {
			return 0, false, nil, errTruncated
		}
		n := binary.BigEndian.Uint32(b[1:])
		if uint64(n) > uint64(len(b)) {
			return 0, false, nil, errTruncated
		}
		return int(n), false, b[5:], nil
	}
}
