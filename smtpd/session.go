package smtpd

import (
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

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
	env   Envelope // the constant parts: RemoteAddr, Helo, SessionID

	mu       sync.Mutex
	hasFrom  bool
	from     string
	smtputf8 bool
	sizeHint int64
	to       []string // normalised, deduplicated
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	st := stateOf(c.Conn())
	remote := c.Conn().RemoteAddr().String()
	sess := &session{
		srv:   s,
		state: st,
		log:   s.log.With("session", st.id, "remote", remote),
		env:   Envelope{RemoteAddr: remote, Helo: c.Hostname(), SessionID: st.id},
	}
	_, tls := c.TLSConnectionState()
	sess.log.Debug("smtpd: session started", "helo", c.Hostname(), "tls", tls)
	return sess, nil
}

// Reset is called at RSET, at a new EHLO and after every DATA or BDAT transaction
// (RFC 5321 §4.1.1.5).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasFrom, s.from, s.smtputf8, s.sizeHint = false, "", false, 0
	s.to = nil
}

func (s *session) Logout() error {
	s.log.Debug("smtpd: session ended", "errors", s.state.errors.Load())
	return nil
}

// Mail starts a transaction (RFC 5321 §3.3). go-smtp has parsed the path and the
// parameters; SIZE= above MaxMessageBytes it refuses itself with 552 5.3.4 (RFC 1870).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.state.closing.Load() {
		return errTooManyErrors.reply()
	}
	s.mu.Lock()
	nested := s.hasFrom
	s.mu.Unlock()
	if nested {
		// go-smtp accepts a second MAIL and keeps the recipients of the first; RFC 5321
		// §4.1.4 wants 503 for commands out of order.
		return s.refuse(errNestedMail)
	}
	utf8 := opts != nil && opts.UTF8
	norm, err := parseSender(from, utf8)
	if err != nil {
		s.log.Info("smtpd: sender refused", "from", from, "reason", err)
		return s.refuse(errBadSender)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasFrom, s.from, s.smtputf8 = true, norm, utf8
	if opts != nil {
		s.sizeHint = opts.Size
	}
	return nil
}

// Rcpt re-parses the address strictly before the Handler sees it (threats.md B3):
// go-smtp hands over what its lenient parsePath made of the path. go-smtp enforces
// MaxRecipients before calling Rcpt (452 4.5.3, RFC 5321 §4.5.3.1.8).
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.state.closing.Load() {
		return errTooManyErrors.reply()
	}
	norm, err := parseRecipient(to)
	if err != nil {
		s.log.Info("smtpd: recipient refused", "rcpt", to, "reason", err)
		return s.refuse(errNoSuchRecipient)
	}
	s.mu.Lock()
	from := s.from
	s.mu.Unlock()

	ctx, cancel := s.srv.handlerContext()
	err = s.srv.h.Recipient(ctx, from, norm)
	cancel()
	if err != nil {
		return s.refuse(err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.state.inData.Add(1)
	defer s.state.inData.Add(-1)
	if s.state.closing.Load() {
		return errTooManyErrors.reply()
	}
	s.mu.Lock()
	hint := s.sizeHint
	s.mu.Unlock()

	msg, err := readMessage(r, s.srv.opts.MaxMessageBytes, hint)
	// go-smtp copies a BDAT chunk with io.Copy, which takes an early EOF for the end of
	// the chunk: "BDAT 100 LAST" followed by 20 bytes and a close arrives here as a
	// complete 20-byte message. A BDAT message (read through go-smtp's pipe) from a
	// client that has closed its side is therefore not trusted to be whole. DATA needs
	// CRLF.CRLF to end and is not affected.
	if _, bdat := r.(*io.PipeReader); err == nil && bdat && s.state.eof.Load() {
		err = io.ErrUnexpectedEOF
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

	if i := bareLineEnd(msg); i >= 0 {
		s.log.Info("smtpd: message refused", "reason", errBareLineEnd, "offset", i, "size", len(msg), "from", env.From)
		return s.refuse(errBareLineEnd)
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

// refuse turns err into its reply and counts it towards MaxErrors. The refusal that
// reaches the limit is answered 421 instead, and the connection closes after it
// (Postfix's smtpd_hard_error_limit). It returns an untyped nil for nil: go-smtp
// compares the interface with nil.
func (s *session) refuse(err error) error {
	r := reply(s.log, s.state.id, err)
	if r == nil {
		return nil
	}
	n := s.state.errors.Add(1)
	if limit := s.srv.opts.MaxErrors; limit > 0 && n >= int64(limit) {
		s.log.Warn("smtpd: error limit reached, closing connection", "errors", n)
		s.state.closing.Store(true)
		return errTooManyErrors.reply()
	}
	return r
}
