package smtpd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// policyError is what a domain Handler returns to refuse on purpose.
type policyError struct {
	code     int
	enhanced string
	text     string
}

func (e *policyError) Error() string                  { return e.text }
func (e *policyError) SMTPStatus() (int, string)      { return e.code, e.enhanced }
func refusal(code int, enh, text string) *policyError { return &policyError{code, enh, text} }

// recorder is a recording Handler with failure knobs.
type recorder struct {
	// accept decides recipients; nil accepts all.
	accept func(rcpt string) error
	// handleErr is returned by Handle, after recording the message.
	handleErr error
	// handleDelay makes Handle slow, honouring ctx.
	handleDelay time.Duration

	mu    sync.Mutex
	rcpts []string // every address offered to Recipient
	msgs  []delivery
}

type delivery struct {
	env Envelope
	msg []byte
}

var _ Handler = (*recorder)(nil)

func (r *recorder) Recipient(_ context.Context, _, rcpt string) error {
	r.mu.Lock()
	r.rcpts = append(r.rcpts, rcpt)
	r.mu.Unlock()
	if r.accept != nil {
		return r.accept(rcpt)
	}
	return nil
}

func (r *recorder) Handle(ctx context.Context, env Envelope, msg []byte) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, delivery{env, msg})
	r.mu.Unlock()
	if r.handleDelay > 0 {
		select {
		case <-time.After(r.handleDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return r.handleErr
}

func (r *recorder) offered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.rcpts...)
}

func (r *recorder) delivered() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.msgs...)
}

// onlySecurity accepts security@ex.org, with the domain already lower-cased by smtpd
// and the local part compared case-insensitively by this fake's own policy, and
// refuses everything else as the domain layer would.
func onlySecurity(rcpt string) error {
	if strings.EqualFold(rcpt, "security@ex.org") {
		return nil
	}
	return refusal(550, "5.1.1", "No such recipient here")
}

// testLogger writes smtpd's log to the test log, so failures show the session. It
// stops when the test ends: goroutines of a closed connection (an abandoned BDAT
// transfer, a lingering close) may still log, and t.Log after the end is an error.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // registered before startServer's: runs after the server closed
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// startServer runs a Server for h on 127.0.0.1:0 and returns its address.
func startServer(t testing.TB, opts Options, h Handler) (*Server, string) {
	t.Helper()
	if opts.Domain == "" {
		opts.Domain = "mx.test"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(opts, h, testLogger(t))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve() = %v, want ErrServerClosed", err)
		}
	})
	return srv, l.Addr().String()
}

// dialClient connects go-smtp's client and greets.
func dialClient(t testing.TB, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// rawConn speaks SMTP byte by byte, for what go-smtp's client cannot send.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	tp *textproto.Reader
}

type response struct {
	code     int
	enhanced string // "5.1.1", or "" when absent
	text     string
}

func (r response) String() string {
	return strings.TrimSpace(strconv.Itoa(r.code) + " " + r.enhanced + " " + r.text)
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRaw(t, nc)
}

func newRaw(t testing.TB, nc net.Conn) *rawConn {
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, tp: textproto.NewReader(bufio.NewReader(nc))}
}

// greet reads the greeting and sends EHLO.
func (c *rawConn) greet() {
	c.t.Helper()
	if r := c.read(); r.code != 220 {
		c.t.Fatalf("greeting = %v, want 220", r)
	}
	if r := c.cmd("EHLO client.test"); r.code != 250 {
		c.t.Fatalf("EHLO = %v, want 250", r)
	}
}

// send writes s as it is, in one write.
func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends one line and reads the reply.
func (c *rawConn) cmd(line string) response {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.read()
}

// read reads one (possibly multi-line) reply; code 0 means the connection ended.
func (c *rawConn) read() response {
	c.t.Helper()
	r, err := c.tryRead()
	if err != nil {
		return response{}
	}
	return r
}

func (c *rawConn) tryRead() (response, error) {
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		return response{}, err
	}
	lines := strings.Split(msg, "\n")
	last := lines[len(lines)-1]
	r := response{code: code, text: last}
	if f, rest, ok := strings.Cut(last, " "); ok && len(f) >= 5 && f[1] == '.' && (f[0] == '2' || f[0] == '4' || f[0] == '5') {
		r.enhanced, r.text = f, rest
	}
	return r, nil
}

// closed reports whether the server closed the connection: the next read sees EOF.
func (c *rawConn) closed() bool {
	c.t.Helper()
	_, err := c.tp.ReadLine()
	return err != nil
}

// smtpCode extracts the code of an error from go-smtp's client.
func smtpCode(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, formatEnhanced(se.EnhancedCode)
	}
	return 0, ""
}

// sendMessage runs one transaction with go-smtp's client and returns the first error.
func sendMessage(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

const simpleMsg = "From: a@b.test\r\nTo: security@ex.org\r\nSubject: hello\r\n\r\nbody\r\n"

func TestDeliver(t *testing.T) {
	rec := &recorder{accept: onlySecurity}
	_, addr := startServer(t, Options{}, rec)
	c := dialClient(t, addr)
	if err := sendMessage(c, "a@b.test", []string{"SECURITY@EX.ORG", "security@ex.org"}, simpleMsg); err != nil {
		t.Fatalf("sendMessage() = %v, want nil", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("Quit() = %v", err)
	}

	got := rec.delivered()
	if len(got) != 1 {
		t.Fatalf("Handle called %d times, want 1", len(got))
	}
	d := got[0]
	if string(d.msg) != simpleMsg {
		t.Errorf("message = %q, want %q", d.msg, simpleMsg)
	}
	if d.env.From != "a@b.test" {
		t.Errorf("From = %q, want a@b.test", d.env.From)
	}
	if want := []string{"SECURITY@ex.org", "security@ex.org"}; strings.Join(d.env.To, ",") != strings.Join(want, ",") {
		t.Errorf("To = %q, want %q", d.env.To, want)
	}
	if d.env.Helo != "client.test" || d.env.SessionID == "" || !strings.HasPrefix(d.env.RemoteAddr, "127.0.0.1:") {
		t.Errorf("envelope = %+v, want Helo client.test, a SessionID and a 127.0.0.1 RemoteAddr", d.env)
	}
}

func TestNullSenderAndDuplicateRecipients(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialClient(t, addr)
	if err := sendMessage(c, "", []string{"x@ex.org", "x@EX.org", "x@ex.org"}, simpleMsg); err != nil {
		t.Fatalf("sendMessage() = %v, want nil", err)
	}
	got := rec.delivered()
	if len(got) != 1 || got[0].env.From != "" || strings.Join(got[0].env.To, ",") != "x@ex.org" {
		t.Fatalf("deliveries = %+v, want one from <> to [x@ex.org]", got)
	}
}

func TestSMTPUTF8Envelope(t *testing.T) {
	rec := &recorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialClient(t, addr)
	if err := c.Mail("jürgen@bücher.test", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatalf("Mail(SMTPUTF8) = %v, want nil", err)
	}
	if err := c.Rcpt("security@ex.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, simpleMsg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := rec.delivered()
	if len(got) != 1 || !got[0].env.SMTPUTF8 || got[0].env.From != "jürgen@bücher.test" {
		t.Fatalf("deliveries = %+v, want one SMTPUTF8 message from jürgen@bücher.test", got)
	}
}

func TestVRFYAndEXPN(t *testing.T) {
	_, addr := startServer(t, Options{}, &recorder{})
	c := dialRaw(t, addr)
	c.greet()
	for _, tc := range []struct {
		cmd  string
		want int
	}{
		{"VRFY security@ex.org", 252}, // RFC 5321 §3.5.3: cannot verify, will accept
		{"EXPN security", 502},        // not implemented: lists are not disclosed
	} {
		if r := c.cmd(tc.cmd); r.code != tc.want {
			t.Errorf("%s = %v, want %d", tc.cmd, r, tc.want)
		}
	}
}

func TestNoAUTH(t *testing.T) {
	_, addr := startServer(t, Options{}, &recorder{})
	c := dialClient(t, addr)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH advertised, want none on the MX listener")
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "SIZE"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if _, p := c.Extension("SIZE"); p != strconv.Itoa(DefaultMaxMessageBytes) {
		t.Errorf("SIZE = %q, want %d", p, DefaultMaxMessageBytes)
	}
}

func TestShutdownLetsSessionFinish(t *testing.T) {
	rec := &recorder{handleDelay: 300 * time.Millisecond}
	srv, addr := startServer(t, Options{}, rec)
	c := dialClient(t, addr)
	if err := c.Mail("a@b.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("security@ex.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, simpleMsg)

	result := make(chan error, 1)
	go func() { result <- w.Close() }()
	// Let the final dot arrive and the Handler start, then shut down.
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.delivered()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()

	if err := <-result; err != nil {
		t.Errorf("final dot during Shutdown = %v, want 250", err)
	}
	c.Quit()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last session ended")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func TestCloseAfterShutdownTimeout(t *testing.T) {
	srv, addr := startServer(t, Options{}, &recorder{})
	c := dialRaw(t, addr)
	c.greet() // an idle session keeps Shutdown waiting

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown() = %v, want context.DeadlineExceeded", err)
	}
	srv.Close()
	if !c.closed() {
		t.Error("idle connection still open after Close")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{SessionLifetime: -1, MaxErrors: 7}.withDefaults()
	if o.MaxMessageBytes != DefaultMaxMessageBytes || o.MaxRecipients != DefaultMaxRecipients ||
		o.ReadTimeout != DefaultReadTimeout || o.MaxConnectionsPerIP != DefaultMaxConnectionsPerIP ||
		o.MaxReceived != DefaultMaxReceived || o.Network != "tcp" || o.Addr != ":25" || o.Domain == "" {
		t.Errorf("withDefaults() = %+v, want the defaults", o)
	}
	if o.SessionLifetime != 0 || o.MaxErrors != 7 {
		t.Errorf("SessionLifetime, MaxErrors = %v, %v, want 0 (off), 7", o.SessionLifetime, o.MaxErrors)
	}
	if o.MinDataRate != DefaultMinDataRate || o.DataRateGrace != DefaultDataRateGrace {
		t.Errorf("MinDataRate, DataRateGrace = %v, %v, want the defaults", o.MinDataRate, o.DataRateGrace)
	}
	if off := (Options{MinDataRate: -1}).withDefaults(); off.MinDataRate != 0 {
		t.Errorf("MinDataRate -1 = %v, want 0 (off)", off.MinDataRate)
	}
	if l := (Options{LMTP: true}).withDefaults(); l.Network != "unix" || l.Addr != "" {
		t.Errorf("LMTP defaults: Network %q Addr %q, want unix and none", l.Network, l.Addr)
	}
}

func TestServeAfterClose(t *testing.T) {
	srv := New(Options{Domain: "mx.test"}, &recorder{}, nil)
	if err := srv.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve() after Close = %v, want ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("listener passed to a closed server still accepts")
	}
}

func TestListenAndServeError(t *testing.T) {
	srv := New(Options{Addr: "256.0.0.1:25"}, &recorder{}, nil)
	defer srv.Close()
	if err := srv.ListenAndServe(); err == nil || !strings.HasPrefix(err.Error(), "smtpd: listen") {
		t.Errorf("ListenAndServe() = %v, want an smtpd: listen error", err)
	}
}
