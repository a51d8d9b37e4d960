// Package queuetest provides a recording relay: a real go-smtp server on
// 127.0.0.1 that accepts (or, on request, refuses) what embargo sends and keeps
// every transaction's envelope and raw bytes, so that tests can collect the
// daemon's outbound mail exactly as a smarthost would receive it
// (docs/threat-model.md §2.2).
package queuetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode says how the recorder offers TLS.
type TLSMode int

const (
	NoTLS       TLSMode = iota // plain SMTP, no STARTTLS offered
	StartTLS                   // STARTTLS offered (RFC 3207)
	ImplicitTLS                // TLS from the first byte (smtps, RFC 8314)
)

// Options configures a Recorder. The zero value is a plain SMTP server.
type Options struct {
	TLS TLSMode
	// CertHost is the only name in the self-signed certificate. Empty means
	// "localhost" and 127.0.0.1, which is what a client dialing Addr checks;
	// anything else gives a wrong-name certificate.
	CertHost string
	// Users, if not empty, enables AUTH PLAIN (after TLS only, as go-smtp
	// enforces) and requires it before MAIL.
	Users map[string]string
	// DSN advertises the DSN extension (RFC 3461), so clients send RET=.
	DSN bool
	// SMTPUTF8 advertises SMTPUTF8 (RFC 6531).
	SMTPUTF8 bool
	// Debug, if set, receives the raw SMTP dialogue. It is written from the
	// server's goroutines: it must be safe for concurrent use.
	Debug io.Writer
}

// Message is one accepted mail transaction.
type Message struct {
	From   string   // envelope sender; "" for MAIL FROM:<>
	To     []string // accepted recipients
	Data   []byte   // the bytes after DATA, as received (dot-unstuffed)
	Return string   // the RET= parameter of MAIL, if any
	Helo   string   // the EHLO name of the session
	TLS    bool     // the session was over TLS
	User   string   // the authenticated user, if any
	// At is when its MAIL command came: no byte of the message reached
	// the relay before it (a test of "nothing before T" compares it).
	At time.Time
}

// Recorder is a recording SMTP server. Its methods are safe for concurrent use.
type Recorder struct {
	t     testing.TB
	srv   *smtp.Server
	ln    net.Listener
	opts  Options
	roots *x509.CertPool

	mu       sync.Mutex
	msgs     []Message
	refused  []string
	failRcpt map[string]int
	failMail map[string]int
	failData int
	changed  chan struct{} // closed and replaced whenever msgs grows
	policy   Policy
	allowed  map[Rule]string // rules turned off, with the reason
}

// NewRecorder starts a plain recording server for the duration of the test.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	return New(t, Options{})
}

// New starts a recording server with opts for the duration of the test. When
// the test ends, every transaction kept is checked against the rules (see
// Rule, Expect and Allow) and each problem fails the test.
func New(t testing.TB, opts Options) *Recorder {
	t.Helper()
	r := &Recorder{
		t:        t,
		opts:     opts,
		failRcpt: make(map[string]int),
		failMail: make(map[string]int),
		changed:  make(chan struct{}),
		allowed:  make(map[Rule]string),
	}
	srv := smtp.NewServer(smtp.BackendFunc(r.newSession))
	srv.Domain = "recorder.test"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = 64 << 20
	srv.EnableDSN = opts.DSN
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.Debug = opts.Debug
	srv.ErrorLog = discardLog{}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("queuetest: listen: %v", err)
	}
	if opts.TLS != NoTLS {
		cfg, roots, err := selfSigned(opts.CertHost)
		if err != nil {
			ln.Close()
			t.Fatalf("queuetest: certificate: %v", err)
		}
		r.roots = roots
		if opts.TLS == StartTLS {
			srv.TLSConfig = cfg
		} else {
			ln = tls.NewListener(ln, cfg)
		}
	}
	r.srv, r.ln = srv, ln
	go srv.Serve(ln)
	// Cleanups run last-registered first, so the sender a test starts after
	// the recorder has stopped when the rules see what it sent.
	t.Cleanup(func() {
		r.Close()
		r.report()
	})
	return r
}

// Close stops the server; it is also run at the end of the test.
func (r *Recorder) Close() {
	r.srv.Close()
}

// Addr is the server's host:port.
func (r *Recorder) Addr() string { return r.ln.Addr().String() }

// URL is a relay URL for queue.NewRelay matching the TLS mode, with user and
// password if user is not empty.
func (r *Recorder) URL(user, password string) string {
	u := url.URL{Scheme: "smtp", Host: r.Addr()}
	switch r.opts.TLS {
	case StartTLS:
		u.Scheme = "smtp+starttls"
	case ImplicitTLS:
		u.Scheme = "smtps"
	}
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// RootCAs holds the server's self-signed certificate (nil without TLS), for
// queue.RelayOptions.RootCAs.
func (r *Recorder) RootCAs() *x509.CertPool { return r.roots }

// Messages returns a copy of every accepted transaction, in order.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Message, len(r.msgs))
	for i, m := range r.msgs {
		m.To = append([]string(nil), m.To...)
		m.Data = bytes.Clone(m.Data)
		out[i] = m
	}
	return out
}

// Refused returns every recipient refused at RCPT, in order, one entry per
// refusal: how many attempts reached the recorder for a failing address.
func (r *Recorder) Refused() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.refused...)
}

// WaitFor waits until at least n messages were accepted and returns them; it
// fails the test after timeout. Call it from the test's goroutine.
func (r *Recorder) WaitFor(n int, timeout time.Duration) []Message {
	r.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, changed := len(r.msgs), r.changed
		r.mu.Unlock()
		if got >= n {
			return r.Messages()
		}
		select {
		case <-changed:
		case <-deadline.C:
			r.t.Fatalf("queuetest: %d message(s) after %v, want %d", got, timeout, n)
			return nil
		}
	}
}

// FailRcpt makes RCPT TO:<addr> fail with code (4xx: temporary, 5xx:
// permanent) until it is called again with code 0.
func (r *Recorder) FailRcpt(addr string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if code == 0 {
		delete(r.failRcpt, addr)
		return
	}
	r.failRcpt[addr] = code
}

// FailMail makes MAIL FROM:<from> fail with code until it is called again
// with code 0: a relay that refuses one sender's messages (an announce
// release, by its bounce address) and takes the rest.
func (r *Recorder) FailMail(from string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if code == 0 {
		delete(r.failMail, from)
		return
	}
	r.failMail[from] = code
}

func (r *Recorder) mailCode(from string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failMail[from]
}

// FailData makes the reply to the final dot carry code (0: accept). The
// message is read and not recorded.
func (r *Recorder) FailData(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failData = code
}

func (r *Recorder) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &session{r: r, helo: c.Hostname(), tls: isTLS}, nil
}

func (r *Recorder) rcptCode(addr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	code := r.failRcpt[addr]
	if code != 0 {
		r.refused = append(r.refused, addr)
	}
	return code
}

func (r *Recorder) dataCode() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failData
}

func (r *Recorder) add(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	close(r.changed)
	r.changed = make(chan struct{})
}

// session is one connection; after STARTTLS go-smtp starts a new one.
type session struct {
	r    *Recorder
	helo string
	tls  bool
	user string
	msg  *Message
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (s *session) AuthMechanisms() []string {
	if len(s.r.opts.Users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || len(s.r.opts.Users) == 0 {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		want, ok := s.r.opts.Users[user]
		if !ok || want != pass || (identity != "" && identity != user) {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if len(s.r.opts.Users) > 0 && s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if code := s.r.mailCode(from); code != 0 {
		return codeError(code, "sender refused by test")
	}
	s.msg = &Message{From: from, Helo: s.helo, TLS: s.tls, User: s.user, At: time.Now()}
	if opts != nil {
		s.msg.Return = string(opts.Return)
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.msg == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if code := s.r.rcptCode(to); code != 0 {
		return codeError(code, "recipient refused by test")
	}
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if s.msg == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if code := s.r.dataCode(); code != 0 {
		return codeError(code, "message refused by test")
	}
	m := *s.msg
	m.Data = data
	s.r.add(m)
	return nil
}

func (s *session) Reset()        { s.msg = nil }
func (s *session) Logout() error { return nil }

func codeError(code int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: text}
}

// selfSigned makes a fresh ECDSA certificate for host (default localhost and
// 127.0.0.1) and a pool that trusts it.
func selfSigned(host string) (*tls.Config, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "queuetest recorder"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if host == "" {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	} else if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, roots, nil
}

// discardLog silences go-smtp's log of ordinary test disconnects.
type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}

// CheckCRLF returns an error if data has a CR or LF that is not part of a
// CRLF pair, a NUL, or a line longer than 998 octets (RFC 5322 §2.1.1): the checks
// docs/threat-model.md §2.2 asks of every recorded message.
func CheckCRLF(data []byte) error {
	line := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\r':
			if i+1 == len(data) || data[i+1] != '\n' {
				return fmt.Errorf("queuetest: bare CR at byte %d", i)
			}
			i++
			line = 0
			continue
		case '\n':
			return fmt.Errorf("queuetest: bare LF at byte %d", i)
		case 0:
			return fmt.Errorf("queuetest: NUL at byte %d", i)
		}
		line++
		if line > 998 {
			return fmt.Errorf("queuetest: line longer than 998 octets ending after byte %d", i)
		}
	}
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		return errors.New("queuetest: data does not end with CRLF")
	}
	return nil
}
