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

func TestErrorLimit(t *testing.T) {
	tests := []struct {
		name    string
		refuse  func(c *rawConn) response
		offered int // Recipient calls per refusal
	}{
		{"refused by the handler", func(c *rawConn) response { return c.cmd("RCPT TO:<victim@gmail.com>") }, 1},
		{"refused by the parser", func(c *rawConn) response { return c.cmd("RCPT TO:<security%evil.com@ex.org>") }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{accept: onlySecurity}
			_, addr := startServer(t, Options{MaxErrors: 3}, rec)
			c := dialRaw(t, addr)
			c.greet()
			c.cmd("MAIL FROM:<a@b.test>")
			for i := 1; i <= 2; i++ {
				if r := tc.refuse(c); r.code != 550 {
					t.Fatalf("refusal %d = %v, want 550", i, r)
				}
			}
			if r := tc.refuse(c); r.code != 421 || r.enhanced != "4.7.0" {
				t.Fatalf("refusal 3 = %v, want 421 4.7.0", r)
			}
			if !c.closed() {
				t.Fatal("connection open after the error limit")
			}
			if got := len(rec.offered()); got != 3*tc.offered {
				t.Errorf("Recipient called %d times, want %d", got, 3*tc.offered)
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

func TestReadTimeout(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *rawConn)
	}{
		{"idle after EHLO", func(t *testing.T, c *rawConn) {}},
		{"stalled inside DATA", func(t *testing.T, c *rawConn) {
			begin(t, c)
			if r := c.cmd("DATA"); r.code != 354 {
				t.Fatalf("DATA = %v", r)
			}
			c.send("Subject: slow\r\n")
		}},
		{"stalled inside BDAT", func(t *testing.T, c *rawConn) {
			begin(t, c)
			c.send("BDAT 100 LAST\r\nSubject: slow\r\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			_, addr := startServer(t, Options{ReadTimeout: 200 * time.Millisecond}, rec)
			c := dialRaw(t, addr)
			c.greet()
			tc.run(t, c)
			start := time.Now()
			r := c.read()
			if r.code != 421 || !strings.HasPrefix(r.enhanced, "4.4.") {
				t.Errorf("reply after the stall = %v, want 421 4.4.x", r)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("stalled client answered after %v, want about 200ms", took)
			}
			for {
				if _, err := c.tryRead(); err != nil {
					break
				}
			}
			if got := len(rec.delivered()); got != 0 {
				t.Errorf("Handle called %d times, want 0", got)
			}
		})
	}
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
