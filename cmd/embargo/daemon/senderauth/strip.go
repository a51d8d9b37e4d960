package senderauth

import (
	"bytes"
	"strings"

	"github.com/embargo-project/embargo/lists/message"
)

// Strip removes from msg's header every Authentication-Results field whose
// authserv-id is id (without case), and returns the message and how many
// it removed. RFC 8601 §5: a border MTA removes fields that claim its own
// authserv-id from the mail it receives, for only its own may bear that
// name; a sender who writes one forges our verdict. msg is returned itself
// when nothing is removed. The body, and every other field, are kept byte
// for byte.
func Strip(msg []byte, id string) ([]byte, int) {
	if id == "" {
		return msg, 0
	}
	end := headerEnd(msg)
	var out []byte
	n, start := 0, 0
	for pos := 0; pos < end; {
		next := fieldEnd(msg, pos, end)
		if claims(msg[pos:next], id) {
			if out == nil {
				out = make([]byte, 0, len(msg))
			}
			out = append(out, msg[start:pos]...)
			start = next
			n++
		}
		pos = next
	}
	if n == 0 {
		return msg, 0
	}
	return append(out, msg[start:]...), n
}

// headerEnd is the offset of the blank line that ends msg's header (or
// len(msg) when there is none).
func headerEnd(msg []byte) int {
	for pos := 0; pos < len(msg); {
		if msg[pos] == '\n' || (msg[pos] == '\r' && pos+1 < len(msg) && msg[pos+1] == '\n') {
			return pos
		}
		i := bytes.IndexByte(msg[pos:], '\n')
		if i < 0 {
			return len(msg)
		}
		pos += i + 1
	}
	return len(msg)
}

// fieldEnd is where the field starting at pos ends: after its last
// continuation line (RFC 5322 §2.2.3: a line starting with a space or tab
// continues the field).
func fieldEnd(msg []byte, pos, end int) int {
	for {
		i := bytes.IndexByte(msg[pos:end], '\n')
		if i < 0 {
			return end
		}
		pos += i + 1
		if pos >= end || (msg[pos] != ' ' && msg[pos] != '\t') {
			return pos
		}
	}
}

// claims reports whether field is an Authentication-Results field whose
// authserv-id is id (RFC 8601 §2.2: the first value, before the optional
// version and the first ";", comments and folding aside).
func claims(field []byte, id string) bool {
	name, value, ok := bytes.Cut(field, []byte(":"))
	if !ok || !strings.EqualFold(strings.TrimRight(string(name), " \t"), "Authentication-Results") {
		return false
	}
	v := message.StripComments(string(value))
	v, _, _ = strings.Cut(v, ";")
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return false
	}
	got := strings.Trim(fields[0], `"`)
	return strings.EqualFold(strings.TrimSuffix(got, "."), strings.TrimSuffix(id, "."))
}
