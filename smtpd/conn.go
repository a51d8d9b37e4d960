package smtpd

import (
	"bytes"
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

// readBufferSize is the size of a connection's own read buffer: one socket read
// fills it, and go-smtp takes it a line at a time (conn.Read).
const readBufferSize = 4096

// lingerTimeout and lingerBytes bound how long and how much conn reads and drops
// after the reply that closes a connection (shutdown).
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// startTLSReady is go-smtp's reply to STARTTLS (conn.go handleStartTLS), written just
// before the handshake.
const startTLSReady = "220 2.0.0 Ready to start TLS\r\n"

// connState is what smtpd keeps per connection. It outlives go-smtp's sessions, which
// are recreated after STARTTLS, so the error count and the ID hold for the connection.
type connState struct {
	id      string
	errors  atomic.Int64
	closing atomic.Bool  // close right after the next reply is written
	inData  atomic.Int32 // Session.Data calls running
	eof     atomic.Bool  // the client closed its side
	// tls is set when the TLS handshake starts: from then on the bytes conn sees are
	// ciphertext and it neither inspects nor rewrites them.
	tls atomic.Bool
	// dotCR is set when "LF . CR x" (x not LF) passed while a message was received:
	// go-smtp's DATA reader drops the dot and the CR, so Data never sees the bare CR.
	dotCR atomic.Bool
	// finish holds the reply for a read that timed out, or that met the client's EOF
	// in the middle of a command line. The connection is then finished: reads fail at
	// once, the session refuses everything, and in plain text the next reply is
	// replaced by this one and followed by the close.
	finish atomic.Pointer[replyError]
	// transfer is the DATA or BDAT transfer being read, nil between them: set by
	// session.deliver, read by conn for the minimum data rate (datarate.go).
	transfer atomic.Pointer[transfer]
}

func newConnState() *connState {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return &connState{id: hex.EncodeToString(b[:])}
}

// closingReply is the reply for a command that arrives on a connection smtpd is
// closing: the timeout's, or the error limit's.
func (st *connState) closingReply() error {
	if r := st.finish.Load(); r != nil {
		return r.reply()
	}
	return errTooManyErrors.reply()
}

// conn tracks one accepted connection: it holds a slot in the limiter until it is
// closed, keeps go-smtp's deadlines within the session lifetime, closes the connection
// after the reply that announced the close, and stands between go-smtp and the
// client's bytes where go-smtp would otherwise lose them (Read).
type conn struct {
	net.Conn
	state   *connState
	lim     *connLimiter
	key     string
	opened  time.Time
	expires time.Time // zero: no lifetime
	log     *slog.Logger
	greet   string // the EHLO reply's first line (ehloGreeting); "" leaves go-smtp's

	// Read side, used by one goroutine at a time: go-smtp's connection goroutine, or
	// crypto/tls during the handshake it runs there.
	buf     []byte // bytes read from the socket and not yet given to go-smtp
	line    lineState
	readErr error // sticky: once a read timed out, every read fails with this

	// The minimum data rate (datarate.go), read side too.
	rate         dataRate
	readDeadline time.Time // go-smtp's read deadline, clamped to the lifetime
	xfer         *transfer // the transfer xferBytes counts
	xferBytes    int64
	rateCut      bool // the socket's read deadline is the rate's, before readDeadline

	shutdownOnce sync.Once
	lingering    atomic.Bool // shutdown's goroutine owns the close
	closeOnce    sync.Once
	closeErr     error
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

// Read gives go-smtp the client's bytes at most one line at a time: up to and
// including the next LF, from a buffer that one socket read fills. go-smtp's bufio
// reader therefore never holds more than the line it is working on, which lets conn
// see exactly which bytes belong to a message (inData) and which to a command:
//
//   - go-smtp's DATA reader drops "." and the CR after it at the start of a line when
//     no LF follows (data.go, state stateDotCR), so "CRLF . CR x" reaches Data as
//     "CRLF x". conn spots the sequence in the raw bytes while a message is being
//     received and deliver refuses the message (RFC 5322 §2.3; docs/threat-model.md B1).
//   - bufio returns a partial line without its error when a read fails (bufio.Reader
//     ReadLine), so go-smtp would run a command line that never got its CRLF when the
//     read timeout strikes, and start a new timeout: a client sending a byte per
//     timeout would stay until the session lifetime. conn ends the connection at the
//     first timeout instead (readFailed, Write), and the partial line runs against a
//     session that refuses everything.
//   - while a message is being received, read errors become replies, since go-smtp
//     answers a failed BDAT chunk with the error text as a permanent 554 (conn.go
//     handleBdat, dataErrorToStatus).
//
// After the TLS handshake starts the bytes are ciphertext: they pass through
// unsplit and uninspected, and these guards rest with go-smtp (see doc.go).
func (c *conn) Read(b []byte) (int, error) {
	if c.readErr != nil {
		return 0, c.readErr
	}
	if len(c.buf) == 0 {
		if c.state.tls.Load() {
			n, err := c.readSocket(b)
			c.countTransfer(n)
			return n, err
		}
		if cap(c.buf) == 0 {
			c.buf = make([]byte, 0, readBufferSize)
		}
		n, err := c.readSocket(c.buf[:cap(c.buf)])
		c.buf = c.buf[:n]
		if n == 0 {
			return 0, err
		}
	}
	p := c.buf
	plain := !c.state.tls.Load()
	if plain {
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			p = p[:i+1]
		}
	}
	n := copy(b, p)
	c.buf = c.buf[n:]
	c.countTransfer(n)
	if plain && c.line.scan(b[:n]) && c.state.inData.Load() > 0 {
		c.state.dotCR.Store(true)
	}
	return n, nil
}

// readSocket reads from the network. Bytes read are returned without the error that
// may come with them: a net.Conn repeats EOF and timeouts on the next read.
func (c *conn) readSocket(b []byte) (int, error) {
	c.armRateDeadline()
	n, err := c.Conn.Read(b)
	if n > 0 || err == nil {
		return n, nil
	}
	if err == io.EOF {
		c.state.eof.Store(true)
		if c.line.open() && c.state.inData.Load() == 0 {
			// bufio would hand the partial line to go-smtp as a command.
			c.state.finish.Store(errPartialLine)
			c.state.closing.Store(true)
		}
		return 0, err
	}
	if errors.Is(err, net.ErrClosed) {
		return 0, err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, c.readFailed(err)
	}
	if c.state.inData.Load() > 0 {
		return 0, errConnection.reply()
	}
	return 0, err
}

// readFailed finishes the connection after a read timeout: the command timeout, the
// timeout of a whole DATA or BDAT transfer (go-smtp sets the deadline at the command
// line only), the minimum data rate (datarate.go), or the session lifetime (the
// deadlines are clamped to it). The reply says which, and Write sends it in place of
// whatever go-smtp answers next.
func (c *conn) readFailed(err error) error {
	r := errIdleTimeout
	switch {
	case !c.expires.IsZero() && !time.Now().Before(c.expires):
		r = errLifetime
	case c.rateCut:
		r = c.rate.tooSlow
		c.log.Info("smtpd: data below the minimum rate", "session", c.state.id, "bytes", c.xferBytes, "elapsed", time.Since(c.xfer.start).Round(time.Millisecond), "min_rate", c.rate.min)
	case c.state.inData.Load() > 0:
		r = errTimeout
	case c.line.open():
		r = errPartialLine
	}
	c.state.finish.Store(r)
	c.state.closing.Store(true)
	c.log.Info("smtpd: read timed out, closing connection", "session", c.state.id, "reason", r)
	if c.state.inData.Load() > 0 {
		// Data gets the reply as its error (transferError); go-smtp's own wait for a
		// command needs the net.Error to answer and stop.
		c.readErr = r.reply()
	} else {
		c.readErr = err
	}
	return c.readErr
}

// Write sends go-smtp's replies. In plain text it puts our name and instance token in
// the EHLO reply's first line (ehloReply), replaces control characters in them
// (go-smtp echoes the EHLO name and unknown command words: RFC 5321 §4.2 reply text is
// HT and printable ASCII), answers a timed-out connection with the timeout's reply
// instead of go-smtp's, and drops bytes the client sent behind STARTTLS (RFC 3207 §4,
// CVE-2011-0411). It closes the connection once the reply announcing the close is out:
// go-smtp writes each reply line with one flushed Write.
func (c *conn) Write(b []byte) (int, error) {
	out := b
	plain := !c.state.tls.Load()
	if plain {
		if r := c.state.finish.Load(); r != nil {
			out = []byte(replyLine(r))
		} else {
			out = sanitizeReplyBytes(c.ehloReply(b))
		}
	}
	_, err := c.Conn.Write(out)
	if plain && string(b) == startTLSReady {
		// The client must wait for this reply before it starts TLS; whatever it sent
		// behind STARTTLS is plain text injected before the handshake.
		c.buf = c.buf[:0]
	}
	if c.state.closing.Load() {
		c.shutdown()
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// shutdown ends a connection smtpd closes on purpose without losing the reply that
// says so. A client that pipelines (RFC 2920) has sent more by then, and a close with
// unread input makes the kernel answer with RST and throw away the replies not yet
// delivered, the 421 among them. So conn sends FIN after the reply, stops giving
// go-smtp input, and in the background reads and drops what still arrives for a
// bounded time before it closes.
func (c *conn) shutdown() {
	c.shutdownOnce.Do(func() {
		if c.readErr == nil {
			c.readErr = net.ErrClosed // go-smtp ends the session quietly
		}
		cw, ok := c.Conn.(interface{ CloseWrite() error })
		if !ok || cw.CloseWrite() != nil {
			c.forceClose()
			return
		}
		c.lingering.Store(true)
		go func() {
			_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
			c.forceClose()
		}()
	})
}

// Close is go-smtp's close at the end of a session. During shutdown's linger it
// leaves the socket to the lingering goroutine, which closes it within lingerTimeout.
func (c *conn) Close() error {
	if c.lingering.Load() {
		return nil
	}
	return c.forceClose()
}

// forceClose closes the socket and frees the connection's slot, once.
func (c *conn) forceClose() error {
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
	// go-smtp calls this from the goroutine that reads, so the read-side fields are
	// safe; the listener's call comes before go-smtp has the connection.
	c.readDeadline, c.rateCut = c.clamp(t, 0), false
	return c.Conn.SetReadDeadline(c.readDeadline)
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

// lineState follows the client's byte stream line by line (any LF ends a line).
type lineState uint8

const (
	lineStart lineState = iota // nothing of the current line yet
	lineDot                    // the line so far is "."
	lineDotCR                  // the line so far is ".\r"
	lineOther                  // anything else
)

// scan advances over p and reports whether it completed "." CR x at the start of a
// line, with x anything but LF: RFC 5321 §4.5.2 dot-stuffing never produces it, and
// in a message it is a bare CR that go-smtp's DATA reader drops with the dot.
func (l *lineState) scan(p []byte) bool {
	found := false
	for i := 0; i < len(p); i++ {
		switch ch := p[i]; *l {
		case lineStart:
			*l = next(ch, '.', lineDot)
		case lineDot:
			*l = next(ch, '\r', lineDotCR)
		case lineDotCR:
			found = found || ch != '\n'
			*l = next(ch, 0, lineOther)
		default:
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return found
			}
			i += j
			*l = lineStart
		}
	}
	return found
}

// next is the state after ch: lineStart after LF, then if ch is want, else lineOther.
func next(ch, want byte, then lineState) lineState {
	switch {
	case ch == '\n':
		return lineStart
	case ch == want:
		return then
	}
	return lineOther
}

// open reports whether part of a line has been read without its LF.
func (l lineState) open() bool { return l != lineStart }
