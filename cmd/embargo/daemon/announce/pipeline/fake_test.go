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

	mu         sync.Mutex
	msgs       []fakeMsg
	cmds       []string // every command line, in order
	idleEnds   int      // content ends answered only after the client went quiet
	errs       []string // protocol violations the fake saw
	sessions   int
	transcript bytes.Buffer
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

// session runs one connection. out collects replies; flush sends them.
func (f *fake) session(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var out bytes.Buffer
	flush := func() bool {
		_, err := c.Write(out.Bytes())
		out.Reset()
		return err == nil
	}
	f.mu.Lock()
	answer := f.answer
	f.mu.Unlock()
	say := func(verb, line, def string) {
		if answer != nil {
			if a := answer(verb, line); a != "" {
				def = a
			}
		}
		out.WriteString(def + "\r\n")
	}
	say("CONNECT", "", "220 fake.test ESMTP")
	flush()
	var msg *fakeMsg
	accepted := 0
	for {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		f.mu.Lock()
		f.cmds = append(f.cmds, line)
		f.mu.Unlock()
		if !f.pipelining && br.Buffered() > 0 && verb != "QUIT" {
			f.fail("%q arrived with more behind it, but PIPELINING was not offered", line)
		}
		switch verb {
		case "EHLO":
			ext := append([]string{"fake.test"}, f.ext...)
			if f.pipelining {
				ext = append(ext, "PIPELINING")
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				out.WriteString("250" + sep + e + "\r\n")
			}
			flush()
			continue
		case "MAIL":
			if msg != nil {
				say(verb, line, "503 5.5.1 nested MAIL command")
				break
			}
			from, _, _ := strings.Cut(strings.TrimPrefix(line[len("MAIL FROM:<"):], ""), ">")
			msg, accepted = &fakeMsg{from: from}, 0
			say(verb, line, "250 2.1.0 ok")
			if r := out.String(); !strings.HasPrefix(lastLine(r), "250") {
				msg = nil
			}
		case "RCPT":
			if msg == nil {
				say(verb, line, "503 5.5.1 need MAIL")
				break
			}
			to, _, _ := strings.Cut(line[len("RCPT TO:<"):], ">")
			say(verb, line, "250 2.1.5 ok")
			if strings.HasPrefix(lastLine(out.String()), "25") {
				msg.to = append(msg.to, to)
				accepted++
			}
		case "DATA":
			switch {
			case msg == nil || accepted == 0:
				say(verb, line, "554 5.5.1 no valid recipients")
				flush()
				continue
			}
			say(verb, line, "354 go ahead")
			refused := !strings.HasPrefix(lastLine(out.String()), "354")
			if !flush() {
				return
			}
			if refused {
				continue
			}
			data, err := readData(br)
			if err != nil {
				return
			}
			say(".", "", "250 2.0.0 queued")
			if strings.HasPrefix(lastLine(out.String()), "250") {
				f.mu.Lock()
				msg.data = data
				f.msgs = append(f.msgs, *msg)
				f.mu.Unlock()
			}
			msg = nil
			if f.pipelining {
				// The next group may follow the content in the same
				// write; if nothing comes, the client waits for this reply.
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, err := br.Peek(1); err != nil {
					f.mu.Lock()
					f.idleEnds++
					f.mu.Unlock()
					if !flush() {
						return
					}
				}
				continue
			}
		case "RSET":
			msg = nil
			say(verb, line, "250 2.0.0 ok")
		case "NOOP":
			say(verb, line, "250 2.0.0 ok")
		case "QUIT":
			out.WriteString("221 2.0.0 bye\r\n")
			flush()
			return
		default:
			say(verb, line, "500 5.5.2 unknown command")
		}
		if strings.HasPrefix(lastLine(out.String()), "421") {
			flush()
			return
		}
		if !f.pipelining {
			if !flush() {
				return
			}
		}
	}
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
