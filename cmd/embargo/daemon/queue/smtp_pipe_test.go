package queue

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// burstServer is a raw SMTP server on loopback that records each read off
// the connection: what the client wrote at once arrives in one read, since
// the server answers only after reading and the client waits for answers
// before writing again. answer, if set, may replace the reply to a command
// line ("." for the end of data); "" keeps the default. A 421 closes the
// connection after it is written (RFC 5321 §3.8).
type burstServer struct {
	ln         net.Listener
	pipelining bool
	answer     func(session int, line string) string

	mu       sync.Mutex
	reads    [][]string // per session, each read
	messages []string   // each message's content as received, with its dot
	conns    []net.Conn
}

func newBurstServer(t *testing.T, pipelining bool, answer func(session int, line string) string) *burstServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &burstServer{ln: ln, pipelining: pipelining, answer: answer}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.reads = append(s.reads, nil)
			n := len(s.reads) - 1
			s.mu.Unlock()
			go s.session(c, n)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *burstServer) relay(t *testing.T) *smtpRelay {
	return testRelay(t, s.ln.Addr().String())
}

// session serves one connection: whole command lines as they come, the
// content up to its dot, and the replies to one read in one write.
func (s *burstServer) session(c net.Conn, n int) {
	defer c.Close()
	c.Write([]byte("220 burst.test ESMTP\r\n"))
	var in []byte
	var mail, data bool
	accepted := 0
	buf := make([]byte, 256<<10)
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := c.Read(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.reads[n] = append(s.reads[n], string(buf[:k]))
		s.mu.Unlock()
		in = append(in, buf[:k]...)
		var out bytes.Buffer
		for {
			var line, def string
			if data {
				end := bytes.Index(in, []byte("\r\n.\r\n")) + 2
				if bytes.HasPrefix(in, []byte(".\r\n")) {
					end = 0
				} else if end < 2 {
					break
				}
				s.mu.Lock()
				s.messages = append(s.messages, string(in[:end+3]))
				s.mu.Unlock()
				in, line, def, data, mail = in[end+3:], ".", "250 2.0.0 queued", false, false
			} else {
				i := bytes.Index(in, []byte("\r\n"))
				if i < 0 {
					break
				}
				line, in = string(in[:i]), in[i+2:]
				def = s.reply(line, &mail, accepted)
			}
			if s.answer != nil {
				if a := s.answer(n, line); a != "" {
					def = a
				}
			}
			switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); {
			case verb == "MAIL" && strings.HasPrefix(def, "250"):
				mail, accepted = true, 0
			case verb == "RCPT" && strings.HasPrefix(def, "25"):
				accepted++
			case verb == "DATA":
				data = strings.HasPrefix(def, "354")
			}
			out.WriteString(def + "\r\n")
			if strings.HasPrefix(def, "421") || strings.HasPrefix(def, "221") {
				c.Write(out.Bytes())
				return
			}
		}
		if out.Len() > 0 {
			c.Write(out.Bytes())
		}
	}
}

// reply is the default answer to a command line.
func (s *burstServer) reply(line string, mail *bool, accepted int) string {
	switch strings.ToUpper(strings.Fields(line + " x")[0]) {
	case "EHLO":
		if s.pipelining {
			return "250-burst.test\r\n250-SIZE 10000000\r\n250 PIPELINING"
		}
		return "250-burst.test\r\n250 SIZE 10000000"
	case "MAIL":
		if *mail {
			return "503 5.5.1 nested MAIL command"
		}
		return "250 2.1.0 ok"
	case "RCPT":
		if !*mail {
			return "503 5.5.1 need MAIL"
		}
		return "250 2.1.5 ok"
	case "DATA":
		switch {
		case !*mail:
			return "503 5.5.1 need MAIL"
		case accepted == 0:
			return "554 5.5.1 no valid recipients" // RFC 2920 §3.1
		}
		return "354 go ahead"
	case "RSET":
		*mail = false
		return "250 2.0.0 ok"
	case "QUIT":
		return "221 2.0.0 bye"
	}
	return "500 5.5.2 unknown command"
}

// sessionReads returns the reads of each session, after the EHLO.
func (s *burstServer) sessionReads() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]string, len(s.reads))
	for i, r := range s.reads {
		out[i] = append([]string(nil), r[1:]...)
	}
	return out
}

func (s *burstServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.messages...)
}

// burstMsg is message n to the recipients to.
func burstMsg(n int, to ...string) Outgoing {
	data := fmt.Sprintf("From: security@embargo.test\r\nSubject: copy %d\r\n\r\n.a line with a dot\r\nbody %d\r\n", n, n)
	return Outgoing{From: "security+bounces@embargo.test", To: to, Data: []byte(data)}
}

// envelope is what a client pipelining RFC 2920 §3.1 writes at once for m.
func envelope(m Outgoing) string {
	g := fmt.Sprintf("MAIL FROM:<%s> SIZE=%d\r\n", m.From, len(m.Data))
	for _, rcpt := range m.To {
		g += "RCPT TO:<" + rcpt + ">\r\n"
	}
	return g + "DATA\r\n"
}

// content is m's content as sent: dot-stuffed (RFC 5321 §4.5.2), with the dot.
func content(m Outgoing) string {
	return strings.ReplaceAll("\r\n"+string(m.Data), "\r\n.", "\r\n..")[2:] + ".\r\n"
}

// TestSMTPRelayPipelines: to a relay that offers PIPELINING, MAIL, every
// RCPT and DATA go in one write, the content and its dot in the next; in a
// batch, each copy's content goes in the same write as the next copy's
// MAIL, RCPT and DATA (RFC 2920 §3.1). Two writes for the first copy, one
// for each after it.
func TestSMTPRelayPipelines(t *testing.T) {
	s := newBurstServer(t, true, nil)
	r := s.relay(t)
	one := burstMsg(0, "a@src.test", "b@src.test")
	if err := r.Send(t.Context(), one.From, one.To, one.Data); err != nil {
		t.Fatal(err)
	}
	batch := []Outgoing{burstMsg(1, "c@src.test"), burstMsg(2, "d@src.test", "e@src.test"), burstMsg(3, "f@src.test")}
	for i, err := range r.SendBatch(t.Context(), batch) {
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	want := []string{envelope(one), content(one), // RSET-free: the session is clean between messages
		envelope(batch[0]),
		content(batch[0]) + envelope(batch[1]),
		content(batch[1]) + envelope(batch[2]),
		content(batch[2])}
	reads := s.sessionReads()
	if len(reads) != 1 {
		t.Fatalf("%d sessions, want 1", len(reads))
	}
	if strings.Join(reads[0], "|") != strings.Join(want, "|") {
		t.Errorf("the relay read\n%q\nwant\n%q", reads[0], want)
	}
	if n := len(s.received()); n != 4 {
		t.Errorf("%d messages received, want 4", n)
	}
}

// TestSMTPRelayLockstepWithoutPipelining: without PIPELINING each command
// waits for its reply (RFC 5321): one command line a write.
func TestSMTPRelayLockstepWithoutPipelining(t *testing.T) {
	s := newBurstServer(t, false, nil)
	r := s.relay(t)
	batch := []Outgoing{burstMsg(1, "c@src.test", "d@src.test"), burstMsg(2, "e@src.test")}
	for i, err := range r.SendBatch(t.Context(), batch) {
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	var want []string
	for _, m := range batch {
		for l := range strings.SplitAfterSeq(envelope(m), "\r\n") {
			if l != "" {
				want = append(want, l)
			}
		}
		want = append(want, content(m))
	}
	reads := s.sessionReads()
	if len(reads) != 1 || strings.Join(reads[0], "|") != strings.Join(want, "|") {
		t.Errorf("the relay read\n%q\nwant one session of\n%q", reads, want)
	}
}

// TestSMTPRelayPipelinedRefusals: in a pipelined group, each recipient's
// refusal is kept (4xx temporary, 5xx permanent) while the others get the
// message; a copy with every recipient refused gets DATA refused (RFC 2920
// §3.1: 554), sends no content and leaves the session usable, an RSET
// ahead of the next MAIL; the copies after it go as if nothing happened.
func TestSMTPRelayPipelinedRefusals(t *testing.T) {
	s := newBurstServer(t, true, func(_ int, line string) string {
		switch {
		case strings.HasPrefix(line, "RCPT TO:<perm"):
			return "550 5.1.1 no such user"
		case strings.HasPrefix(line, "RCPT TO:<temp"):
			return "451 4.3.0 try later"
		}
		return ""
	})
	r := s.relay(t)
	batch := []Outgoing{
		burstMsg(1, "ok1@src.test", "perm1@src.test", "temp1@src.test"),
		burstMsg(2, "perm2@src.test", "temp2@src.test"),
		burstMsg(3, "ok3@src.test"),
	}
	errs := r.SendBatch(t.Context(), batch)
	var rcptErr *RcptError
	if !errors.As(errs[0], &rcptErr) || len(rcptErr.Failed) != 2 ||
		!IsPermanent(rcptErr.Failed["perm1@src.test"]) || IsPermanent(rcptErr.Failed["temp1@src.test"]) {
		t.Errorf("message 1: %v, want perm1 refused for good and temp1 for now", errs[0])
	}
	if !errors.As(errs[1], &rcptErr) || len(rcptErr.Failed) != 2 || IsPermanent(errs[1]) {
		t.Errorf("message 2: %v, want both recipients refused, one temporarily", errs[1])
	}
	if errs[2] != nil {
		t.Errorf("message 3: %v", errs[2])
	}
	got := s.received()
	if len(got) != 2 || got[0] != content(batch[0]) || got[1] != content(batch[2]) {
		t.Errorf("received %q, want messages 1 and 3", got)
	}
	want := []string{envelope(batch[0]), content(batch[0]) + envelope(batch[1]), "RSET\r\n" + envelope(batch[2]), content(batch[2])}
	reads := s.sessionReads()
	if len(reads) != 1 || strings.Join(reads[0], "|") != strings.Join(want, "|") {
		t.Errorf("the relay read\n%q\nwant one session of\n%q", reads, want)
	}
	// The session is still good for the next call.
	m := burstMsg(4, "ok4@src.test")
	if err := r.Send(t.Context(), m.From, m.To, m.Data); err != nil || len(s.sessionReads()) != 1 {
		t.Errorf("next Send = %v over %d sessions, want nil over 1", err, len(s.sessionReads()))
	}
}

// TestSMTPRelayAllRecipientsRefused: one copy, every RCPT refused: the
// per-recipient refusals, no content, and DATA's 554 is not taken for a
// failure of the connection, which goes back to the pool.
func TestSMTPRelayAllRecipientsRefused(t *testing.T) {
	s := newBurstServer(t, true, func(_ int, line string) string {
		if strings.HasPrefix(line, "RCPT") {
			return "550 5.1.1 no such user"
		}
		return ""
	})
	r := s.relay(t)
	m := burstMsg(1, "a@src.test", "b@src.test")
	err := r.Send(t.Context(), m.From, m.To, m.Data)
	var rcptErr *RcptError
	if !errors.As(err, &rcptErr) || len(rcptErr.Failed) != 2 || !IsPermanent(err) {
		t.Fatalf("Send = %v, want both recipients refused for good", err)
	}
	if n := len(s.received()); n != 0 {
		t.Errorf("%d messages received, want none", n)
	}
	r.mu.Lock()
	pooled := len(r.idle)
	r.mu.Unlock()
	if pooled != 1 {
		t.Errorf("%d connections in the pool, want the one used", pooled)
	}
}

// TestSMTPRelay421MidGroup: the relay says 421 (RFC 5321 §3.8) in the
// middle of a batch. Refused at RCPT, the copy fails for now (temporary,
// for the worker to retry), never sent twice here; refused at MAIL, it
// reached nothing and goes on a fresh connection at once; either way the
// copies after it go on the fresh connection, and the one before stays
// delivered.
func TestSMTPRelay421MidGroup(t *testing.T) {
	for _, at := range []string{"RCPT", "MAIL"} {
		t.Run(at, func(t *testing.T) {
			s := newBurstServer(t, true, func(session int, line string) string {
				if session == 0 && strings.HasPrefix(line, at) && strings.Contains(line, "<two@") {
					return "421 4.3.2 shutting down"
				}
				return ""
			})
			r := s.relay(t)
			batch := []Outgoing{burstMsg(1, "one@src.test"), burstMsg(2, "two@src.test"), burstMsg(3, "three@src.test")}
			for i := range batch {
				batch[i].From = strings.Split(batch[i].To[0], "@")[0] + "@embargo.test"
			}
			errs := r.SendBatch(t.Context(), batch)
			wantTwo := 0
			if at == "RCPT" {
				if errs[1] == nil || IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), "421") {
					t.Errorf("message 2: %v, want a temporary error with the 421", errs[1])
				}
			} else {
				wantTwo = 1
				if errs[1] != nil {
					t.Errorf("message 2: %v, want it sent on a fresh connection", errs[1])
				}
			}
			if errs[0] != nil || errs[2] != nil {
				t.Errorf("messages 1 and 3: %v, %v; want both delivered", errs[0], errs[2])
			}
			got := s.received()
			if len(got) != 2+wantTwo || got[0] != content(batch[0]) || got[len(got)-1] != content(batch[2]) {
				t.Errorf("received %q, want messages 1, 3 and %d of message 2", got, wantTwo)
			}
			if reads := s.sessionReads(); len(reads) != 2 {
				t.Errorf("%d sessions, want 2", len(reads))
			}
		})
	}
}
