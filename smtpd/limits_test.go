package smtpd

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// dialFrom connects from a given loopback address (Linux routes all of 127/8 to lo).
func dialFrom(t testing.TB, local, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s: %v", local, err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRaw(t, nc)
}

// waitFor polls cond, for effects of a close that the server sees asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnectionCaps(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.2 and 127.0.0.3 on the loopback interface")
	}
	srv, addr := startServer(t, Options{MaxConnections: 3, MaxConnectionsPerIP: 2}, &recorder{})

	greeting := func(c *rawConn) response { return c.read() }
	// Two idle connections from 127.0.0.1 that never send EHLO still count.
	a1 := dialFrom(t, "127.0.0.1", addr)
	a2 := dialFrom(t, "127.0.0.1", addr)
	for i, c := range []*rawConn{a1, a2} {
		if r := greeting(c); r.code != 220 {
			t.Fatalf("connection %d from 127.0.0.1: greeting %v, want 220", i+1, r)
		}
	}

	steps := []struct {
		name     string
		from     string
		code     int
		enhanced string
	}{
		{"third from the same IP is over the per-IP cap", "127.0.0.1", 421, "4.7.0"},
		{"first from another IP fits the total", "127.0.0.2", 220, ""},
		{"fourth in total is over the total cap", "127.0.0.3", 421, "4.7.0"},
	}
	var b1 *rawConn
	for _, s := range steps {
		// Dialled with the parent t: the accepted connection must stay open.
		c := dialFrom(t, s.from, addr)
		r := greeting(c)
		if r.code != s.code || r.enhanced != s.enhanced {
			t.Fatalf("%s: greeting = %v, want %d %s", s.name, r, s.code, s.enhanced)
		}
		if s.code == 421 && !c.closed() {
			t.Errorf("%s: refused connection left open", s.name)
		}
		if s.code == 220 {
			b1 = c
		}
	}
	if n := srv.lim.open(); n != 3 {
		t.Errorf("open connections = %d, want 3 (refused ones are not counted)", n)
	}

	// Closing one frees its slot: the server sees the close asynchronously.
	a1.nc.Close()
	waitFor(t, "the slot to be freed", func() bool { return srv.lim.open() == 2 })
	c := dialFrom(t, "127.0.0.1", addr)
	if r := greeting(c); r.code != 220 {
		t.Errorf("greeting after a slot was freed = %v, want 220", r)
	}
	b1.cmd("QUIT")
}

func TestIPKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 25}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 25}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 25}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/run/embargo/lmtp", Net: "unix"}, ""},
	}
	for _, tc := range tests {
		if got := ipKey(tc.addr); got != tc.want {
			t.Errorf("ipKey(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestErrorLimit: every kind of refusal by smtpd or the Handler counts towards
// MaxErrors, and the refusal that reaches it is answered 421 4.7.0 and closes.
func TestErrorLimit(t *testing.T) {
	mail := func(c *rawConn) { c.cmd("MAIL FROM:<a@b.test>") }
	greeted := func(c *rawConn) { c.greet() }
	inMail := func(c *rawConn) { c.greet(); mail(c) }
	tests := []struct {
		name    string
		opts    Options
		setup   func(c *rawConn) // from the connection's start
		refuse  func(c *rawConn) response
		code    int // the reply to each refusal before the limit
		offered int // Recipient calls per refusal
	}{
		{name: "refused by the handler", setup: inMail, refuse: func(c *rawConn) response { return c.cmd("RCPT TO:<victim@gmail.com>") }, code: 550, offered: 1},
		{name: "refused by the parser", setup: inMail, refuse: func(c *rawConn) response { return c.cmd("RCPT TO:<security%evil.com@ex.org>") }, code: 550},
		// go-smtp's own 452 never reached the session: 10,000 RCPTs never ended.
		{name: "too many recipients", opts: Options{MaxRecipients: 1},
			setup:  func(c *rawConn) { inMail(c); c.cmd("RCPT TO:<security@ex.org>") },
			refuse: func(c *rawConn) response { return c.cmd("RCPT TO:<security@ex.org>") }, code: 452},
		{name: "AUTH parameter", setup: greeted,
			refuse: func(c *rawConn) response { return c.cmd("MAIL FROM:<a@b.test> AUTH=<>") }, code: 555},
		{name: "empty message", setup: greeted, refuse: func(c *rawConn) response {
			mail(c)
			c.cmd("RCPT TO:<security@ex.org>")
			c.cmd("DATA")
			return c.cmd(".")
		}, code: 554, offered: 1},
		{name: "control character in EHLO", setup: func(c *rawConn) { c.read() },
			refuse: func(c *rawConn) response { return c.cmd("EHLO a\x00b") }, code: 501},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{accept: onlySecurity}
			tc.opts.MaxErrors = 3
			_, addr := startServer(t, tc.opts, rec)
			c := dialRaw(t, addr)
			tc.setup(c)
			before := len(rec.offered())
			for i := 1; i <= 2; i++ {
				if r := tc.refuse(c); r.code != tc.code {
					t.Fatalf("refusal %d = %v, want %d", i, r, tc.code)
				}
			}
			if r := tc.refuse(c); r.code != 421 || r.enhanced != "4.7.0" {
				t.Fatalf("refusal 3 = %v, want 421 4.7.0", r)
			}
			if !c.closed() {
				t.Fatal("connection open after the error limit")
			}
			if got := len(rec.offered()) - before; got != 3*tc.offered {
				t.Errorf("Recipient called %d times, want %d", got, 3*tc.offered)
			}
			if got := len(rec.delivered()); got != 0 {
				t.Errorf("Handle called %d times, want 0", got)
			}
		})
	}
}

// TestErrorLimitPipelined sends more refusals than the limit in one write: nothing after
// the 421 reaches the Handler, although go-smtp has the commands buffered.
func TestErrorLimitPipelined(t *testing.T) {
	rec := &recorder{accept: onlySecurity}
	_, addr := startServer(t, Options{MaxErrors: 3}, rec)
	c := dialRaw(t, addr)
	c.greet()
	var b strings.Builder
	b.WriteString("MAIL FROM:<a@b.test>\r\n")
	for i := range 6 {
		fmt.Fprintf(&b, "RCPT TO:<victim%d@gmail.com>\r\n", i)
	}
	b.WriteString("RCPT TO:<security@ex.org>\r\nDATA\r\n" + simpleMsg + ".\r\n")
	c.send(b.String())

	var codes []int
	for {
		r, err := c.tryRead()
		if err != nil {
			break
		}
		codes = append(codes, r.code)
	}
	if want := "[250 550 550 421]"; fmt.Sprint(codes) != want {
		t.Errorf("replies = %v, want %s and close", codes, want)
	}
	if got := len(rec.offered()); got != 3 {
		t.Errorf("Recipient called %d times, want 3", got)
	}
	if got := len(rec.delivered()); got != 0 {
		t.Errorf("Handle called %d times, want 0", got)
	}
}

func TestSessionLifetime(t *testing.T) {
	_, addr := startServer(t, Options{SessionLifetime: 300 * time.Millisecond}, &recorder{})
	c := dialRaw(t, addr)
	c.greet()
	start := time.Now()
	// A busy client (a NOOP every 20 ms) never idles, but the lifetime still ends it.
	var last response
	for time.Since(start) < 5*time.Second {
		r, err := c.tryRead2("NOOP")
		if err != nil {
			break
		}
		last = r
		if r.code != 250 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("session ended after %v, want about 300ms", took)
	}
	if last.code != 421 {
		t.Errorf("last reply = %v, want 421 (go-smtp's timeout reply)", last)
	}
	if !c.closed() {
		t.Error("connection open after its lifetime")
	}
}

// tryRead2 sends line and reads the reply, reporting a closed connection as an error.
func (c *rawConn) tryRead2(line string) (response, error) {
	if _, err := c.nc.Write([]byte(line + "\r\n")); err != nil {
		return response{}, err
	}
	return c.tryRead()
}

func TestSessionLifetimeBeforeEHLO(t *testing.T) {
	_, addr := startServer(t, Options{SessionLifetime: 200 * time.Millisecond}, &recorder{})
	c := dialRaw(t, addr)
	if r := c.read(); r.code != 220 {
		t.Fatalf("greeting = %v", r)
	}
	start := time.Now()
	r := c.read() // silent client
	if r.code != 421 {
		t.Errorf("reply to a silent client = %v, want 421", r)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("silent client closed after %v, want about 200ms", took)
	}
}

// TestReadTimeout: a client that stalls gets one 421 4.4.2 at the read timeout and
// the connection closes. A command line without its CRLF is not run: bufio hands a
// partial line to go-smtp without the timeout error, and go-smtp used to run it and
// wait another timeout, so a byte per timeout kept a session alive until its lifetime.
func TestReadTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name    string
		run     func(t *testing.T, c *rawConn)
		text    string // in the 421's text
		offered int    // Recipient calls in all
	}{
		{"idle after EHLO", func(t *testing.T, c *rawConn) {}, "waiting for a command", 0},
		{"partial NOOP", func(t *testing.T, c *rawConn) { c.send("NOOP") }, "not ended with CRLF", 0},
		{"partial RCPT", func(t *testing.T, c *rawConn) {
			c.cmd("MAIL FROM:<a@b.test>")
			c.send("RCPT TO:<security@ex.org>")
		}, "not ended with CRLF", 0},
		{"partial DATA", func(t *testing.T, c *rawConn) { begin(t, c); c.send("DATA") }, "not ended with CRLF", 1},
		{"partial BDAT", func(t *testing.T, c *rawConn) { begin(t, c); c.send("BDAT 4 LAST") }, "not ended with CRLF", 1},
		{"partial QUIT", func(t *testing.T, c *rawConn) { c.send("QUIT") }, "not ended with CRLF", 0},
		{"byte drip", func(t *testing.T, c *rawConn) { drip(t, c, "NOOP", timeout/8) }, "not ended with CRLF", 0},
		{"stalled inside DATA", func(t *testing.T, c *rawConn) {
			begin(t, c)
			if r := c.cmd("DATA"); r.code != 354 {
				t.Fatalf("DATA = %v", r)
			}
			c.send("Subject: slow\r\n")
		}, "message transfer", 1},
		// go-smtp sets the deadline at the DATA line and does not extend it: the whole
		// message must arrive within the timeout, a floor on the data rate.
		{"drip inside DATA", func(t *testing.T, c *rawConn) {
			begin(t, c)
			if r := c.cmd("DATA"); r.code != 354 {
				t.Fatalf("DATA = %v", r)
			}
			drip(t, c, "Subject: slow\r\n", timeout/8)
		}, "message transfer", 1},
		{"stalled inside BDAT", func(t *testing.T, c *rawConn) {
			begin(t, c)
			c.send("BDAT 100 LAST\r\nSubject: slow\r\n")
		}, "message transfer", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			_, addr := startServer(t, Options{ReadTimeout: timeout}, rec)
			c := dialRaw(t, addr)
			c.greet()
			start := time.Now()
			tc.run(t, c)
			r := c.read()
			took := time.Since(start)
			if r.code != 421 || r.enhanced != "4.4.2" || !strings.Contains(r.text, tc.text) {
				t.Errorf("reply after the stall = %v, want 421 4.4.2 with %q", r, tc.text)
			}
			if !c.closed() {
				t.Error("connection open after the timeout's 421")
			}
			if took > 3*timeout {
				t.Errorf("stalled client answered after %v, want about %v", took, timeout)
			}
			if got := len(rec.offered()); got != tc.offered {
				t.Errorf("Recipient called %d times, want %d", got, tc.offered)
			}
			if got := len(rec.delivered()); got != 0 {
				t.Errorf("Handle called %d times, want 0", got)
			}
		})
	}
}

// drip writes one byte of s every interval, over and over, in the background until
// the server closes the connection or 5 s pass: a client that is never idle.
func drip(t *testing.T, c *rawConn, s string, every time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; time.Duration(i)*every < 5*time.Second; i++ {
			if _, err := c.nc.Write([]byte{s[i%len(s)]}); err != nil {
				return // the server closed: expected
			}
			time.Sleep(every)
		}
	}()
	t.Cleanup(func() { c.nc.Close(); <-done })
}

// TestTruncatedBDAT: a client announcing a chunk and closing early must not have the
// fragment stored (go-smtp's io.Copy takes the EOF for the chunk's end).
func TestTruncatedBDAT(t *testing.T) {
	for _, last := range []string{" LAST", ""} {
		t.Run("BDAT 100"+last, func(t *testing.T) {
			rec := &recorder{}
			srv, addr := startServer(t, Options{}, rec)
			c := dialRaw(t, addr)
			c.greet()
			begin(t, c)
			c.send("BDAT 100" + last + "\r\nSubject: cut\r\n\r\nshort\r\n")
			c.nc.(*net.TCPConn).CloseWrite()
			for {
				if _, err := c.tryRead(); err != nil {
					break
				}
			}
			waitFor(t, "the session to end", func() bool { return srv.lim.open() == 0 })
			if got := rec.delivered(); len(got) != 0 {
				t.Errorf("Handle got %q, want nothing from a truncated chunk", got[0].msg)
			}
		})
	}
}

// TestPartialLineAtEOF: a command line cut off by the client's close is not run either
// (bufio hands it over without the EOF).
func TestPartialLineAtEOF(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialRaw(t, addr)
	c.greet()
	c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>")
	c.nc.(*net.TCPConn).CloseWrite()
	if r := c.read(); r.code != 250 {
		t.Fatalf("MAIL = %v, want 250", r)
	}
	if r := c.read(); r.code != 421 || !strings.Contains(r.text, "not ended with CRLF") {
		t.Errorf("reply to the cut-off line = %v, want 421 saying why", r)
	}
	if !c.closed() {
		t.Error("connection open")
	}
	if got := rec.offered(); len(got) != 0 {
		t.Errorf("Recipient called with %q, want nothing", got)
	}
}
