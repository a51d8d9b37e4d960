// Package listd takes the mail that smtpd accepted for our lists and turns it
// into stored state and outbound copies. For each inbound message it runs one
// bbolt transaction holding the raw message, the incident change and every
// outbound row it causes; smtpd answers 250 only after that commit (DESIGN.md §1,
// docs/threats.md A1, A2). The decisions themselves are made by the pure cores:
// lists (who gets what) and workflow (what the message means for the incident).
package listd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
	"github.com/embargo-project/embargo/workflow/record"
)

// Options configures a Service.
type Options struct {
	DB        *bolt.DB
	Roster    *lists.Roster
	Templates *templates.Set
	Project   string // the name used in mail, e.g. "Kubernetes"
	// Record is what the release records say about the project: the CVE
	// JSON 5 draft of the release pack (release.go) is built from it.
	Record     record.Project
	Limits     message.Limits
	AcksPerDay int // acknowledgements per sender address in 24 h (threats.md B8)

	// ListKey is the security list's key pair: it decrypts reports and signs
	// everything the list sends. Members holds the pinned member keys.
	ListKey *keys.Key
	Members *keys.Keyring

	// Holidays are dates that are no working day and no release slot.
	Holidays []time.Time
	// Rotation is the on-call rotation (tick.go): the on-call commands new
	// incidents and gets their triage reminder.
	Rotation workflow.Rotation

	// The other lists' keys, the outside channels and the announce fan-out.
	DistributorsKey *keys.Key
	AnnounceKey     *keys.Key
	Channels        []Channel
	Announcer       Announcer
	// AnnounceOptions, when set, opens subscription by mail on the announce
	// list (daemon/announce).
	AnnounceOptions *announce.Options

	// Mono is a monotonic clock (elapsed time since an arbitrary origin)
	// that Tick compares with Now to see a jumping wall clock. Default: Go's
	// monotonic clock since New; drills give a virtual one.
	Mono func() time.Duration

	// LiftGrace is how long the announcement waits after the distributors
	// were sent "embargo lifted" (threats.md G5: they hear first). Default 1 min.
	LiftGrace time.Duration

	Now    func() time.Time
	Rand   io.Reader
	Kick   func() // wakes the delivery worker after a commit
	Logger *slog.Logger

	// Observe, when set, is told how long each "command" message and each
	// "release" took to handle (the daemon's metrics).
	Observe func(event string, took time.Duration)
}

// Service handles mail for the lists.
type Service struct {
	o   Options
	log *slog.Logger

	// The clock check of Tick (one tick at a time: the cron loop skips a
	// tick while the previous one runs).
	clock    workflow.ClockCheck
	jumpFrom time.Time // where the wall clock stopped being trusted, for this tick

	hooks TestHooks // failpoints, set by tests alone (testhooks.go)
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Kick == nil {
		o.Kick = func() {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AcksPerDay == 0 {
		o.AcksPerDay = 1
	}
	if o.LiftGrace == 0 {
		o.LiftGrace = time.Minute
	}
	if o.Mono == nil {
		start := time.Now()
		o.Mono = func() time.Duration { return time.Since(start) }
	}
	return &Service{o: o, log: o.Logger}
}

// Envelope is the SMTP envelope of one message.
type Envelope struct {
	From      string // "" is the null sender
	To        []string
	SMTPUTF8  bool
	SessionID string
}

// Recipient decides at RCPT time whether we take mail for rcpt.
func (s *Service) Recipient(_ context.Context, _ string, rcpt string) error {
	_, err := s.o.Roster.Route(rcpt)
	return err
}

// Handle stores one accepted message and everything it causes.
func (s *Service) Handle(ctx context.Context, env Envelope, raw []byte) (err error) {
	// A message that makes a parser panic must not crash-loop the daemon nor
	// come back forever (threats.md A6): it is kept in quarantine, the SRC is
	// told, and the sender gets 250. The log names the place, never content
	// (G6): a panic value can quote the message.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic while handling a message; quarantined", "session", env.SessionID, "size", len(raw), "stack", stackOnly())
			err = s.quarantine(env, raw)
		}
	}()
	if s.hooks.Panic != nil {
		s.hooks.Panic(raw)
	}
	return s.handle(ctx, env, raw)
}

// announceRequest handles the announce list's sub-addresses: subscription
// requests and confirmations, and the bounces of a release (daemon/announce).
func (s *Service) announceRequest(env Envelope, t lists.Target, raw []byte) error {
	if s.o.AnnounceOptions == nil {
		return &lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: "Subscribing by mail is not open on this list"}
	}
	now := s.o.Now().UTC()
	lim := s.o.Limits
	lim.AllowUTF8 = env.SMTPUTF8
	msg, err := message.Parse(raw, lim)
	if err != nil {
		return err
	}
	ann := s.o.Roster.List(lists.Announce)
	o := *s.o.AnnounceOptions
	o.Now = func() time.Time { return now }
	err = s.o.DB.Update(func(tx *bolt.Tx) error {
		if strings.HasPrefix(t.Detail, lists.DetailBounces+"-") {
			_, err := announce.HandleBounce(tx, t.Detail, raw, now, o)
			return err
		}
		out, err := announce.HandleRequest(tx, ann, t.Detail, env.From, msg, now, o)
		if err != nil {
			return err
		}
		return queue.Enqueue(tx, now, out...)
	})
	if err != nil {
		return fmt.Errorf("listd: announce request: %w", err)
	}
	s.log.Info("announce request handled", "session", env.SessionID, "kind", strings.SplitN(t.Detail, "-", 2)[0])
	s.o.Kick()
	return nil
}

// quarantine keeps a message that could not be processed, with an alert.
func (s *Service) quarantine(env Envelope, raw []byte) error {
	now := s.o.Now().UTC()
	sec := s.o.Roster.List(lists.Security)
	sum := sha256.Sum256(raw)
	return s.o.DB.Update(func(tx *bolt.Tx) error {
		if _, err := incidentdb.AddMessage(tx, incidentdb.Record{Received: now, EnvelopeFrom: env.From, Rcpts: env.To, Note: "poison"}, raw, sum); err != nil {
			return err
		}
		// The alert says nothing of the message: plaintext where the list allows it.
		rcpts, _ := s.sealRecipients(sec, s.o.Roster.WithRole(workflow.RoleSRC), false)
		out, err := s.alertTo(rcpts, &workflow.Incident{ID: "quarantine"}, workflow.AlertSRC{Template: "quarantined",
			Fields: map[string]string{"id": "quarantine", "size": fmt.Sprint(len(raw)), "at": workflow.FormatInstant(now)}}, now)
		if err != nil {
			return err
		}
		return queue.Enqueue(tx, now, out...)
	})
}

// stackOnly is the goroutine's stack: function names and lines, no values.
func stackOnly() string {
	b := debug.Stack()
	if len(b) > 4096 {
		b = b[:4096]
	}
	return string(b)
}

func (s *Service) handle(ctx context.Context, env Envelope, raw []byte) error {
	var targets []lists.Target
	for _, r := range env.To {
		t, err := s.o.Roster.Route(r)
		if err != nil {
			return err // smtpd checked at RCPT; the roster may have been reloaded since
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if t.List == lists.Announce && t.Detail != lists.DetailBounces {
			return s.announceRequest(env, t, raw)
		}
	}
	now := s.o.Now().UTC()
	// Mail to distributors@ is decrypted with that list's key, later.
	key := s.o.ListKey
	if isDistributors(targets) {
		key = nil
	}
	msg, encrypted, sig, err := s.open(raw, env, key, now)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	log := s.log.With("session", env.SessionID, "size", len(raw))

	var result string
	var incID workflow.ID
	var refusal error
	err = s.o.DB.Batch(func(tx *bolt.Tx) error {
		result, incID, refusal = "", "", nil
		if incidentdb.Seen(tx, sum) {
			// The same bytes again: a client that lost our 250 (RFC 1047).
			result = "duplicate"
			return nil
		}
		rec := incidentdb.Record{Received: now, EnvelopeFrom: env.From, Rcpts: env.To, Sender: msg.From, MessageID: msg.MessageID}
		sec := s.o.Roster.List(lists.Security)
		switch {
		case isBounce(targets):
			// DSNs to our envelope sender: archived, never forwarded (threats.md G7).
			rec.Note = "bounce"
			result = "bounce"
		case hasLoop(msg, s.o.Roster):
			// Our own mail came back (threats.md B9): keep it, send nothing.
			rec.Note = "loop"
			result = "loop"
		case isDistributors(targets):
			var err error
			result, refusal, err = s.distributorPost(tx, raw, msg, now)
			if err != nil {
				return err
			}
			rec.Note = "distributors"
			if refusal != nil {
				rec.Note = "quarantine" // kept, never redistributed (threats.md G2)
			}
		default:
			detail := ""
			for _, t := range targets {
				if t.List == lists.Security && t.Detail != "" {
					detail = t.Detail
				}
			}
			r, err := s.intake(tx, sec, env, msg, encrypted, sig, detail, now)
			if err != nil {
				return err
			}
			rec.Incident = r.Incident.ID
			incID = r.Incident.ID
			result = "new"
			if !r.New {
				result = "thread"
			}
		}
		if _, err := incidentdb.AddMessage(tx, rec, raw, sum); err != nil {
			return err
		}
		if s.hooks.BeforeCommit != nil {
			return s.hooks.BeforeCommit(tx)
		}
		return nil
	})
	if err != nil {
		var perm interface{ Permanent() bool }
		if errors.As(err, &perm) {
			return err
		}
		return fmt.Errorf("listd: store message: %w", err)
	}
	s.o.Kick()
	if refusal != nil {
		// The alert is committed; now the sender learns the refusal.
		log.Info("message refused", "result", result)
		return refusal
	}
	log.Info("message accepted", "result", result, "incident", incID)
	return nil
}

func isDistributors(ts []lists.Target) bool {
	for _, t := range ts {
		if t.List == lists.Distributors && t.Detail == "" {
			return true
		}
	}
	return false
}

func isBounce(ts []lists.Target) bool {
	for _, t := range ts {
		if t.Detail != lists.DetailBounces {
			return false
		}
	}
	return len(ts) > 0
}

func hasLoop(m *message.Message, r *lists.Roster) bool {
	for _, v := range m.XLoop {
		if r.IsOurs(v) {
			return true
		}
	}
	return false
}

// open parses a message and, when its whole top level is encrypted to the
// list key, decrypts it: what follows reads the decrypted content. Only a
// wholly encrypted message counts as encrypted (EFAIL, threats.md D2, D9); an
// encrypted part beside plaintext is handled as plaintext, parts never merged.
func (s *Service) open(raw []byte, env Envelope, key *keys.Key, now time.Time) (*message.Message, bool, signed, error) {
	lim := s.o.Limits
	lim.AllowUTF8 = env.SMTPUTF8
	msg, err := message.Parse(raw, lim)
	if err != nil {
		return nil, false, signed{}, err
	}
	if key == nil {
		return msg, false, signed{}, nil
	}
	if !keys.IsEncrypted(raw) {
		return msg, false, s.verify(raw, msg, lim), nil
	}
	dec, err := keys.Decrypt(raw, key, s.o.Members, s.keyOptions())
	switch {
	case errors.Is(err, keys.ErrNotEncrypted), errors.Is(err, keys.ErrPartiallyEncrypted):
		return msg, false, s.verify(raw, msg, lim), nil
	case err != nil:
		return nil, false, signed{}, s.cryptoRefusal(err, key)
	}
	inner, err := message.Parse(dec.Inner, lim)
	if err != nil {
		return nil, false, signed{}, err
	}
	msg.Text, msg.Attachments, msg.HTMLOmitted = inner.Text, inner.Attachments, inner.HTMLOmitted
	if inner.Subject != "" {
		msg.Subject = inner.Subject // a protected header (the outer one is often generic)
	}
	return msg, true, signed{v: dec.Signature, err: dec.SignatureErr, cipher: &dec.CiphertextHash}, nil
}

// verify checks a plaintext message's signature against the pinned member
// keys. A verified message is shown to the committee as what was signed.
func (s *Service) verify(raw []byte, msg *message.Message, lim message.Limits) signed {
	if !bytes.Contains(raw, []byte("application/pgp-signature")) && !bytes.Contains(raw, []byte("-----BEGIN PGP SIGNED MESSAGE-----")) {
		return signed{}
	}
	v, err := keys.Verify(raw, s.o.Members, s.keyOptions())
	if err != nil {
		return signed{err: err}
	}
	if inner, err := message.Parse(v.Entity, lim); err == nil {
		msg.Text, msg.Attachments, msg.HTMLOmitted = inner.Text, inner.Attachments, inner.HTMLOmitted
	}
	return signed{v: v}
}

// cryptoRefusal explains to the sender why an encrypted message was refused.
// Nothing of it is stored (threats.md D1).
func (s *Service) cryptoRefusal(err error, key *keys.Key) error {
	fpr := s.fingerprint(key)
	// RFC 3463 X.7.5: cryptographic failure.
	r := &lists.Refusal{Code: 550, Enhanced: "5.7.5"}
	switch {
	case errors.Is(err, keys.ErrNoIntegrity):
		r.Text = "The encrypted message has no integrity protection (MDC); encrypt it again with a current OpenPGP program such as GnuPG 2.2"
	case errors.Is(err, keys.ErrTampered):
		r.Text = "The encrypted message failed its integrity check: it was changed after encryption; send it again"
	case errors.Is(err, keys.ErrTooLarge):
		r = &lists.Refusal{Code: 552, Enhanced: "5.3.4", Text: "The decrypted message is too large; send large files as a link"}
	case errors.Is(err, keys.ErrWrongKey):
		r.Text = "The message is not encrypted to this list's key; encrypt it to " + fpr
	default:
		r = &lists.Refusal{Code: 554, Enhanced: "5.6.0", Text: "The encrypted message cannot be read; encrypt it to " + fpr + " as PGP/MIME or an ASCII-armored body"}
	}
	s.log.Info("encrypted message refused", "reason", err.Error())
	return r
}

func (s *Service) keyOptions() keys.Options {
	return keys.Options{Now: s.o.Now, Rand: s.o.Rand}
}

// memberKey returns a member's pinned key if it is usable now.
func (s *Service) memberKey(m lists.Member) (*keys.Key, error) {
	if m.Fingerprint == "" {
		return nil, errors.New("no pinned key")
	}
	k, ok := s.o.Members.Lookup(m.Fingerprint)
	if !ok {
		return nil, errors.New("pinned key not loaded")
	}
	if err := k.Check(s.o.Now()); err != nil {
		return nil, err
	}
	return k, nil
}

// reporterKey returns the first usable public key attached to a message
// (application/pgp-keys). Committee members' keys are pinned in the
// configuration and never replaced by attachments (threats.md D5).
func (s *Service) reporterKey(msg *message.Message, now time.Time) []byte {
	if s.o.Roster.IsCommittee(msg.From) {
		return nil
	}
	for _, a := range msg.Attachments {
		if a.Type != "application/pgp-keys" {
			continue
		}
		ks, err := keys.ReadPublicKeys(bytes.NewReader(a.Data))
		if err != nil {
			continue
		}
		for _, k := range ks {
			if k.Check(now) != nil {
				continue
			}
			if pub, err := k.ArmoredPublic(); err == nil {
				return pub
			}
		}
	}
	return nil
}
