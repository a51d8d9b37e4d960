package announce

import (
	"crypto/rand"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// Defaults of Options.
const (
	DefaultConfirmationsPerDay = 3
	DefaultTokenLifetime       = 48 * time.Hour
	DefaultMaxBounces          = 3
	DefaultBatchSize           = 100
	DefaultConnections         = 8
	DefaultMaxClockJump        = workflow.MaxClockJump
	DefaultHeartbeat           = time.Minute
	DefaultMinBackoff          = time.Minute
	DefaultMaxBackoff          = time.Hour
	DefaultRetryLifetime       = 5 * 24 * time.Hour
	DefaultBounceWindow        = 30 * 24 * time.Hour
)

// Options configures HandleRequest, HandleBounce, Activate and the Fanout
// worker. Each reads the fields it needs; the zero value of every field is a
// working default except List (the announce list), which every caller sets.
type Options struct {
	// List is the announce list: its address names the sub-addresses
	// (announce+subscribe@, announce+confirm-…@, announce+bounces-…@) and
	// the List-* fields. HandleRequest takes the list as an argument instead.
	List lists.List
	// Project names the project in subjects and bodies, e.g. "example.org".
	Project string

	// Key is the announce list's key pair. It signs the confirmation mails
	// (PGP/MIME, RFC 3156), and the Fanout refuses to send a release whose
	// body it does not verify (the job is held). Nil: confirmations go out
	// unsigned and releases are not checked (development only).
	Key *keys.Key
	// Rand is the source of tokens, Message-IDs and MIME boundaries.
	// Default crypto/rand. Tokens must come from a CSPRNG (docs/threat-model.md F1):
	// tests alone set a deterministic reader.
	Rand io.Reader
	// Render renders a message body from a template name and its data
	// (templates.Set.Render). Default: the embedded templates.
	Render func(name string, data any) (string, error)
	// IsOurs reports addresses that are ours (lists.Roster.IsOurs): no
	// confirmation is ever sent to them (docs/threat-model.md B9).
	IsOurs func(addr string) bool

	// ConfirmationsPerDay caps the confirmation mails sent to one address
	// in any 24 hours, so that nobody can use the list to mail-bomb a third
	// party (docs/threat-model.md F2). Default 3.
	ConfirmationsPerDay int
	// TokenLifetime is how long a confirmation token is valid. Default 48 h.
	TokenLifetime time.Duration
	// MaxBounces disables a subscriber after this many releases bounced
	// permanently for it (RCPT refusals at the relay or DSNs). Default 3.
	MaxBounces int
	// BounceWindow is how long after a release started its bounce address
	// still counts DSNs. Default 30 days.
	BounceWindow time.Duration

	// UnsubscribeURL, if set, is added to List-Unsubscribe next to the
	// mailto URI in the shared (batched) copies: a generic page where a
	// subscriber asks for an unsubscribe confirmation (RFC 2369 §3.2). It
	// is not a one-click URI: without a per-recipient token it cannot
	// name the subscriber, so no List-Unsubscribe-Post goes with it.
	UnsubscribeURL string
	// OneClickBase, if set together with OneClick, is the origin of the
	// RFC 8058 one-click URIs: <OneClickBase>/unsubscribe/<token>
	// (daemon/web serves them).
	OneClickBase string
	// OneClick sends every copy in its own SMTP transaction with a
	// per-subscriber one-click List-Unsubscribe URI and
	// List-Unsubscribe-Post (RFC 8058 §3.1). The signed body is still
	// built and stored once; only the outer header differs. It costs one
	// transaction per subscriber instead of one per batch (see the package
	// documentation for measurements). Needs OneClickBase.
	OneClick bool

	// BatchSize is the number of recipients of a batch: one connection
	// sends it (one transaction with that many RCPTs, or with OneClick one
	// transaction each) and one commit records it. A crash sends again at
	// most the batches in flight, one per connection. Default 100.
	BatchSize int
	// SMTP, when set, is the relay the fan-out sends to over its own
	// persistent connections, Connections of them, many transactions each,
	// pipelined when the relay offers PIPELINING (pipeline.ParseURL reads
	// the configuration's relay URL). The relay given to New is then not
	// used, so DKIM signs here. Without it every transaction goes through
	// the relay given to New (the Maildir relay, the drill's).
	SMTP *pipeline.Config
	// Connections is how many batches are out at once: connections to the
	// SMTP relay, or concurrent calls of the relay given to New. Default 8
	// with SMTP, else 1.
	Connections int
	// DKIM, with SMTP, signs every copy (RFC 6376; RFC 8058 §4 wants the
	// one-click fields signed): the body hash once per release, one
	// signature per copy. Nil: unsigned.
	DKIM *DKIM
	// Observe, when set, is told how the relay answered each transaction
	// sent over SMTP: "delivered", "partial", "deferred" or "refused". It
	// is called from several goroutines.
	Observe func(result string)
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// Mono is a monotonic clock: the time elapsed since an arbitrary
	// origin. Default: Go's monotonic reading since New. With Now it
	// detects a wall clock that jumped (docs/threat-model.md G4).
	Mono func() time.Duration
	// MaxClockJump is the largest forward jump of the wall clock, against
	// the monotonic clock since the last persisted heartbeat, that the
	// Fanout accepts before holding the jobs the jump made due. Default
	// 10 minutes.
	MaxClockJump time.Duration
	// Heartbeat is how often the Fanout persists the wall clock. Default 1 min.
	Heartbeat time.Duration
	// MinBackoff and MaxBackoff bound the wait after a temporary failure
	// (a whole transaction, or one recipient in the retry set). Defaults
	// 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// RetryLifetime is how long a temporarily refused recipient is retried
	// before it is given up (counted as expired). Default 5 days.
	RetryLifetime time.Duration

	// Held is called inside the Update that holds a job: its T fell in a
	// forward jump of the wall clock, its message is not signed by Key, or
	// the relay refused the message itself. An error rolls the hold back
	// (and it is tried again). Resume releases a held job.
	Held func(tx *bolt.Tx, j Job, reason string) error
	// Guard counts the deaths of the process while batches are sent
	// (guard.go, docs/threat-model.md A6); nil counts nothing.
	Guard BatchGuard
	// OnBatch, when set, is called as each batch is about to be sent,
	// inside its guard: a failpoint for the daemon's tests, nil in embargo.
	OnBatch func(release string, rcpts []string)
	// Released is called inside the Update that marks a job released.
	Released func(tx *bolt.Tx, j Job) error
	// Logger receives IDs, counts and verdicts, never message content or
	// subscriber addresses.
	Logger *slog.Logger
}

var (
	defaultTemplatesOnce sync.Once
	defaultTemplates     *templates.Set
	defaultTemplatesErr  error
)

func defaultRender(name string, data any) (string, error) {
	defaultTemplatesOnce.Do(func() { defaultTemplates, defaultTemplatesErr = templates.New("") })
	if defaultTemplatesErr != nil {
		return "", defaultTemplatesErr
	}
	return defaultTemplates.Render(name, data)
}

func (o Options) withDefaults() Options {
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Render == nil {
		o.Render = defaultRender
	}
	if o.IsOurs == nil {
		o.IsOurs = func(string) bool { return false }
	}
	if o.ConfirmationsPerDay <= 0 {
		o.ConfirmationsPerDay = DefaultConfirmationsPerDay
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = DefaultTokenLifetime
	}
	if o.MaxBounces <= 0 {
		o.MaxBounces = DefaultMaxBounces
	}
	if o.BounceWindow <= 0 {
		o.BounceWindow = DefaultBounceWindow
	}
	o.OneClickBase = strings.TrimRight(o.OneClickBase, "/")
	if o.OneClickBase == "" {
		o.OneClick = false
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Connections <= 0 {
		o.Connections = 1
		if o.SMTP != nil {
			o.Connections = DefaultConnections
		}
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	// Wall clock only: time.Now carries a monotonic reading, and Sub
	// between two such times ignores the wall clock, which would hide the
	// very jumps the Fanout looks for (package time, "Monotonic Clocks").
	o.Now = func() time.Time { return now().Round(0) }
	if o.Mono == nil {
		start := time.Now()
		o.Mono = func() time.Duration { return time.Since(start) } // monotonic reading
	}
	if o.MaxClockJump <= 0 {
		o.MaxClockJump = DefaultMaxClockJump
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.RetryLifetime <= 0 {
		o.RetryLifetime = DefaultRetryLifetime
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// keyOptions signs at now with o.Rand (boundaries, signature salts).
func (o Options) keyOptions(now time.Time) keys.Options {
	return keys.Options{Now: func() time.Time { return now }, Rand: o.Rand}
}
