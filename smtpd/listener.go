package smtpd

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// refuseWriteTimeout bounds the write of the 421 to a refused connection. The write
// goes into a fresh socket's empty send buffer and does not block in practice; the
// bound keeps the accept loop safe if it ever does.
const refuseWriteTimeout = 2 * time.Second

// lifetimeWriteGrace lets the final 421 be written after the session lifetime is over,
// so the client learns why it was dropped. It bounds how long a client that stops
// reading can outlive the lifetime.
const lifetimeWriteGrace = 5 * time.Second

// connLimiter counts open connections in total and per client IP (threats.md B7).
// go-smtp has no cap and creates a session only at the first EHLO, so a peer that
// connects and stays silent would be invisible to it; counting at Accept sees it.
type connLimiter struct {
	maxTotal int // ≤ 0: no cap
	maxPerIP int // ≤ 0: no cap

	mu    sync.Mutex
	total int
	perIP map[string]int
	conns map[*conn]struct{} // for Server.Close, which go-smtp skips after Shutdown
}

func newConnLimiter(maxTotal, maxPerIP int) *connLimiter {
	return &connLimiter{
		maxTotal: maxTotal,
		maxPerIP: maxPerIP,
		perIP:    make(map[string]int),
		conns:    make(map[*conn]struct{}),
	}
}

// acquire takes a slot for a connection from key ("" for peers without an IP, which
// count only towards the total). It returns the reason for a refusal, or "".
func (l *connLimiter) acquire(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return "total connection limit"
	}
	if key != "" && l.maxPerIP > 0 && l.perIP[key] >= l.maxPerIP {
		return "per-IP connection limit"
	}
	l.total++
	if key != "" {
		l.perIP[key]++
	}
	return ""
}

func (l *connLimiter) track(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns[c] = struct{}{}
}

// release frees the slot taken by acquire; c is nil when the connection was never
// tracked.
func (l *connLimiter) release(key string, c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if key != "" {
		if l.perIP[key]--; l.perIP[key] <= 0 {
			delete(l.perIP, key)
		}
	}
	delete(l.conns, c)
}

// closeAll closes every open connection.
func (l *connLimiter) closeAll() {
	l.mu.Lock()
	conns := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close() // takes l.mu via release
	}
}

// open reports the current number of connections, for tests and logs.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// ipKey names the client for the per-IP cap. IPv6 clients are grouped by /64, the
// smallest prefix a single site usually gets. Unix sockets and pipes have no IP and
// are capped by the total only, so LMTP behind a local MTA is not throttled to one IP.
func ipKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// listener wraps the listener go-smtp serves: it refuses connections beyond the caps
// itself, so go-smtp never spends a goroutine on them, and wraps the others in *conn.
type listener struct {
	net.Listener
	lim      *connLimiter
	lifetime time.Duration // ≤ 0: unlimited
	log      *slog.Logger
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ipKey(nc.RemoteAddr())
		if why := l.lim.acquire(key); why != "" {
			l.log.Warn("smtpd: connection refused", "remote", nc.RemoteAddr().String(), "reason", why)
			refuse(nc)
			continue
		}
		c := &conn{Conn: nc, state: newConnState(), lim: l.lim, key: key, opened: time.Now(), log: l.log}
		l.lim.track(c)
		if l.lifetime > 0 {
			c.expires = c.opened.Add(l.lifetime)
			// go-smtp sets its own deadlines per command; the clamp in SetReadDeadline
			// and SetWriteDeadline keeps them within the lifetime. This one covers the
			// time before go-smtp sets any.
			if err := c.SetDeadline(time.Time{}); err != nil {
				c.Close()
				continue
			}
		}
		l.log.Debug("smtpd: connection opened", "session", c.state.id, "remote", nc.RemoteAddr().String(), "open", l.lim.open())
		return c, nil
	}
}

// refuse answers a connection over the cap with 421 in place of the greeting (RFC 5321
// §3.1) and closes it without handing it to go-smtp.
func refuse(nc net.Conn) {
	_ = nc.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, _ = io.WriteString(nc, tooManyConnections)
	_ = nc.Close()
}

// connState is what smtpd keeps per connection. It outlives go-smtp's sessions, which
// are recreated after STARTTLS, so the error count and the ID hold for the connection.
type connState struct {
	id      string
	errors  atomic.Int64
	closing atomic.Bool  // close right after the next reply is written
	inData  atomic.Int32 // Session.Data calls running
	eof     atomic.Bool  // the client closed its side
}

func newConnState() *connState {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return &connState{id: hex.EncodeToString(b[:])}
}

// conn tracks one accepted connection: it holds a slot in the limiter until it is
// closed, keeps go-smtp's deadlines within the session lifetime, and closes the
// connection after the reply that announced the close (the error limit).
type conn struct {
	net.Conn
	state   *connState
	lim     *connLimiter
	key     string
	opened  time.Time
	expires time.Time // zero: no lifetime
	log     *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// stateOf finds smtpd's per-connection state under go-smtp's net.Conn, which after
// STARTTLS is a *tls.Conn around ours. A connection smtpd did not accept gets fresh
// state, so the session still works, without caps.
func stateOf(nc net.Conn) *connState {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if c, ok := nc.(*conn); ok {
		return c.state
	}
	return newConnState()
}

// Read records the client's EOF and, while a message is being received, turns read
// errors into replies. go-smtp copies BDAT chunks straight from the connection and
// answers a failed copy with the error's text as a permanent 554 (conn.go handleBdat,
// dataErrorToStatus), e.g. "554 5.0.0 Error: transaction failed: read tcp
// 127.0.0.1:25->...: i/o timeout". Outside a message go-smtp needs the net.Error to
// answer an idle client "421 4.4.2", and net.ErrClosed to end quietly.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	switch {
	case err == nil:
	case err == io.EOF:
		c.state.eof.Store(true)
	case c.state.inData.Load() > 0 && !errors.Is(err, net.ErrClosed):
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return n, errTimeout.reply()
		}
		return n, errConnection.reply()
	}
	return n, err
}

// Write closes the connection once the reply announcing the close is out: go-smtp
// writes each reply with a single flushed Write, and would otherwise go on serving a
// client that has used up its errors.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.state.closing.Load() {
		c.Close()
	}
	return n, err
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.Conn.Close()
		c.lim.release(c.key, c)
		c.log.Debug("smtpd: connection closed", "session", c.state.id, "duration", time.Since(c.opened).Round(time.Millisecond), "errors", c.state.errors.Load())
	})
	return c.closeErr
}

// SetDeadline, SetReadDeadline and SetWriteDeadline keep every deadline go-smtp sets
// (per command, per reply) within the session lifetime. A zero time, "no deadline",
// becomes the lifetime's end. Writes get a short grace so the final 421 gets out.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t, 0))
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t, lifetimeWriteGrace))
}

func (c *conn) clamp(t time.Time, grace time.Duration) time.Time {
	if c.expires.IsZero() {
		return t
	}
	limit := c.expires.Add(grace)
	if t.IsZero() || t.After(limit) {
		return limit
	}
	return t
}
