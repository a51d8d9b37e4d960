package smtpd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzConn is a client connection made of a fixed script: reads drain the script,
// then EOF; writes are recorded. Deadlines are accepted and ignored, since a script
// never blocks.
type fuzzConn struct {
	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
	done   chan struct{}
}

func newFuzzConn(script []byte) *fuzzConn {
	return &fuzzConn{in: bytes.NewReader(script), done: make(chan struct{})}
}

func (c *fuzzConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.in.Read(b)
}

func (c *fuzzConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(b)
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	return nil
}

func (c *fuzzConn) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

func (c *fuzzConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 25), Port: 25} }
func (c *fuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40000}
}
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// oneShot is a listener that yields one connection, then blocks until closed.
type oneShot struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newOneShot(c net.Conn) *oneShot {
	l := &oneShot{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conns <- c
	return l
}

func (l *oneShot) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneShot) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *oneShot) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 25), Port: 25} }

// fuzzHandler stores everything except messages containing FAIL (a storage error)
// and refuses recipients whose local part starts with "x".
type fuzzHandler struct {
	mu     sync.Mutex
	stored [][]byte
	bad    []string
}

func (h *fuzzHandler) Recipient(_ context.Context, _, rcpt string) error {
	if strings.HasPrefix(rcpt, "x") {
		return refusal(550, "5.1.1", "No such recipient here")
	}
	return nil
}

func (h *fuzzHandler) Handle(_ context.Context, env Envelope, msg []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := bareLineEnd(msg); i >= 0 {
		h.bad = append(h.bad, "bare CR or LF in a handed-over message")
	}
	if len(env.To) == 0 {
		h.bad = append(h.bad, "message without recipients")
	}
	if bytes.Contains(msg, []byte("FAIL")) {
		return errors.New(secret)
	}
	h.stored = append(h.stored, msg)
	return nil
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runScript plays script as a client against a fresh server and returns what the
// Handler stored, the server's output and its log.
func runScript(t *testing.T, script []byte) (*fuzzHandler, string, string) {
	h := &fuzzHandler{}
	var logBuf lockedBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := New(Options{
		Domain:          "mx.test",
		MaxMessageBytes: 64 << 10,
		MaxRecipients:   5,
		MaxLineLength:   1000,
		MaxErrors:       8,
		MaxReceived:     5,
	}, h, log)
	c := newFuzzConn(script)
	l := newOneShot(c)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("session did not end for script %q", script)
	}
	srv.Close()
	<-served
	return h, c.output(), logBuf.String()
}

// FuzzSession feeds arbitrary bytes to the server as a client dialogue (docs/threat-model.md B1,
// §2.5). Properties: no panic in smtpd (go-smtp recovers panics and logs them, so the
// log is checked), no bare CR or LF in a message handed over, one "OK: queued" reply
// per stored message and none without, and no internal text or go-smtp's leaking 554
// on the wire.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nBDAT 20 LAST\r\nSubject: x\r\n\r\nbody\r\nQUIT\r\n",
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nDATA\r\nSubject: FAIL\r\n\r\nbody\r\n.\r\nNOOP\r\n",
		"EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<x@ex.org>\r\nRCPT TO:<\"a@b\"@ex.org>\r\nRCPT TO:<@r.test:s@ex.org>\r\nDATA\r\n.\r\n",
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nBDAT 5\r\nabcdeRSET\r\nBDAT 3 LAST\r\nxyz",
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\nBDAT 100 LAST\r\nshort",
		"HELO c.test\r\nSTARTTLS\r\nVRFY x\r\nEXPN y\r\nAUTH PLAIN AGJvYgBwdw==\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		h, out, logText := runScript(t, script)

		h.mu.Lock()
		stored, bad := len(h.stored), h.bad
		h.mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("handler saw: %q", bad)
		}
		if queued := strings.Count(out, " OK: queued\r\n"); queued != stored {
			t.Errorf("%d messages stored, %d acknowledged with 250\noutput:\n%s", stored, queued, out)
		}
		for _, leak := range []string{"bbolt", "secret", "transaction failed"} {
			if strings.Contains(out, leak) {
				t.Errorf("output contains %q:\n%s", leak, out)
			}
		}
		if strings.Contains(logText, "panic") && strings.Contains(logText, "embargo/smtpd.") {
			t.Errorf("panic in smtpd:\n%s", logText)
		}
	})
}

// TestRunScript checks the fuzz harness itself, so FuzzSession's properties are not
// vacuous: good scripts store, smuggling scripts store at most the outer message.
func TestRunScript(t *testing.T) {
	const head = "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\n"
	tests := []struct {
		name   string
		script string
		stored int
	}{
		{"DATA", head + "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", 1},
		{"BDAT", head + "BDAT 20 LAST\r\nSubject: x\r\n\r\nbody\r\nQUIT\r\n", 1},
		{"storage error", head + "DATA\r\nSubject: FAIL\r\n\r\n.\r\n", 0},
		{"smuggling", head + "DATA\r\n" + smuggleFirst + "\n.\n" + smuggled + "QUIT\r\n", 0},
		{"two messages", head + "DATA\r\nSubject: 1\r\n.\r\n" + head[len("EHLO c.test\r\n"):] + "DATA\r\nSubject: 2\r\n.\r\n", 2},
		{"empty message", head + "DATA\r\n.\r\n", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, out, _ := runScript(t, []byte(tc.script))
			if len(h.stored) != tc.stored || strings.Count(out, " OK: queued\r\n") != tc.stored {
				t.Errorf("stored %d, want %d; output:\n%s", len(h.stored), tc.stored, out)
			}
		})
	}
}
