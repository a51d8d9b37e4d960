package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Connection reuse. A connection that ended a transaction cleanly goes back
// to an idle pool and carries the next message: a drain of thousands of
// copies costs a handful of TCP and TLS handshakes, not one per copy
// (Postfix's smtp client caches connections the same way,
// smtp_connection_cache_on_demand). A trickle of mail still gets a fresh
// connection each time: an idle connection is closed after connIdle.
const (
	connIdle     = 5 * time.Second // idle time before QUIT; RFC 5321 §4.5.3.2.7 lets a server wait 5 minutes, we need not
	connMaxAge   = 5 * time.Minute // Postfix's smtp_connection_reuse_time_limit: a relay may cap session lifetimes
	connMaxUses  = 100             // messages per connection, under common relay limits
	connMaxIdle  = 32              // idle connections kept at most
	quitDeadline = 10 * time.Second
)

// smtpRelay submits to a smarthost or a local MTA with go-smtp's client,
// over connections it reuses (see connIdle). It is safe for concurrent use:
// each Send takes a connection of its own.
type smtpRelay struct {
	addr, host string
	tls        tlsMode
	user, pass string
	opts       RelayOptions

	// The reuse limits: connIdle, connMaxAge and connMaxUses, which tests
	// shorten.
	idleTime, maxAge time.Duration
	maxUses          int

	mu   sync.Mutex
	idle []*smtpConn // most recently used last
}

func newSMTPRelay(host string, opts RelayOptions) *smtpRelay {
	return &smtpRelay{host: host, opts: opts, idleTime: connIdle, maxAge: connMaxAge, maxUses: connMaxUses}
}

// smtpConn is one open, greeted (and secured and authenticated) session.
type smtpConn struct {
	c     *smtp.Client
	conn  net.Conn
	born  time.Time
	uses  int
	timer *time.Timer // closes it after connIdle in the pool
}

func (r *smtpRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	if err := checkEnvelope(from, to); err != nil {
		return err
	}
	if err := checkData(data); err != nil {
		return err
	}
	for {
		sc, reused, err := r.get(ctx)
		if err != nil {
			return err
		}
		// go-smtp takes no context: closing the connection is how a cancel
		// interrupts a command in progress.
		stop := context.AfterFunc(ctx, func() { sc.conn.Close() })
		clean, err := r.transact(sc.c, from, to, data)
		canceled := !stop()
		if reused && errors.Is(err, errStale) && !canceled {
			// The relay closed the cached connection while it was idle (a
			// timeout, a restart): MAIL was its first command and nothing
			// was sent. Try again on a fresh one.
			sc.c.Close()
			continue
		}
		if clean && !canceled {
			r.put(sc)
		} else {
			sc.c.Close()
		}
		return err
	}
}

// errStale marks a failure of the first command of a transaction that says
// the connection is gone, not that the message was refused.
var errStale = errors.New("connection closed by the relay")

// get takes an idle connection, or opens a new one.
func (r *smtpRelay) get(ctx context.Context) (sc *smtpConn, reused bool, err error) {
	for {
		r.mu.Lock()
		if len(r.idle) == 0 {
			r.mu.Unlock()
			break
		}
		sc = r.idle[len(r.idle)-1]
		r.idle = r.idle[:len(r.idle)-1]
		r.mu.Unlock()
		// Whoever takes a connection out of the pool owns it: its timer
		// found it gone, or fired and left it to us.
		if sc.timer.Stop() && time.Since(sc.born) < r.maxAge {
			return sc, true, nil
		}
		go sc.quit()
	}
	conn, err := r.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, err := r.open(conn)
	if !stop() && err == nil {
		c.Close()
		err = fmt.Errorf("queue: connect to %s: %w", r.addr, ctx.Err())
	}
	if err != nil {
		return nil, false, err
	}
	return &smtpConn{c: c, conn: conn, born: time.Now()}, false, nil
}

// put returns a connection to the pool after a clean transaction, or
// closes it once it has served its share.
func (r *smtpRelay) put(sc *smtpConn) {
	sc.uses++
	if sc.uses >= r.maxUses || time.Since(sc.born) >= r.maxAge {
		go sc.quit()
		return
	}
	r.mu.Lock()
	if len(r.idle) >= connMaxIdle {
		r.mu.Unlock()
		go sc.quit()
		return
	}
	sc.timer = time.AfterFunc(r.idleTime, func() { r.expire(sc) })
	r.idle = append(r.idle, sc)
	r.mu.Unlock()
}

// expire closes a connection idle for connIdle, if it is still in the pool.
func (r *smtpRelay) expire(sc *smtpConn) {
	r.mu.Lock()
	found := false
	for i, c := range r.idle {
		if c == sc {
			r.idle = append(r.idle[:i], r.idle[i+1:]...)
			found = true
			break
		}
	}
	r.mu.Unlock()
	if found {
		sc.quit()
	}
}

// CloseIdle says QUIT on every idle connection.
func (r *smtpRelay) CloseIdle() {
	r.mu.Lock()
	idle := r.idle
	r.idle = nil
	r.mu.Unlock()
	for _, sc := range idle {
		sc.timer.Stop()
		sc.quit()
	}
}

// quit ends a session politely (RFC 5321 §4.1.1.10), within quitDeadline.
func (sc *smtpConn) quit() {
	sc.conn.SetDeadline(time.Now().Add(quitDeadline))
	if err := sc.c.Quit(); err != nil {
		sc.c.Close()
	}
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
// refusal, because Client.SendMail gives up at the first refused RCPT. clean
// reports whether the session is left between transactions, ready for the
// next MAIL: after a reply to the final dot or to MAIL, but not after a
// broken connection, a 421 (the relay is closing it, RFC 5321 §3.8) or a
// transaction that had to be reset.
func (r *smtpRelay) transact(c *smtp.Client, from string, to []string, data []byte) (clean bool, err error) {
	opts := &smtp.MailOptions{
		// RET=HDRS: a bounce need not carry the (encrypted) body back. go-smtp
		// sends it only when the server advertises DSN (RFC 3461 §4.3).
		Return: smtp.DSNReturnHeaders,
		Size:   int64(len(data)),
	}
	if !isASCII(from) || !allASCII(to) {
		// RFC 6531 §3.4: without SMTPUTF8 these addresses cannot be sent at all.
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			return true, Permanent(fmt.Errorf("queue: %s lacks SMTPUTF8, needed for a non-ASCII address", r.addr))
		}
		opts.UTF8 = true
	}
	// An empty from goes out as MAIL FROM:<>, the null reverse-path (RFC 5321 §4.5.5).
	if err := c.Mail(from, opts); err != nil {
		if !isReply(err) || closing(err) {
			return false, fmt.Errorf("queue: MAIL FROM: %w: %w", errStale, err)
		}
		return true, classify("MAIL FROM", err)
	}
	failed := make(map[string]error)
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			if !isReply(err) {
				// Not a reply: the connection broke. Nothing was delivered.
				return false, fmt.Errorf("queue: RCPT TO: %w", err)
			}
			failed[rcpt] = classify("RCPT TO", err)
		}
	}
	if len(failed) == len(to) {
		_ = c.Reset()
		return false, &RcptError{Failed: failed}
	}
	if err := r.data(c, data); err != nil {
		clean = isReply(err) && !closing(err)
		if len(failed) == 0 {
			return clean, err
		}
		// Report per recipient so that the RCPT refusals are not lost.
		for _, rcpt := range to {
			if _, ok := failed[rcpt]; !ok {
				failed[rcpt] = err
			}
		}
		return clean, &RcptError{Failed: failed}
	}
	// The message is the relay's now.
	if len(failed) > 0 {
		return true, &RcptError{Failed: failed}
	}
	return true, nil
}

// isReply reports whether err is the relay's reply, not a broken connection.
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// closing reports a 421: the relay is closing the connection (RFC 5321 §3.8).
func closing(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code == 421
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
