package smtpd

import (
	"io"
	"log/slog"
	"net"
	"sync"
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

// connLimiter counts open connections in total and per client IP (docs/threat-model.md B7).
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
		c.forceClose() // takes l.mu via release
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
	rate     dataRate
	log      *slog.Logger
	greet    string // the EHLO reply's first line (ehloGreeting)
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
		c := &conn{Conn: nc, state: newConnState(), lim: l.lim, key: key, opened: time.Now(), rate: l.rate, log: l.log, greet: l.greet}
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
