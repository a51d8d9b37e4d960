package smtpd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.LMTPSession = (*session)(nil)
)

// session is one go-smtp session: from the first EHLO (or the first after STARTTLS)
// to the connection's end. go-smtp calls it from the connection's goroutine, except
// Data for BDAT, which runs in a goroutine of its own (conn.go handleBdat) while the
// connection goroutine may call Reset; mu guards the envelope for that.
type session struct {
	srv   *Server
	state *connState
	log   *slog.Logger
	env   Envelope   // the constant parts: RemoteAddr, Helo, SessionID
	conn  *smtp.Conn // for the EHLO name at a repeated EHLO (Reset)

	mu       sync.Mutex
	hasFrom  bool
	from     string
	smtputf8 bool
	to       []string // normalised, deduplicated
	rcpts    int      // RCPT commands accepted, duplicates included (MaxRecipients)
}

// newSession runs at the first HELO, EHLO or LHLO (and the first after STARTTLS).
// A refusal here leaves go-smtp without a session and the client may greet again.
func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	st := stateOf(c.Conn())
	remote := c.Conn().RemoteAddr().String()
	log := s.log.With("session", st.id, "remote", remote)
	if st.closing.Load() {
		return nil, st.closingReply()
	}
	if !validHelo(c.Hostname()) {
		log.Info("smtpd: greeting refused", "reason", "control characters in the HELO name", "len", len(c.Hostname()))
		return nil, s.refuse(st, log, errBadHelo)
	}
	sess := &session{
		srv:   s,
		state: st,
		log:   log,
		env:   Envelope{RemoteAddr: remote, Helo: c.Hostname(), SessionID: st.id},
		conn:  c,
	}
	_, tls := c.TLSConnectionState()
	sess.log.Debug("smtpd: session started", "helo", c.Hostname(), "tls", tls)
	return sess, nil
}

// Reset is called at RSET, at a new EHLO and after every DATA or BDAT transaction
// (RFC 5321 §4.1.1.5).
//
// At a repeated EHLO go-smtp calls it with the new name already set and then
// answers "Hello <name>" without asking the session; a name with control characters
// would be echoed (and through TLS conn.Write cannot clean it). So Reset answers 421
// itself and closes the connection, before go-smtp writes.
func (s *session) Reset() {
	if h := s.conn.Hostname(); !validHelo(h) {
		s.log.Info("smtpd: greeting refused, closing connection", "reason", "control characters in the HELO name", "len", len(h))
		// closing makes conn.Write end the connection after this reply; go-smtp's own
		// reply then finds it shut.
		s.state.closing.Store(true)
		_ = s.conn.Conn().SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
		_, _ = io.WriteString(s.conn.Conn(), replyLine(errBadHeloClosing))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasFrom, s.from, s.smtputf8 = false, "", false
	s.to, s.rcpts = nil, 0
}

func (s *session) Logout() error {
	s.log.Debug("smtpd: session ended", "errors", s.state.errors.Load())
	return nil
}

// Mail starts a transaction (RFC 5321 §3.3). go-smtp has parsed the path and the
// parameters; SIZE= above MaxMessageBytes it refuses itself with 552 5.3.4 (RFC 1870).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.state.closing.Load() {
		return s.state.closingReply()
	}
	s.mu.Lock()
	nested := s.hasFrom
	s.mu.Unlock()
	if nested {
		// go-smtp accepts a second MAIL and keeps the recipients of the first; RFC 5321
		// §4.1.4 wants 503 for commands out of order.
		return s.refuse(errNestedMail)
	}
	if opts != nil && opts.Auth != nil {
		// go-smtp parses AUTH= whether or not AUTH is offered (conn.go handleMail).
		return s.refuse(errAuthParam)
	}
	utf8 := opts != nil && opts.UTF8
	norm, err := parseSender(from, utf8)
	if err != nil {
		s.log.Info("smtpd: sender refused", "from", from, "reason", err)
		return s.refuse(errBadSender)
	}
	var size int64
	if opts != nil {
		size = opts.Size
	}
	if !s.srv.storageOK(s.log, size) {
		return s.refuse(errInsufficientStorage)
	}
	if size > 0 && !s.srv.inflight.room(size, s.srv.opts.InflightWait) {
		// RFC 1870 §6.1: a size the server cannot take for now is a 452. Not the
		// sender's fault: it does not count towards MaxErrors.
		s.srv.inflightRefused(s.log, "MAIL", size)
		return reply(s.log, s.state.id, errInflight)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasFrom, s.from, s.smtputf8 = true, norm, utf8
	return nil
}

// Rcpt re-parses the address strictly before the Handler sees it (docs/threat-model.md B3):
// go-smtp hands over what its lenient parsePath made of the path. Rcpt enforces
// MaxRecipients (452 4.5.3, RFC 5321 §4.5.3.1.8) itself rather than go-smtp, whose
// refusal never reaches the session and so could not count towards MaxErrors.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.state.closing.Load() {
		return s.state.closingReply()
	}
	s.mu.Lock()
	full := s.srv.opts.MaxRecipients > 0 && s.rcpts >= s.srv.opts.MaxRecipients
	s.mu.Unlock()
	if full {
		return s.refuse(errTooManyRecipients)
	}
	norm, err := parseRecipient(to)
	if err != nil {
		s.log.Info("smtpd: recipient refused", "rcpt", to, "reason", err)
		return s.refuse(errNoSuchRecipient)
	}
	s.mu.Lock()
	from, accepted := s.from, slices.Clone(s.to)
	s.mu.Unlock()

	ctx, cancel := s.srv.handlerContext()
	ctx = context.WithValue(ctx, acceptedKey{}, accepted)
	err = s.srv.h.Recipient(ctx, from, norm)
	cancel()
	if err != nil {
		return s.refuse(err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcpts++
	if !slices.Contains(s.to, norm) {
		s.to = append(s.to, norm)
	}
	return nil
}

// Data receives the message after DATA (RFC 5321 §4.1.1.4; go-smtp undoes the
// dot-stuffing of §4.5.2 and ends at CRLF.CRLF only) or the BDAT chunks (RFC 3030).
func (s *session) Data(r io.Reader) error {
	env := s.envelope() // first: for BDAT this runs in its own goroutine
	return s.deliver(env, r)
}

// LMTPData is Data for LMTP (RFC 2033 §4.2): go-smtp writes one reply per accepted
// RCPT. The Handler takes the message once, so all recipients share its status, which
// go-smtp fills in from the return value (statusCollector.fillRemaining).
// StatusCollector.SetStatus is left alone on purpose: it panics for an address go-smtp
// does not know, and for BDAT this runs in its own goroutine, where an envelope copied
// late could name the recipients of a later transaction.
func (s *session) LMTPData(r io.Reader, _ smtp.StatusCollector) error {
	return s.deliver(s.envelope(), r)
}

// envelope copies the transaction so far.
func (s *session) envelope() Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	env := s.env
	env.From = s.from
	env.To = slices.Clone(s.to)
	env.SMTPUTF8 = s.smtputf8
	env.SessionID = s.state.id
	return env
}

// deliver reads, checks and hands over one message. It returns nil only when the
// Handler has stored the message (RFC 5321 §6.1), else an *smtp.SMTPError.
func (s *session) deliver(env Envelope, r io.Reader) error {
	_, bdat := r.(*io.PipeReader) // BDAT: Data runs in a goroutine of its own
	if !bdat {
		// dotCR must be clear before the first byte of this message is read: conn.Read
		// gives go-smtp one line at a time, so nothing of it has been read yet. (A BDAT
		// goroutine may start late, during a later DATA: it leaves the flag alone.)
		s.state.dotCR.Store(false)
	}
	s.state.inData.Add(1)
	defer s.state.inData.Add(-1)
	if s.state.closing.Load() {
		return s.state.closingReply()
	}
	// The message's share of the in-flight budget (inflight.go), given back once it
	// has been handled, 250 or not.
	l := lease{b: s.srv.inflight}
	defer l.release()

	// The transfer's clock for the minimum data rate (datarate.go) starts here, after
	// the 354 or at the first BDAT, and stops once the message is read.
	endTransfer := s.state.beginTransfer()
	msg, err := readMessage(r, s.srv.opts.MaxMessageBytes, &l, s.srv.opts.InflightWait)
	endTransfer()
	if bdat && errors.Is(err, smtp.ErrDataReset) {
		abandonTransfer(s.log)
	}
	// go-smtp copies a BDAT chunk with io.Copy, which takes an early EOF for the end of
	// the chunk: "BDAT 100 LAST" followed by 20 bytes and a close arrives here as a
	// complete 20-byte message. A BDAT message (read through go-smtp's pipe) from a
	// client that has closed its side is therefore not trusted to be whole. DATA needs
	// CRLF.CRLF to end and is not affected.
	if err == nil && bdat && s.state.eof.Load() {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, errInflight) {
		// Not the sender's fault: it does not count towards MaxErrors.
		s.srv.inflightRefused(s.log, "DATA", 0)
		return reply(s.log, env.SessionID, err)
	}
	if err != nil {
		e, senderFault := transferError(err)
		if senderFault {
			s.log.Info("smtpd: message refused", "reason", e, "from", env.From, "rcpts", len(env.To))
			return s.refuse(e)
		}
		s.log.Info("smtpd: message transfer failed", "err", err)
		return reply(s.log, env.SessionID, e)
	}

	// In DATA, "CRLF . CR x" has lost its CR in go-smtp's reader; conn saw it go by.
	// In BDAT nothing is unstuffed and bareLineEnd finds it.
	if i := bareLineEnd(msg); i >= 0 || !bdat && s.state.dotCR.Load() {
		s.log.Info("smtpd: message refused", "reason", errBareLineEnd, "offset", i, "size", len(msg), "from", env.From)
		return s.refuse(errBareLineEnd)
	}
	if limit := s.srv.opts.MaxLineLength; limit > 0 && longestLine(msg) > limit {
		s.log.Info("smtpd: message refused", "reason", errLineTooLong, "size", len(msg), "from", env.From)
		return s.refuse(errLineTooLong)
	}
	if len(msg) == 0 || bytes.HasPrefix(msg, []byte("\r\n")) {
		s.log.Info("smtpd: message refused", "reason", errNoHeader, "size", len(msg), "from", env.From)
		return s.refuse(errNoHeader)
	}
	if limit := s.srv.opts.MaxReceived; limit > 0 {
		if n := countReceived(msg, limit); n > limit {
			s.log.Info("smtpd: message refused", "reason", errLoop, "received", n, "from", env.From)
			return s.refuse(errLoop)
		}
	}

	ctx, cancel := s.srv.handlerContext()
	defer cancel()
	start := time.Now()
	if err := s.srv.h.Handle(ctx, env, msg); err != nil {
		return s.refuse(err)
	}
	s.log.Info("smtpd: message accepted", "from", env.From, "rcpts", len(env.To), "size", len(msg), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// refuse turns err into its reply and counts it towards MaxErrors (Server.refuse).
func (s *session) refuse(err error) error {
	return s.srv.refuse(s.state, s.log, err)
}

// refuse turns err into its reply and counts it towards MaxErrors. The refusal that
// reaches the limit is answered 421 instead, and the connection closes after it
// (Postfix's smtpd_hard_error_limit). It returns an untyped nil for nil: go-smtp
// compares the interface with nil.
func (s *Server) refuse(st *connState, log *slog.Logger, err error) error {
	r := reply(log, st.id, err)
	if r == nil {
		return nil
	}
	n := st.errors.Add(1)
	if limit := s.opts.MaxErrors; limit > 0 && n >= int64(limit) {
		log.Warn("smtpd: error limit reached, closing connection", "errors", n)
		st.closing.Store(true)
		return errTooManyErrors.reply()
	}
	return r
}

// validHelo reports whether a HELO name (go-smtp hands over the argument up to the
// first space) is free of control characters and valid UTF-8, so that echoing it in
// go-smtp's "Hello" reply is harmless. Anything more is not checked: RFC 5321 §4.1.4
// lets a server not act on a wrong name, and many clients send one.
func validHelo(h string) bool {
	if !utf8.ValidString(h) {
		return false
	}
	for _, r := range h {
		if r < 0x20 || r >= 0x7f && r < 0xa0 {
			return false
		}
	}
	return true
}

// abandonTransfer ends the goroutine go-smtp runs Session.Data in for a BDAT transfer
// that RSET, a new EHLO, STARTTLS, an oversize chunk or the connection's end cut off
// (go-smtp closes the pipe with ErrDataReset). Nobody waits for that transfer's result,
// and go-smtp would deliver it anyway: conn.go handleBdat sends Data's result to
// c.dataResult, read from the connection after Data returns, which by then may be the
// channel of the next transaction. The next BDAT LAST would then be answered with this
// transfer's 451 while its own message is stored, and the race detector flags the
// field. runtime.Goexit runs the deferred calls (go-smtp's recover sees no panic) and
// ends the goroutine before that send: no reply for a transfer nobody asked about.
func abandonTransfer(log *slog.Logger) {
	log.Debug("smtpd: BDAT transfer aborted by the client")
	runtime.Goexit()
}
