package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Defaults applied to zero Options fields. They follow Postfix's defaults (docs/threat-model.md
// §4), tightened where embargo has few local addresses.
const (
	DefaultMaxMessageBytes     = 10 << 20 // Postfix message_size_limit 10 240 000
	DefaultMaxRecipients       = 10       // Postfix allows 1000; embargo has a handful of addresses
	DefaultMaxLineLength       = 2000     // go-smtp's default, twice RFC 5321 §4.5.3.1.6's 1000
	DefaultReadTimeout         = 5 * time.Minute
	DefaultWriteTimeout        = 5 * time.Minute // Postfix smtpd_timeout 300 s
	DefaultMaxConnections      = 100
	DefaultMaxConnectionsPerIP = 10
	DefaultSessionLifetime     = 10 * time.Minute
	DefaultMaxErrors           = 20  // Postfix smtpd_hard_error_limit
	DefaultMaxReceived         = 50  // Postfix hopcount_limit
	DefaultMinDataRate         = 500 // bytes per second, Postfix smtpd_min_data_rate
	// DefaultDataRateGrace is how long a DATA or BDAT transfer runs before its average
	// rate is held against MinDataRate (datarate.go says why 10 s).
	DefaultDataRateGrace = 10 * time.Second
	// DefaultMinFreeBytes is the free-space reserve when FreeSpace is set: above
	// 1.5 × DefaultMaxMessageBytes, the least Postfix's queue_minfree documentation
	// asks for.
	DefaultMinFreeBytes = 64 << 20
)

// ErrServerClosed is returned by Serve and ListenAndServe after Close or Shutdown.
var ErrServerClosed = errors.New("smtpd: server closed")

// Options configures a Server. A zero field takes its Default value; a negative number
// or duration switches that limit off (meant for tests and benchmarks).
type Options struct {
	// Network and Addr are used by ListenAndServe. Network defaults to "tcp", or "unix"
	// with LMTP; Addr defaults to ":25" for SMTP and must be set for LMTP.
	Network string
	Addr    string

	// Domain is the host name in the greeting (RFC 5321 §4.3.1); default os.Hostname.
	Domain string

	// MaxMessageBytes caps a message, advertised as SIZE (RFC 1870). Beyond: 552 5.3.4.
	MaxMessageBytes int64
	// MaxRecipients caps RCPT per transaction (RFC 5321 §4.5.3.1.8). Beyond: 452 4.5.3,
	// which counts towards MaxErrors. smtpd enforces it, not go-smtp, so it is not
	// advertised as LIMITS RCPTMAX (RFC 9422 makes that optional).
	MaxRecipients int
	// MaxLineLength caps command lines and message lines, CRLF included: 500 5.4.0.
	// go-smtp enforces it on commands and DATA, and closes; it lifts it while copying
	// a BDAT chunk, so smtpd checks the lines of a BDAT message itself.
	MaxLineLength int
	// ReadTimeout bounds the wait for each command, and for the whole DATA transfer:
	// go-smtp does not extend it while data arrives (MinDataRate ends a slow transfer
	// sooner). WriteTimeout bounds each reply and also each Handler call, well within
	// the 10 minutes a client waits for the reply to the final dot (RFC 5321
	// §4.5.3.2.6).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// MaxConnections and MaxConnectionsPerIP cap open connections, counted from
	// accept, whether or not the client ever greets. Beyond: 421 4.7.0 and close.
	MaxConnections      int
	MaxConnectionsPerIP int
	// SessionLifetime closes a connection that has been open this long, whatever it
	// is doing; go-smtp then answers 421 4.4.2.
	SessionLifetime time.Duration
	// MaxErrors is the number of refusals by smtpd or the Handler (recipients, senders,
	// messages) after which the connection gets 421 4.7.0 and is closed. go-smtp closes
	// on its own after more than 3 protocol errors.
	MaxErrors int
	// MaxReceived refuses a message with more Received fields as a loop: 554 5.4.6.
	MaxReceived int
	// MinDataRate is the least average rate, in bytes per second since the transfer
	// began, at which a DATA or BDAT transfer must arrive once DataRateGrace has
	// passed. Below it the client gets 421 4.4.2 and the connection closes, nothing
	// stored (docs/threat-model.md B7; Postfix's smtpd_min_data_rate). ReadTimeout
	// still bounds the whole DATA. datarate.go has the rule and its reasons.
	MinDataRate int64
	// DataRateGrace is how long a transfer may run before MinDataRate applies.
	DataRateGrace time.Duration

	// FreeSpace, when set, reports the bytes free (to the daemon's user) on the file
	// system that holds the store; smtpd asks it at every MAIL. MAIL is refused with
	// 452 4.3.1 (RFC 5321 §4.5.3.1.10; RFC 3463 X.3.1, mail system full) when fewer
	// than MinFreeBytes are free, or fewer than 1.5 times the size announced with
	// SIZE= (RFC 1870 §6: 452 for a temporary lack of storage), as Postfix does with
	// queue_minfree: the client tries again later instead of sending a whole message
	// that the commit then refuses. FreeSpace is called concurrently and should be
	// cheap (cached). An error from it is logged and the MAIL accepted (storage.go).
	FreeSpace func() (uint64, error)
	// MinFreeBytes is the reserve FreeSpace is held against. Zero: DefaultMinFreeBytes;
	// negative: no reserve, only the SIZE= rule.
	MinFreeBytes int64

	// MaxInflightBytes caps the message bytes all sessions hold in memory at once
	// (inflight.go; docs/threat-model.md C1). Beyond it, a SIZE= at MAIL that does
	// not fit, and a message that outgrows what is left, get 452 4.3.1 after waiting
	// up to InflightWait. Zero: DefaultInflightBytes(MaxMessageBytes); negative: no
	// cap (tests, benchmarks). A smaller budget than MaxMessageBytes is raised to it,
	// so that one message of the largest size always gets through.
	MaxInflightBytes int64
	// Inflight, when set, is the budget instead, shared with the other Servers of the
	// process (SMTP and LMTP take their messages into the same memory);
	// MaxInflightBytes is then not used.
	Inflight *InflightBudget
	// InflightWait is how long a session waits for budget before it answers 452.
	// Zero: DefaultInflightWait; negative: no wait.
	InflightWait time.Duration

	// LMTP serves LMTP (RFC 2033) instead of SMTP: LHLO, and one reply per recipient
	// after the message.
	LMTP bool
	// TLSConfig enables STARTTLS (RFC 3207) when non-nil.
	TLSConfig *tls.Config
}

func (o Options) withDefaults() Options {
	if o.Network == "" {
		o.Network = "tcp"
		if o.LMTP {
			o.Network = "unix"
		}
	}
	if o.Addr == "" && !o.LMTP {
		o.Addr = ":25"
	}
	if o.Domain == "" {
		o.Domain = "localhost"
		if h, err := os.Hostname(); err == nil && h != "" {
			o.Domain = h
		}
	}
	o.MaxMessageBytes = orDefault(o.MaxMessageBytes, DefaultMaxMessageBytes)
	o.MaxRecipients = orDefault(o.MaxRecipients, DefaultMaxRecipients)
	o.MaxLineLength = orDefault(o.MaxLineLength, DefaultMaxLineLength)
	o.ReadTimeout = orDefault(o.ReadTimeout, DefaultReadTimeout)
	o.WriteTimeout = orDefault(o.WriteTimeout, DefaultWriteTimeout)
	o.MaxConnections = orDefault(o.MaxConnections, DefaultMaxConnections)
	o.MaxConnectionsPerIP = orDefault(o.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	o.SessionLifetime = orDefault(o.SessionLifetime, DefaultSessionLifetime)
	o.MaxErrors = orDefault(o.MaxErrors, DefaultMaxErrors)
	o.MaxReceived = orDefault(o.MaxReceived, DefaultMaxReceived)
	o.MinDataRate = orDefault(o.MinDataRate, DefaultMinDataRate)
	o.DataRateGrace = orDefault(o.DataRateGrace, DefaultDataRateGrace)
	o.MinFreeBytes = orDefault(o.MinFreeBytes, DefaultMinFreeBytes)
	o.MaxInflightBytes = orDefault(o.MaxInflightBytes, DefaultInflightBytes(o.MaxMessageBytes))
	if o.MaxInflightBytes > 0 && o.MaxInflightBytes < o.MaxMessageBytes {
		o.MaxInflightBytes = o.MaxMessageBytes
	}
	o.InflightWait = orDefault(o.InflightWait, DefaultInflightWait)
	return o
}

// orDefault maps zero to def and a negative value (switched off) to zero, which is
// how go-smtp and smtpd spell "no limit".
func orDefault[T int | int64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Server is an SMTP or LMTP server that hands messages to a Handler.
type Server struct {
	opts Options
	h    Handler
	log  *slog.Logger
	smtp *smtp.Server
	lim  *connLimiter
	rate dataRate // the minimum data rate, for every connection
	// inflight is the budget of message bytes in memory, maybe shared (inflight.go).
	inflight *InflightBudget

	// ctx is the parent of every Handler call: Close cancels it so in-flight calls
	// stop; Shutdown does not, so they finish.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener // closed by markClosed, also those go-smtp has not seen yet
}

// New returns a Server that hands messages to h, which must not be nil. log receives
// one line per session event and refusal, never message content; nil discards.
func New(opts Options, h Handler, log *slog.Logger) *Server {
	opts = opts.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts: opts,
		h:    h,
		log:  log,
		lim:  newConnLimiter(opts.MaxConnections, opts.MaxConnectionsPerIP),
		rate: newDataRate(opts.MinDataRate, opts.DataRateGrace),
	}
	s.inflight = opts.Inflight
	if s.inflight == nil {
		s.inflight = NewInflightBudget(opts.MaxInflightBytes, nil)
	} else if l := s.inflight.Limit(); l > 0 && l < opts.MaxMessageBytes {
		log.Warn("smtpd: the shared in-flight budget is smaller than the message size limit: a message of the largest size can never get through",
			"inflight_bytes", l, "max_message_bytes", opts.MaxMessageBytes)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	ss := smtp.NewServer(smtp.BackendFunc(s.newSession))
	// Every field that matters is set here, on purpose: go-smtp's zero values mean
	// "unlimited" (docs/threat-model.md §0.3).
	ss.Network = opts.Network
	ss.Addr = opts.Addr
	ss.Domain = opts.Domain
	ss.LMTP = opts.LMTP
	ss.TLSConfig = markTLS(opts.TLSConfig)
	ss.MaxMessageBytes = opts.MaxMessageBytes
	ss.MaxRecipients = 0 // enforced by session.Rcpt, so that the 452 counts as an error
	ss.MaxLineLength = opts.MaxLineLength
	ss.ReadTimeout = opts.ReadTimeout
	ss.WriteTimeout = opts.WriteTimeout
	ss.EnableSMTPUTF8 = true     // RFC 6531; recipients are still ASCII-only (address.go)
	ss.AllowInsecureAuth = false // and no AUTH at all: session has no AuthSession methods
	ss.Debug = nil               // it would tee message bodies (docs/threat-model.md D10)
	ss.ErrorLog = errorLog{log}
	s.smtp = ss
	return s
}

// markTLS returns a copy of cfg that marks a connection as encrypted when the
// handshake starts, before any TLS record is written: from then on conn passes bytes
// through untouched. nil stays nil (no STARTTLS).
func markTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if c, ok := hello.Conn.(*conn); ok {
			c.state.tls.Store(true)
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg
}

// Serve accepts connections on l until Close or Shutdown, then returns ErrServerClosed.
// Connections beyond the caps are refused before go-smtp sees them.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.listeners = append(s.listeners, l)
	}
	s.mu.Unlock()
	if closed {
		l.Close()
		return ErrServerClosed
	}
	s.log.Info("smtpd: serving", "addr", l.Addr().String(), "lmtp", s.opts.LMTP, "starttls", s.opts.TLSConfig != nil, "inflight_bytes", s.inflight.Limit())
	err := s.smtp.Serve(&listener{Listener: l, lim: s.lim, lifetime: s.opts.SessionLifetime, rate: s.rate, log: s.log, greet: ehloGreeting(s.opts.Domain)})
	s.mu.Lock()
	closed = s.closed
	s.mu.Unlock()
	if closed || err == nil {
		// go-smtp returns nil when closed; say so explicitly, as net/http does.
		return ErrServerClosed
	}
	return fmt.Errorf("smtpd: serve: %w", err)
}

// ListenAndServe listens on Options.Network and Options.Addr and calls Serve.
func (s *Server) ListenAndServe() error {
	if s.opts.Addr == "" {
		return errors.New("smtpd: no address to listen on")
	}
	l, err := net.Listen(s.opts.Network, s.opts.Addr)
	if err != nil {
		return fmt.Errorf("smtpd: listen: %w", err)
	}
	return s.Serve(l)
}

// Shutdown closes the listeners and waits for the connections to end: a session in the
// middle of a message finishes it. Idle clients are not cut off; they end by QUIT or at
// ReadTimeout. When ctx ends first, Shutdown returns its error and the caller may Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.markClosed()
	if err := s.smtp.Shutdown(ctx); err != nil && !alreadyClosed(err) {
		return fmt.Errorf("smtpd: shutdown: %w", err)
	}
	return nil
}

// Close closes the listeners and all connections at once and cancels the context of
// in-flight Handler calls. Their clients get no reply and will retry.
func (s *Server) Close() error {
	s.markClosed()
	s.cancel()
	err := s.smtp.Close()
	// After Shutdown go-smtp's Close does nothing, so close what smtpd accepted itself.
	s.lim.closeAll()
	if err != nil && !alreadyClosed(err) {
		return fmt.Errorf("smtpd: close: %w", err)
	}
	return nil
}

// markClosed stops Serve. It closes the listeners itself: go-smtp closes only those
// its Serve has registered, and a Serve that is just starting may not have yet.
func (s *Server) markClosed() {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
}

// alreadyClosed reports the errors of a second close: markClosed has closed the
// listeners before go-smtp tries, and go-smtp refuses to be closed twice.
func alreadyClosed(err error) bool {
	return errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}

// handlerContext bounds one Handler call by WriteTimeout (see Options).
func (s *Server) handlerContext() (context.Context, context.CancelFunc) {
	if s.opts.WriteTimeout > 0 {
		return context.WithTimeout(s.ctx, s.opts.WriteTimeout)
	}
	return context.WithCancel(s.ctx)
}

// errorLog routes go-smtp's own log lines (accept errors, recovered panics, failed
// connections) to slog. They carry addresses and errors, never message content.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Printf(format string, v ...any) {
	e.log.Warn("smtpd: go-smtp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (e errorLog) Println(v ...any) {
	e.log.Warn("smtpd: go-smtp: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
