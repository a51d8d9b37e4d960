package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Relay hands one message to the next hop.
//
// Send returns nil once the next hop has taken responsibility for the message
// for every recipient (RFC 5321 §6.1: a 250 after the final dot). A refusal
// that retrying cannot cure is an error whose Permanent method returns true
// (see Permanent); any other error is temporary and the row is retried. When
// some recipients were accepted and others refused, Send returns a *RcptError
// naming the refused ones; the message was delivered to the rest.
type Relay interface {
	Send(ctx context.Context, from string, to []string, data []byte) error
}

// RelayOptions configures the relays built by NewRelay.
type RelayOptions struct {
	// HeloName is the name given in EHLO. Default: the host name.
	HeloName string
	// RootCAs verifies the relay's certificate; nil means the system roots.
	// Tests set it to trust their own certificate. Verification itself is never
	// turned off (docs/threats.md B6).
	RootCAs *x509.CertPool
	// DialTimeout bounds the TCP connect (and the TLS handshake for smtps).
	// Default 30 s.
	DialTimeout time.Duration
	// CommandTimeout bounds each command's reply; DataTimeout the reply to the
	// final dot. Defaults 5 and 10 minutes (RFC 5321 §4.5.3.2).
	CommandTimeout, DataTimeout time.Duration
	// Now names Maildir files. Default time.Now.
	Now func() time.Time
}

func (o RelayOptions) withDefaults() RelayOptions {
	if o.HeloName == "" {
		o.HeloName, _ = os.Hostname()
		if o.HeloName == "" || strings.ContainsAny(o.HeloName, " \r\n") {
			o.HeloName = "localhost"
		}
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 30 * time.Second
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 5 * time.Minute
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// NewRelay builds a relay from a URL:
//
//	smtp://host:port                  plain SMTP, only to a loopback address (a local MTA)
//	smtp+starttls://user:pass@host:587 STARTTLS required, certificate verified, AUTH PLAIN after TLS
//	smtps://user:pass@host:465        implicit TLS (RFC 8314), otherwise the same
//	maildir:///abs/path               a Maildir, for development and tests
//
// Credentials are optional for the TLS schemes and refused for smtp://, where
// they would cross in clear. Error messages never contain the password.
func NewRelay(rawURL string, opts RelayOptions) (Relay, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error repeats the input, password included.
		return nil, errors.New("queue: relay URL does not parse")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("queue: relay URL %s: query, fragment or opaque part not allowed", u.Redacted())
	}
	opts = opts.withDefaults()
	switch u.Scheme {
	case "maildir":
		if u.Host != "" || u.User != nil || !filepath.IsAbs(u.Path) {
			return nil, fmt.Errorf("queue: relay URL %s: want maildir:///absolute/path", u.Redacted())
		}
		return NewMaildir(u.Path, opts)
	case "smtp", "smtp+starttls", "smtps":
	default:
		return nil, fmt.Errorf("queue: relay URL %s: unknown scheme %q", u.Redacted(), u.Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("queue: relay URL %s: path not allowed", u.Redacted())
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, fmt.Errorf("queue: relay URL %s: host missing", u.Redacted())
	}
	r := &smtpRelay{host: host, opts: opts}
	switch u.Scheme {
	case "smtp":
		if u.User != nil {
			return nil, fmt.Errorf("queue: relay URL %s: credentials need smtp+starttls:// or smtps://", u.Redacted())
		}
		if !isLoopback(host) {
			// docs/threats.md B6: never plaintext across a network.
			return nil, fmt.Errorf("queue: relay URL %s: smtp:// is for a local MTA on loopback; use smtp+starttls:// or smtps://", u.Redacted())
		}
		if port == "" {
			port = "25"
		}
	case "smtp+starttls":
		r.tls = tlsStart
		if port == "" {
			port = "587"
		}
	case "smtps":
		r.tls = tlsImplicit
		if port == "" {
			port = "465"
		}
	}
	r.addr = net.JoinHostPort(host, port)
	if u.User != nil {
		r.user = u.User.Username()
		r.pass, _ = u.User.Password()
		if r.user == "" {
			return nil, fmt.Errorf("queue: relay URL %s: empty user name", u.Redacted())
		}
	}
	return r, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Permanent marks err as a permanent refusal: the worker fails the row at once
// instead of retrying it. For relays other than the ones in this package.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() error   { return e.err }
func (e permanentError) Permanent() bool { return true }

// IsPermanent reports whether err, or an error it wraps, says it is permanent.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// RcptError reports the recipients a relay refused. The message was delivered
// to every recipient of the envelope that is not a key of Failed.
type RcptError struct {
	Failed map[string]error
}

func (e *RcptError) Error() string {
	rcpts := slices.Sorted(maps.Keys(e.Failed))
	var b strings.Builder
	fmt.Fprintf(&b, "queue: %d recipient(s) refused:", len(rcpts))
	for _, rcpt := range rcpts {
		fmt.Fprintf(&b, " <%s>: %v;", rcpt, e.Failed[rcpt])
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *RcptError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failed))
	for _, err := range e.Failed {
		errs = append(errs, err)
	}
	return errs
}

// Permanent is true when every refusal is permanent.
func (e *RcptError) Permanent() bool {
	for _, err := range e.Failed {
		if !IsPermanent(err) {
			return false
		}
	}
	return len(e.Failed) > 0
}

// checkData refuses what the SMTP client would not send faithfully: go-smtp's
// DotWriter turns a bare LF into CRLF but lets a bare CR through, which a
// receiver may read as a line end (SMTP smuggling, docs/threats.md B2).
// Either means the renderer upstream has a bug, so the refusal is permanent.
func checkData(data []byte) error {
	if len(data) == 0 {
		return Permanent(errors.New("queue: message is empty"))
	}
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\r':
			if i+1 == len(data) || data[i+1] != '\n' {
				return Permanent(fmt.Errorf("queue: message has a bare CR at byte %d (renderer bug)", i))
			}
			i++
		case '\n':
			return Permanent(fmt.Errorf("queue: message has a bare LF at byte %d (renderer bug)", i))
		}
	}
	return nil
}

// checkEnvelope refuses addresses that cannot be written into a MAIL or RCPT
// command as they are. Addresses come from the roster (threats.md B4), so a
// bad one is a configuration or caller bug: permanent.
func checkEnvelope(from string, to []string) error {
	if from != "" {
		if err := checkAddr(from); err != nil {
			return Permanent(fmt.Errorf("queue: envelope sender %q: %w", from, err))
		}
	}
	if len(to) == 0 {
		return Permanent(errors.New("queue: no recipients"))
	}
	for _, rcpt := range to {
		if err := checkAddr(rcpt); err != nil {
			return Permanent(fmt.Errorf("queue: recipient %q: %w", rcpt, err))
		}
	}
	return nil
}

func checkAddr(addr string) error {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return errors.New("not local@domain")
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return errors.New("control, space or angle bracket")
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

type tlsMode int

const (
	tlsNone tlsMode = iota
	tlsStart
	tlsImplicit
)

// smtpRelay submits to a smarthost or a local MTA with go-smtp's client, one
// connection per message: embargo sends a few mails a minute, and a fresh
// connection leaves no session state to go stale between attempts.
type smtpRelay struct {
	addr, host string
	tls        tlsMode
	user, pass string
	opts       RelayOptions
}

func (r *smtpRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	if err := checkEnvelope(from, to); err != nil {
		return err
	}
	if err := checkData(data); err != nil {
		return err
	}
	conn, err := r.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// go-smtp takes no context: closing the connection is how a cancel
	// interrupts a command in progress.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := r.open(conn)
	if err != nil {
		return err
	}
	defer c.Close()
	return r.transact(c, from, to, data)
}

func (r *smtpRelay) dial(ctx context.Context) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: r.opts.DialTimeout}
	var conn net.Conn
	var err error
	if r.tls == tlsImplicit {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: r.tlsConfig()}).DialContext(ctx, "tcp", r.addr)
	} else {
		conn, err = dialer.DialContext(ctx, "tcp", r.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: dial %s: %w", r.addr, err)
	}
	return conn, nil
}

func (r *smtpRelay) tlsConfig() *tls.Config {
	return &tls.Config{
		ServerName: r.host, // the name verified against the certificate
		RootCAs:    r.opts.RootCAs,
		MinVersion: tls.VersionTLS12,
	}
}

// open greets, secures and authenticates. Every failure here is about the
// relay, not the message, so it is temporary whatever its code: a wrong
// password or a missing STARTTLS keeps the mail queued (and raises the expiry
// alert if nobody fixes it) rather than failing every row at once.
func (r *smtpRelay) open(conn net.Conn) (*smtp.Client, error) {
	var c *smtp.Client
	if r.tls == tlsStart {
		// NewClientStartTLS greets and sends EHLO under go-smtp's own 5-minute
		// timeout before ours can be set, so bound that phase here.
		guard := time.AfterFunc(2*r.opts.CommandTimeout, func() { conn.Close() })
		var err error
		c, err = smtp.NewClientStartTLS(conn, r.tlsConfig())
		guard.Stop()
		if err != nil {
			// Includes "server doesn't support STARTTLS": never fall back to plaintext.
			return nil, fmt.Errorf("queue: STARTTLS with %s: %w", r.addr, err)
		}
	} else {
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = r.opts.CommandTimeout
	c.SubmissionTimeout = r.opts.DataTimeout
	// NewClientStartTLS said EHLO as "localhost" before TLS; the session after
	// STARTTLS starts afresh and gets our name. A certificate that fails
	// verification surfaces here, at the first write over TLS.
	if err := c.Hello(r.opts.HeloName); err != nil {
		c.Close()
		return nil, fmt.Errorf("queue: EHLO to %s: %w", r.addr, err)
	}
	if r.tls != tlsNone {
		if _, isTLS := c.TLSConnectionState(); !isTLS {
			c.Close()
			return nil, fmt.Errorf("queue: %s: connection is not TLS", r.addr)
		}
	}
	if r.user != "" {
		// Only ever over TLS: NewRelay refuses credentials for smtp://.
		if !c.SupportsAuth(sasl.Plain) {
			c.Close()
			return nil, fmt.Errorf("queue: %s offers no AUTH PLAIN", r.addr)
		}
		if err := c.Auth(sasl.NewPlainClient("", r.user, r.pass)); err != nil {
			c.Close()
			return nil, fmt.Errorf("queue: AUTH at %s: %w", r.addr, err)
		}
	}
	return c, nil
}

// transact runs one mail transaction. RCPT is sent per recipient keeping each
// refusal, because Client.SendMail gives up at the first refused RCPT.
func (r *smtpRelay) transact(c *smtp.Client, from string, to []string, data []byte) error {
	opts := &smtp.MailOptions{
		// RET=HDRS: a bounce need not carry the (encrypted) body back. go-smtp
		// sends it only when the server advertises DSN (RFC 3461 §4.3).
		Return: smtp.DSNReturnHeaders,
		Size:   int64(len(data)),
	}
	if !isASCII(from) || !allASCII(to) {
		// RFC 6531 §3.4: without SMTPUTF8 these addresses cannot be sent at all.
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			return Permanent(fmt.Errorf("queue: %s lacks SMTPUTF8, needed for a non-ASCII address", r.addr))
		}
		opts.UTF8 = true
	}
	// An empty from goes out as MAIL FROM:<>, the null reverse-path (RFC 5321 §4.5.5).
	if err := c.Mail(from, opts); err != nil {
		return classify("MAIL FROM", err)
	}
	failed := make(map[string]error)
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				// Not a reply: the connection broke. Nothing was delivered.
				return fmt.Errorf("queue: RCPT TO: %w", err)
			}
			failed[rcpt] = classify("RCPT TO", err)
		}
	}
	if len(failed) == len(to) {
		_ = c.Reset()
		_ = c.Quit()
		return &RcptError{Failed: failed}
	}
	if err := r.data(c, data); err != nil {
		if len(failed) == 0 {
			return err
		}
		// Report per recipient so that the RCPT refusals are not lost.
		for _, rcpt := range to {
			if _, ok := failed[rcpt]; !ok {
				failed[rcpt] = err
			}
		}
		return &RcptError{Failed: failed}
	}
	// The message is the relay's now; a failing QUIT changes nothing.
	_ = c.Quit()
	if len(failed) > 0 {
		return &RcptError{Failed: failed}
	}
	return nil
}

func (r *smtpRelay) data(c *smtp.Client, data []byte) error {
	w, err := c.Data()
	if err != nil {
		return classify("DATA", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("queue: write data: %w", err)
	}
	if err := w.Close(); err != nil {
		return classify("end of data", err)
	}
	return nil
}

// classify wraps the error of a mail-transaction command. A 5xx reply is
// permanent for this message (RFC 5321 §4.2.1), except 530 (authentication
// required), which is the relay's configuration and cured by fixing it.
func classify(stage string, err error) error {
	wrapped := fmt.Errorf("queue: %s: %w", stage, err)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code <= 599 && se.Code != 530 {
		return Permanent(wrapped)
	}
	return wrapped
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
