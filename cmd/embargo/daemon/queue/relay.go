package queue

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
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
	// HeloName is the name given in EHLO. Default: the host name (as
	// internal/pipeline's Config sets it).
	HeloName string
	// RootCAs verifies the relay's certificate; nil means the system roots.
	// Tests set it to trust their own certificate. Verification itself is never
	// turned off (docs/threat-model.md B6).
	RootCAs *x509.CertPool
	// DialTimeout bounds the TCP connect (and the TLS handshake for smtps).
	// Default 30 s.
	DialTimeout time.Duration
	// CommandTimeout bounds each command's reply; DataTimeout the reply to the
	// final dot. Defaults 5 and 10 minutes (RFC 5321 §4.5.3.2).
	CommandTimeout, DataTimeout time.Duration
	// Now names Maildir files. Default time.Now.
	Now func() time.Time
	// Instance is the token our own listeners announce in their EHLO reply
	// (smtpd.InstanceToken): an SMTP relay that announces it is ourselves,
	// and every connection fails with pipeline.ErrLoop, temporarily: the
	// rows stay queued and expire with the SRC's alert if nobody fixes
	// relay.url (docs/threat-model.md B9). "" checks nothing.
	Instance string
	// Loop, when set, is called with that error the first time a
	// connection finds it, once per relay, so that it is logged once and
	// not per row.
	Loop func(error)
	// Logger is told once how a Maildir makes its batches durable (syncfs
	// or an fsync per file, and why). Default: nothing logged.
	Logger *slog.Logger
}

func (o RelayOptions) log() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// withDefaults fills what the queue itself uses; the SMTP client fills its
// own (HeloName, the timeouts: internal/pipeline's Config).
func (o RelayOptions) withDefaults() RelayOptions {
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
	// The SMTP schemes read as the release fan-out reads them: one [relay]
	// url serves both.
	cfg, err := pipeline.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg.HeloName, cfg.RootCAs, cfg.Instance = opts.HeloName, opts.RootCAs, opts.Instance
	cfg.DialTimeout, cfg.CommandTimeout, cfg.DataTimeout = opts.DialTimeout, opts.CommandTimeout, opts.DataTimeout
	return &smtpRelay{cfg: cfg, idleTime: connIdle, maxAge: connMaxAge, maxUses: connMaxUses, loop: opts.Loop}, nil
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

// checkData refuses what no relay gets: a bare CR or LF, which a receiver
// may read as a line end (SMTP smuggling, docs/threat-model.md B2), before
// any relay (SMTP or Maildir) sees the message. Either means the renderer
// upstream has a bug, so the refusal is permanent.
func checkData(data []byte) error {
	if len(data) == 0 {
		return Permanent(errors.New("queue: message is empty"))
	}
	if err := pipeline.CheckLineEnds(data); err != nil {
		return Permanent(fmt.Errorf("queue: %w (renderer bug)", err))
	}
	return nil
}

// checkEnvelope refuses addresses that cannot be written into a MAIL or RCPT
// command as they are. Addresses come from the roster (docs/threat-model.md B4), so a
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
