package pipeline

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Reply is a refusal from the relay: a reply whose code is not the one the
// command wanted. It is the error of a transaction, or of one recipient.
type Reply struct {
	Stage string // the command it answers: "MAIL FROM", "RCPT TO", "DATA", "end of data", …
	Code  int
	Text  string // the reply's text, lines joined with a space
}

func (r *Reply) Error() string {
	return fmt.Sprintf("pipeline: %s: %d %s", r.Stage, r.Code, r.Text)
}

// Temporary reports a 4xx reply: the same command may succeed later.
func (r *Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports a 5xx reply (RFC 5321 §4.2.1), except 530
// (authentication required), which is the relay's configuration and cured
// by fixing it, as the queue's relays decide.
func (r *Reply) Permanent() bool { return r.Code/100 == 5 && r.Code != 530 }

// Limits of what a relay may send back: RFC 5321 §4.5.3.1.5 allows 512
// octets per reply line; extensions and long texts get some room.
const (
	maxReplyLine  = 4096
	maxReplyLines = 100
)

var errProtocol = errors.New("pipeline: relay broke the protocol")

// reply is one reply read off the wire.
type reply struct {
	code  int
	lines []string // texts, without code and separator
}

func (r reply) text() string { return strings.Join(r.lines, " ") }

func (r reply) refusal(stage string) *Reply {
	return &Reply{Stage: stage, Code: r.code, Text: r.text()}
}

// readReply reads one reply, single- or multi-line (RFC 5321 §4.2.1): every
// line "ddd-text" but the last, "ddd text" or "ddd", all with one code.
func readReply(br *bufio.Reader) (reply, error) {
	var r reply
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return r, fmt.Errorf("%w: a reply line longer than %d bytes", errProtocol, maxReplyLine)
		}
		if err != nil {
			return r, err
		}
		if n == maxReplyLines {
			return r, fmt.Errorf("%w: a reply of more than %d lines", errProtocol, maxReplyLines)
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		code, more, text, ok := parseReplyLine(line)
		if !ok {
			return r, fmt.Errorf("%w: reply line %q", errProtocol, clip(line))
		}
		if n > 0 && code != r.code {
			return r, fmt.Errorf("%w: reply lines with codes %d and %d", errProtocol, r.code, code)
		}
		r.code = code
		r.lines = append(r.lines, text)
		if !more {
			return r, nil
		}
	}
}

func parseReplyLine(l []byte) (code int, more bool, text string, ok bool) {
	if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
		return 0, false, "", false
	}
	code = int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
	if len(l) == 3 {
		return code, false, "", true
	}
	switch l[3] {
	case '-':
		more = true
	case ' ':
	default:
		return 0, false, "", false
	}
	return code, more, string(l[4:]), true
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
