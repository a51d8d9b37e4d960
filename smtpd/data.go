package smtpd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// firstChunk is the buffer a message starts with; it doubles from there, up to the
// message size limit.
const firstChunk = 64 << 10

// readMessage reads the whole message before anything else happens, so a message is
// checked and handed over complete or not at all. It reads at most limit bytes (limit
// ≤ 0: no limit). For DATA go-smtp's reader enforces MaxMessageBytes and fails with
// smtp.ErrDataTooLarge; for BDAT go-smtp checks the announced chunk sizes, and the
// limit here is the backstop.
//
// The buffer's capacity is taken from l before it is allocated (inflight.go): it
// doubles, so a message holds at most twice the bytes it was sent, and never more
// than limit. When the budget has no room within wait, readMessage gives back what l
// holds, reads the rest of the message and throws it away, and returns errInflight
// (or errTooLarge, or the read's error, when the rest shows one).
func readMessage(r io.Reader, limit int64, l *lease, wait time.Duration) ([]byte, error) {
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if limit > 0 && int64(len(buf)) >= limit {
				return buf, endAtLimit(r)
			}
			n := max(2*cap(buf), firstChunk)
			if limit > 0 {
				n = int(min(int64(n), limit))
			}
			if !l.grow(int64(n-cap(buf)), wait) {
				l.release()
				return nil, discardRest(r, limit, int64(len(buf)))
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// endAtLimit is called when limit bytes have been read: the message must end here,
// and one byte more makes it too large.
func endAtLimit(r io.Reader) error {
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		switch {
		case n > 0:
			return errTooLarge
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// discardRest reads and drops the rest of a message that found no budget, having
// read have bytes of it, so that the client gets its reply after the final dot (or
// BDAT LAST) and the connection stays in step. A message that turns out too large
// still gets 552 5.3.4, the reply it would have had with budget.
func discardRest(r io.Reader, limit, have int64) error {
	if limit > 0 {
		r = io.LimitReader(r, limit-have+1)
	}
	n, err := io.Copy(io.Discard, r)
	switch {
	case err != nil:
		return err
	case limit > 0 && have+n > limit:
		return errTooLarge
	}
	return errInflight
}

// transferError names a failed read of the message for the reply. Only an oversize
// message or line is the sender's fault (and counts towards the error limit); the
// others mean the connection broke, timed out or was reset mid-BDAT, and the reply
// likely goes nowhere.
func transferError(err error) (replyErr error, senderFault bool) {
	var ne net.Error
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge), errors.Is(err, errTooLarge):
		return errTooLarge, true
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong, true
	case errors.As(err, &se):
		return se, false // from conn.Read: already a reply
	case errors.As(err, &ne) && ne.Timeout():
		return errTimeout, false
	default:
		return errTransfer, false
	}
}

// bareLineEnd returns the offset of the first CR not followed by LF or LF not preceded
// by CR, or -1. RFC 5322 §2.3 lets CR and LF occur only together; SMTP smuggling
// (docs/threat-model.md B1) relies on receivers that accept them alone. go-smtp passes them
// through in DATA and in BDAT chunks, and embargo refuses rather than normalises,
// because it re-emits content and a normalised message is not the one that was sent.
func bareLineEnd(msg []byte) int {
	for i := 0; i < len(msg); {
		j := bytes.IndexAny(msg[i:], "\r\n")
		if j < 0 {
			return -1
		}
		i += j
		if msg[i] == '\n' || i+1 == len(msg) || msg[i+1] != '\n' {
			return i
		}
		i += 2
	}
	return -1
}

// longestLine returns the length of msg's longest line, CRLF included. go-smtp lifts
// its line limit while it copies a BDAT chunk (conn.go handleBdat), so smtpd applies
// MaxLineLength to the message itself (RFC 5321 §4.5.3.1.6).
func longestLine(msg []byte) int {
	longest := 0
	for len(msg) > 0 {
		n := bytes.IndexByte(msg, '\n') + 1
		if n == 0 {
			n = len(msg)
		}
		longest = max(longest, n)
		msg = msg[n:]
	}
	return longest
}

// countReceived counts the Received trace fields (RFC 5322 §3.6.7) in the header
// section, stopping early once more than limit were seen. msg has CRLF line ends only.
// The header ends at the first empty line; a field name may be followed by white space
// before the colon (RFC 5322 §4.5.3, obsolete syntax that parsers still accept).
func countReceived(msg []byte, limit int) int {
	n := 0
	for len(msg) > 0 {
		line := msg
		if i := bytes.Index(msg, []byte("\r\n")); i >= 0 {
			line, msg = msg[:i], msg[i+2:]
		} else {
			msg = nil
		}
		if len(line) == 0 {
			break
		}
		if isReceived(line) {
			if n++; n > limit {
				break
			}
		}
	}
	return n
}

func isReceived(line []byte) bool {
	const name = "received"
	if len(line) < len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
		return false
	}
	rest := bytes.TrimLeft(line[len(name):], " \t")
	return len(rest) > 0 && rest[0] == ':'
}
