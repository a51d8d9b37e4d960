package pipeline

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a scripted SMTP server that checks how the client groups its
// commands. With pipelining it offers PIPELINING and answers nothing
// until a group ends (DATA, or the end of the content followed by nothing
// for a while), so a client that waits for each reply deadlocks and the
// test times out. Without it, a command that arrives before the reply to
// the previous one is a protocol error the fake records.
type fake struct {
	t          *testing.T
	ln         net.Listener
	pipelining bool
	ext        []string
	// answer, if set, may replace the reply to a command line (the verb in
	// upper case, the whole line); "" keeps the default.
	answer func(verb, line string) string

	mu       sync.Mutex
	msgs     []fakeMsg
	cmds     []string // every command line, in order
	idleEnds int      // content ends answered only after the client went quiet
	errs     []string // protocol violations the fake saw
	sessions int
}

type fakeMsg struct {
	from string
	to   []string
	data []byte
}

func newFake(t *testing.T, pipelining bool, ext ...string) *fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{t: t, ln: ln, pipelining: pipelining, ext: ext}
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, e := range f.errs {
			t.Errorf("fake server: %s", e)
		}
	})
	return f
}

func (f *fake) config() Config {
	return Config{Addr: f.ln.Addr().String(), ServerName: "127.0.0.1", HeloName: "client.test",
		CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second}
}

func (f *fake) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.sessions++
		f.mu.Unlock()
		go f.session(c)
	}
}

func (f *fake) fail(format string, args ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// fakeConn is one connection of the fake; out collects replies, which
// flush sends.
type fakeConn struct {
	f        *fake
	c        net.Conn
	br       *bufio.Reader
	out      bytes.Buffer
	answer   func(verb, line string) string
	msg      *fakeMsg
	accepted int
}

func (s *fakeConn) flush() bool {
	_, err := s.c.Write(s.out.Bytes())
	s.out.Reset()
	return err == nil
}

// say buffers the reply to a command: def, unless answer replaces it. It
// reports whether the reply starts with code.
func (s *fakeConn) say(verb, line, def, code string) bool {
	if s.answer != nil {
		if a := s.answer(verb, line); a != "" {
			def = a
		}
	}
	s.out.WriteString(def + "\r\n")
	return strings.HasPrefix(def, code)
}

func (f *fake) session(c net.Conn) {
	defer c.Close()
	f.mu.Lock()
	s := &fakeConn{f: f, c: c, br: bufio.NewReader(c), answer: f.answer}
	f.mu.Unlock()
	s.say("CONNECT", "", "220 fake.test ESMTP", "220")
	s.flush()
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := s.br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		f.mu.Lock()
		f.cmds = append(f.cmds, line)
		f.mu.Unlock()
		if !f.pipelining && s.br.Buffered() > 0 && verb != "QUIT" {
			f.fail("%q arrived with more behind it, but PIPELINING was not offered", line)
		}
		flush, ok := s.handle(verb, line)
		if !ok {
			return
		}
		if strings.HasPrefix(lastLine(s.out.String()), "421") {
			s.flush()
			return
		}
		if (flush || !f.pipelining) && !s.flush() {
			return
		}
	}
}

// handle answers one command. flush: send the replies now (a group
// ends); ok false: the connection is over.
func (s *fakeConn) handle(verb, line string) (flush, ok bool) {
	switch verb {
	case "EHLO":
		ext := append([]string{"fake.test"}, s.f.ext...)
		if s.f.pipelining {
			ext = append(ext, "PIPELINING")
		}
		for i, e := range ext {
			sep := "-"
			if i == len(ext)-1 {
				sep = " "
			}
			s.out.WriteString("250" + sep + e + "\r\n")
		}
		return true, true
	case "MAIL":
		if s.msg != nil {
			s.say(verb, line, "503 5.5.1 nested MAIL command", "")
			break
		}
		from, _, _ := strings.Cut(strings.TrimPrefix(line, "MAIL FROM:<"), ">")
		s.msg, s.accepted = &fakeMsg{from: from}, 0
		if !s.say(verb, line, "250 2.1.0 ok", "250") {
			s.msg = nil
		}
	case "RCPT":
		if s.msg == nil {
			s.say(verb, line, "503 5.5.1 need MAIL", "")
			break
		}
		to, _, _ := strings.Cut(strings.TrimPrefix(line, "RCPT TO:<"), ">")
		if s.say(verb, line, "250 2.1.5 ok", "25") {
			s.msg.to = append(s.msg.to, to)
			s.accepted++
		}
	case "DATA":
		return s.data(verb, line)
	case "RSET":
		s.msg = nil
		s.say(verb, line, "250 2.0.0 ok", "")
	case "NOOP":
		s.say(verb, line, "250 2.0.0 ok", "")
	case "QUIT":
		s.out.WriteString("221 2.0.0 bye\r\n")
		s.flush()
		return false, false
	default:
		s.say(verb, line, "500 5.5.2 unknown command", "")
	}
	return false, true
}

// data answers DATA, reads the content and answers the dot. With
// pipelining, the dot's reply waits: the next group may follow the content
// in the same write; if nothing comes, the client waits for this reply.
func (s *fakeConn) data(verb, line string) (flush, ok bool) {
	if s.msg == nil || s.accepted == 0 {
		s.say(verb, line, "554 5.5.1 no valid recipients", "")
		return true, true
	}
	go354 := s.say(verb, line, "354 go ahead", "354")
	if !s.flush() {
		return false, false
	}
	if !go354 {
		return false, true
	}
	data, err := readData(s.br)
	if err != nil {
		return false, false
	}
	if s.say(".", "", "250 2.0.0 queued", "250") {
		s.f.mu.Lock()
		s.msg.data = data
		s.f.msgs = append(s.f.msgs, *s.msg)
		s.f.mu.Unlock()
	}
	s.msg = nil
	if !s.f.pipelining {
		return true, true
	}
	s.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := s.br.Peek(1); err != nil {
		s.f.mu.Lock()
		s.f.idleEnds++
		s.f.mu.Unlock()
		return true, true
	}
	return false, true
}

func lastLine(s string) string {
	s = strings.TrimSuffix(s, "\r\n")
	if i := strings.LastIndex(s, "\r\n"); i >= 0 {
		return s[i+2:]
	}
	return s
}

// readData reads the content up to the lone dot and undoes dot-stuffing.
func readData(br *bufio.Reader) ([]byte, error) {
	var b bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return nil, errors.New("bare LF in data")
		}
		if line == ".\r\n" {
			return b.Bytes(), nil
		}
		b.WriteString(strings.TrimPrefix(line, "."))
	}
}

// setAnswer sets answer for the connections made from now on.
func (f *fake) setAnswer(fn func(verb, line string) string) {
	f.mu.Lock()
	f.answer = fn
	f.mu.Unlock()
}

func (f *fake) counts() (idleEnds, sessions int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idleEnds, f.sessions
}

func (f *fake) messages() []fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeMsg(nil), f.msgs...)
}

func (f *fake) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}
