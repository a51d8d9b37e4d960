package listd

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The stages at which hostileRelay refuses a transaction: its reply to
// MAIL FROM, to each RCPT TO, to DATA, or to the final dot.
const (
	refuseMail = iota
	refuseRcpt
	refuseData
	refuseEnd
	refuseStages
)

// hostileRelay is an SMTP relay on loopback that answers as a hostile
// relay or remote MX may (RFC 5321 §4.2): it takes EHLO and offers
// PIPELINING, and refuses every transaction at one stage with a reply
// whose code and text the test sets, byte for byte: the text of each
// line is whatever the relay wants but LF (a CR inside a line, NUL,
// invalid UTF-8, encoded-word lookalikes, "/" lines). A transaction it
// takes is read to its end and thrown away.
type hostileRelay struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool // open sessions, closed when the test ends
	done  bool              // the test ended
	stage int
	reply []byte // the refusal, CRLF after each line
}

// newHostileRelay listens on loopback until the test (or fuzz target) ends.
func newHostileRelay(t testing.TB) *hostileRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &hostileRelay{ln: ln, conns: map[net.Conn]bool{}, stage: refuseRcpt, reply: []byte("550 5.1.1 no such user\r\n")}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		r.done = true
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *hostileRelay) addr() string { return r.ln.Addr().String() }

// refuse makes the relay refuse from now on at stage with code and text:
// text's lines (split at LF) become the reply's lines, each cut to 4000
// bytes and at most 90 of them, within what the client reads (RFC 5321
// §4.5.3.1.5 allows 512 octets; the client takes some 4096), so that the
// refusal is read and not a protocol error.
func (r *hostileRelay) refuse(stage, code int, text string) {
	lines := strings.Split(text, "\n")
	if len(lines) > 90 {
		lines = lines[:90]
	}
	var b bytes.Buffer
	for i, l := range lines {
		if len(l) > 4000 {
			l = l[:4000]
		}
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		b.WriteString(strconv.Itoa(code) + sep + l + "\r\n")
	}
	r.mu.Lock()
	r.stage, r.reply = stage%refuseStages, b.Bytes()
	r.mu.Unlock()
}

// permanentCode maps a fuzzer's byte to a permanent refusal (RFC 5321
// §4.2.1): 5xx, but not 530, which the client takes for its own
// configuration and retries.
func permanentCode(c byte) int {
	code := 500 + int(c)%100
	if code == 530 {
		code = 554
	}
	return code
}

func (r *hostileRelay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.done {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = true
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.session(c)
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
			c.Close()
		}()
	}
}

// session answers one connection in order, pipelined or not.
func (r *hostileRelay) session(c net.Conn) {
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriter(c)
	say := func(s string) { bw.WriteString(s) }
	refusal := func(stage int) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stage != stage {
			return false
		}
		bw.Write(r.reply)
		return true
	}
	say("220 relay.test ESMTP\r\n")
	bw.Flush()
	mail, rcpts := false, 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			mail, rcpts = false, 0
			if !refusal(refuseMail) {
				mail = true
				say("250 2.1.0 ok\r\n")
			}
		case strings.HasPrefix(cmd, "RCPT TO:"):
			if !mail {
				say("503 5.5.1 MAIL first\r\n")
			} else if !refusal(refuseRcpt) {
				rcpts++
				say("250 2.1.5 ok\r\n")
			}
		case cmd == "DATA":
			if rcpts == 0 {
				say("554 5.5.1 no valid recipients\r\n") // RFC 2920 §3.1
				break
			}
			if refusal(refuseData) {
				break
			}
			say("354 go ahead\r\n")
			bw.Flush()
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if !refusal(refuseEnd) {
				say("250 2.0.0 taken\r\n")
			}
			mail, rcpts = false, 0
		case cmd == "RSET":
			mail, rcpts = false, 0
			say("250 2.0.0 ok\r\n")
		case cmd == "NOOP":
			say("250 2.0.0 ok\r\n")
		case cmd == "QUIT":
			say("221 2.0.0 bye\r\n")
			bw.Flush()
			return
		default:
			say("500 5.5.2 what\r\n")
		}
		if br.Buffered() == 0 {
			bw.Flush()
		}
	}
}
