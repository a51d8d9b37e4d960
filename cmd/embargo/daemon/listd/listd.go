// Package listd takes the mail that smtpd accepted for our lists and turns it
// into stored state and outbound copies. Each inbound message is opened once,
// before any transaction (lists/inbound: parsed, decrypted, verified, decoded,
// its command block read), into a value nothing changes; then one bbolt
// transaction holds the raw message, the incident change and every outbound
// row it causes, committed with the other messages waiting (commit.go), and
// smtpd answers 250 only after that commit (docs/design.md
// §1, docs/threat-model.md A1, A2). The decisions themselves are made by the pure cores:
// lists (who gets what) and workflow (what the message means for the incident).
package listd

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/lists/inbound"
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
	AcksPerDay int // acknowledgements per sender address in 24 h (docs/threat-model.md B8)
	// AckCap is the acknowledgements to all addresses together in 24 h
	// (ackcap.go, docs/threat-model.md B8); 0: no cap.
	AckCap int
	// NewPerSender and NewPerClient are the intake limits (limits.go): the
	// new incidents one envelope sender, and one client address, may open
	// in an hour. 0: no limit.
	NewPerSender, NewPerClient int
	// TrustedAuthservIDs are the authserv-ids whose Authentication-Results
	// fields are believed when a reporter key arrives (reporterkey.go).
	TrustedAuthservIDs []string

	// ListKey is the security list's key pair: it decrypts reports and signs
	// everything the list sends. Members holds the pinned member keys.
	ListKey *keys.Key
	Members *keys.Keyring

	// Holidays are dates that are no working day and no release slot.
	Holidays []time.Time
	// Rotation is the on-call rotation (tick.go): the on-call commands new
	// incidents and gets their triage reminder.
	Rotation workflow.Rotation

	// Quorum is [governance] quorum: the SRC signatures a roster change and
	// an irreversible command need (0 and 1: one). LazyConsensus is how long
	// a roster proposal stays open (governance.DefaultLazyConsensus if 0).
	Quorum        int
	LazyConsensus time.Duration
	// RequireEncryption is [commands] require_encryption: a member's
	// commands count only in a message encrypted to ListKey as well as
	// signed (encryption.go, docs/threat-model.md E1, E3).
	RequireEncryption bool
	// RequireBinding is [commands] require_binding: a member's signed
	// commands count only if the signed text names this list and the
	// incident or proposal (binding.go, docs/threat-model.md E3).
	RequireBinding bool

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
	// were sent "embargo lifted" (docs/threat-model.md G5: they hear first). Default 1 min.
	LiftGrace time.Duration

	Now    func() time.Time
	Rand   io.Reader
	Kick   func() // wakes the delivery worker after a commit
	Logger *slog.Logger

	// Observe, when set, is told how long each "command" message and each
	// "release" took to handle (the daemon's metrics).
	Observe func(event string, took time.Duration)
	// AckHeld, when set, is told of each acknowledgement an
	// acknowledgement limit held back (AckLimitSender or AckLimitGlobal),
	// once its message is committed (the daemon's metrics).
	AckHeld func(limit string)
	// Bounced, when set, is told of each bounce at a private list's
	// per-copy address (verp.go): the kind of the copy ("unknown" when no
	// copy matches) and the result (BounceAlerted, …), once its message is
	// committed (the daemon's metrics).
	Bounced func(kind, result string)
	// DistributorWarning, when set, is told of each warning to a member
	// whose post to distributors@ was refused (distwarn.go): WarningSent
	// or WarningHeld, once its message is committed (the daemon's metrics).
	DistributorWarning func(result string)

	// Attempts, when set, counts the deaths of the process while a message
	// was processed, and keeps a message that killed it PoisonDeaths times
	// in quarantine (attempts.go, docs/threat-model.md A6); likewise for
	// each incident's tick, which is skipped after PoisonDeaths (work.go).
	// The daemon opens it at start and gives Attempts.Rows to the queue;
	// nil: no such guard (tests, benchmarks of the service).
	Attempts *Attempts
}

// Service handles mail for the lists.
//
// What a reload may change (the roster, the members' keys, the holidays,
// the on-call rotation, the channels, the templates, the quorum: Settings)
// lives in an immutable snapshot behind an atomic pointer. Every entry point
// (Handle, Recipient, Tick, Alert, AlertRelease, AdvisoryText) works on a
// view: a copy of the Service whose Options hold one snapshot, read once, so
// that a message is handled with one roster and one keyring from its first
// line to its commit, whatever a SIGHUP or a roster change by mail swaps in
// meanwhile (live.go).
type Service struct {
	o    Options
	log  *slog.Logger
	snap *rosterSnapshot // the snapshot this view reads; nil on the base Service
	sh   *shared
}

// shared is what every view of one Service shares.
type shared struct {
	base Options // as given to New
	live atomic.Pointer[rosterSnapshot]
	mu   sync.Mutex // serialises rebuilding the snapshot (live.go)

	// The clock check of Tick (one tick at a time: the cron loop skips a
	// tick while the previous one runs).
	clock    workflow.ClockCheck
	jumpFrom time.Time // where the wall clock stopped being trusted, for this tick

	hooks TestHooks // failpoints, set by tests alone (testhooks.go)

	// writer commits every write transaction of the service in groups
	// (commit.go); limits keeps the intake limits' alert state (limits.go).
	writer *committer
	limits limitState

	// The security list's armored public key (listKeyArmored).
	pubOnce sync.Once
	pub     []byte
	pubErr  error
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
	s := &Service{o: o, log: o.Logger, sh: &shared{base: o, writer: &committer{db: o.DB, maxGroup: defaultMaxGroup}}}
	s.sh.live.Store(s.initial())
	return s
}

// Envelope is the SMTP envelope of one message.
type Envelope struct {
	From      string // "" is the null sender
	To        []string
	SMTPUTF8  bool
	SessionID string
	// Client is the SMTP client's IP address, which the per-client intake
	// limit counts; "" when it says nothing (LMTP: the MTA in front).
	Client string
	// Auth is embargo's own sender authentication of the message, made at
	// arrival ([intake] verify = "own", daemon/senderauth); nil when off
	// and over LMTP.
	Auth *SenderAuth
}

// SenderAuth is what embargo's own checks found about a message's sender.
type SenderAuth struct {
	// Field is our Authentication-Results field (RFC 8601), CRLF-ended,
	// that the archived copy of the message starts with. The duplicate
	// check and everything else read the message as received.
	Field string
	// FromDomain is the domain of the message's one From address, and How
	// how it was authenticated ("" when it was not), in the words of
	// authenticatedFrom.
	FromDomain, How string
}

// Handle stores one accepted message and everything it causes.
func (s *Service) Handle(ctx context.Context, env Envelope, raw []byte) (err error) {
	s = s.current() // one roster and one keyring for the whole message
	sum := sha256.Sum256(raw)
	// A message that killed the process before (a fatal error, the OOM
	// killer) is not processed again once it has PoisonDeaths; otherwise
	// it is in the in-flight file until it is done (attempts.go,
	// docs/threat-model.md A6). The deferred end runs last, after the
	// quarantine of a recovered panic. A suspect that cannot be alone in
	// time is answered 451 and comes back.
	if a := s.o.Attempts; a != nil {
		t, poisoned, err := a.begin(ctx, sum, s.o.Now())
		switch {
		case poisoned:
			return s.quarantineKiller(env, raw, sum)
		case err != nil:
			s.log.Warn("a suspect message could not be processed alone in time; answered 451", "session", env.SessionID, "sha256", hex.EncodeToString(sum[:]), "err", err)
			return err
		}
		defer s.attemptEnded(t)
	}
	// A message that makes a parser panic must not crash-loop the daemon nor
	// come back forever (docs/threat-model.md A6): it is kept in quarantine, the SRC is
	// told, and the sender gets 250. The log names the place, never content
	// (G6): a panic value can quote the message.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic while handling a message; quarantined", "session", env.SessionID, "size", len(raw), "stack", stackOnly())
			err = s.quarantine(env, raw, sum)
		}
	}()
	if s.sh.hooks.Panic != nil {
		s.sh.hooks.Panic(raw)
	}
	return s.handle(ctx, env, raw, sum)
}

// announceRequests handles the announce list's sub-addresses among the
// recipients, inside the message's transaction: subscription requests and
// confirmations, and the bounces of a release (daemon/announce). They read
// the outer header facts only (the requester): nothing decrypted reaches
// the announce list's automatic mail.
func (s *Service) announceRequests(tx *bolt.Tx, d *delivery) error {
	if s.o.AnnounceOptions == nil {
		return nil // refused at RCPT (Recipient) and before the transaction (handle)
	}
	now := d.now
	ann := s.o.Roster.List(lists.Announce)
	o := *s.o.AnnounceOptions
	o.Now = func() time.Time { return now }
	o.Render = s.o.Templates.Render // the templates in force (a reload may change them)
	for _, t := range d.targets {
		if t.List != lists.Announce || t.Detail == lists.DetailBounces {
			continue
		}
		if strings.HasPrefix(t.Detail, lists.DetailBounces+"-") {
			if _, err := announce.HandleBounce(tx, t.Detail, d.raw, now, o); err != nil {
				return fmt.Errorf("listd: announce bounce: %w", err)
			}
			continue
		}
		var hdr *message.Message
		if d.msg != nil {
			hdr = d.msg.Outer()
		}
		// A fresh copy for each run: a transaction may run again.
		out, err := announce.HandleRequest(tx, ann, t.Detail, d.env.From, hdr, now, o)
		if err != nil {
			return fmt.Errorf("listd: announce request: %w", err)
		}
		if err := s.enqueue(tx, now, out...); err != nil {
			return err
		}
		s.log.Info("announce request handled", "session", d.env.SessionID, "kind", strings.SplitN(t.Detail, "-", 2)[0])
	}
	return nil
}

// quarantine keeps a message that could not be processed, with an alert.
func (s *Service) quarantine(env Envelope, raw []byte, sum [32]byte) error {
	now := s.o.Now().UTC()
	return s.sh.writer.do(func(tx *bolt.Tx) error {
		_, err := s.keepPoison(tx, env, raw, sum, now, "quarantined", nil)
		return err
	})
}

// keepPoison archives a message with NotePoison and queues the SRC's alert
// (template, with fields beside the common ones) in tx, and returns its
// archive number. The alert says nothing of the message but that number
// (for `embargo incident quarantine`) and what fields add: plaintext where
// the list allows it (docs/threat-model.md A6).
func (s *Service) keepPoison(tx *bolt.Tx, env Envelope, raw []byte, sum [32]byte, now time.Time, template string, fields map[string]string) (uint64, error) {
	rec, err := incidentdb.AddMessage(tx, incidentdb.Record{Received: now, EnvelopeFrom: env.From, Rcpts: env.To, Note: NotePoison}, raw, sum)
	if err != nil {
		return 0, err
	}
	f := map[string]string{"id": "quarantine", "size": fmt.Sprint(len(raw)), "at": workflow.FormatInstant(now), "message": fmt.Sprint(rec.Seq)}
	maps.Copy(f, fields)
	sec := s.o.Roster.List(lists.Security)
	rcpts, _ := s.sealRecipients(sec, s.o.Roster.WithRole(workflow.RoleSRC), false)
	out, err := s.alertTo(rcpts, &workflow.Incident{ID: "quarantine"}, workflow.AlertSRC{Template: template, Fields: f}, now)
	if err != nil {
		return 0, err
	}
	return rec.Seq, s.enqueue(tx, now, out...)
}

// stackOnly is the goroutine's stack: function names and lines, no values.
func stackOnly() string {
	b := debug.Stack()
	if len(b) > 4096 {
		b = b[:4096]
	}
	return string(b)
}

// delivery is one inbound message, opened before any transaction
// (docs/design.md §1): the envelope, where it was routed, the message
// opened once by lists/inbound, and the time of receipt. Nothing changes it
// afterwards: the transaction reads it and may run twice.
type delivery struct {
	env     Envelope
	targets []lists.Target
	msg     *inbound.Message
	// openErr is why the message could not be opened (undecryptable,
	// tampered, unreadable content) when its refusal waits for the
	// transaction: a post to distributors@ is checked for outside
	// recipients first, and the SRC alerted (docs/threat-model.md G1).
	// msg then holds the header facts alone, or is nil when the header
	// itself could not be read.
	openErr error
	raw     []byte
	sum     [32]byte // of raw
	// archived is what the archive keeps: raw, after our own
	// Authentication-Results field when we checked the sender
	// (Envelope.Auth); archivedSum its SHA-256.
	archived    []byte
	archivedSum [32]byte
	seen        [32]byte // of raw and the recipients: the duplicate key (seenKey)
	now         time.Time
	// keys are the public keys attached to the message, checked at now
	// (governance.go), and appSigned whether an application is signed by
	// one of them.
	keys      []governance.KeyVerdict
	appSigned bool
}

// outcome is what the message's transaction decided.
type outcome struct {
	result  string
	incID   workflow.ID
	refusal error         // told to the sender after the commit
	roster  bool          // the roster changed by mail: rebuild the snapshot after the commit
	acks    ackTally      // acknowledgements held back, counted after the commit
	warns   warnTally     // warnings to distributors@ posters, counted after the commit
	bounces []bounceCount // bounces of the private lists' copies, counted after the commit
}

func (s *Service) handle(_ context.Context, env Envelope, raw []byte, sum [32]byte) error {
	d, err := s.openOnce(env, raw, sum)
	if err != nil {
		return err
	}
	log := s.log.With("session", env.SessionID, "size", len(raw))
	if err := s.precheckLimits(d); err != nil {
		lr, _ := asLimitRefusal(err)
		s.limitRefused(lr, d)
		return err
	}
	if s.sh.hooks.Opened != nil {
		s.sh.hooks.Opened(raw)
	}
	var out outcome
	err = s.sh.writer.do(func(tx *bolt.Tx) error {
		var err error
		out, err = s.store(tx, d)
		return err
	})
	if err != nil {
		var perm interface{ Permanent() bool }
		var pe *panicError
		switch {
		case errors.As(err, &pe):
			// As Handle's own recover does: keep it in quarantine.
			log.Error("panic while storing a message; quarantined", "stack", pe.stack)
			return s.quarantine(env, raw, sum)
		case isLimit(err):
			lr, _ := asLimitRefusal(err)
			s.limitRefused(lr, d)
			return lr
		case errors.As(err, &perm):
			return err
		}
		return fmt.Errorf("listd: store message: %w", err)
	}
	s.countAcks(out.acks)
	s.countWarnings(out.warns)
	if s.o.Bounced != nil {
		for _, c := range out.bounces {
			s.o.Bounced(c.kind, c.result)
		}
	}
	if out.roster {
		s.refresh() // before the mail goes out, for the next message
	}
	s.o.Kick()
	if out.refusal != nil {
		// The alert is committed; now the sender learns the refusal.
		log.Info("message refused", "result", out.result)
		return out.refusal
	}
	log.Info("message accepted", "result", out.result, "incident", out.incID, "recipients", len(d.targets))
	return nil
}

// openOnce routes the recipients and opens the message once, with the key of
// the list it was sent to: parsed, decrypted, verified, decoded and its
// command block read (lists/inbound). Everything after reads the result.
// sum is the SHA-256 of raw, which Handle computes once (a 10 MB report
// takes milliseconds to hash).
func (s *Service) openOnce(env Envelope, raw []byte, sum [32]byte) (*delivery, error) {
	d := &delivery{env: env, now: s.o.Now().UTC(), raw: raw, sum: sum, archived: raw, archivedSum: sum}
	if a := env.Auth; a != nil && a.Field != "" {
		d.archived = append([]byte(a.Field), raw...)
		d.archivedSum = sha256.Sum256(d.archived)
	}
	d.seen = seenKey(d.sum, env.To)
	for _, r := range env.To {
		t, err := s.o.Roster.Route(r)
		if err != nil {
			return nil, err // smtpd checked at RCPT; the roster may have been reloaded since
		}
		d.targets = append(d.targets, t)
	}
	// Recipients that cannot be handled together were split at RCPT
	// (recipients.go); a caller that skipped that check is refused whole.
	if err := s.checkTogether(d.targets); err != nil {
		return nil, err
	}
	if has(d.targets, kindAnnounce) && s.o.AnnounceOptions == nil {
		return nil, &lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: "Subscribing by mail is not open on this list"}
	}
	// Mail to distributors@ is decrypted with that list's key; mail for
	// bounce addresses and announce requests alone is never decrypted.
	key := s.o.ListKey
	switch {
	case isDistributors(d.targets):
		key = s.o.DistributorsKey
	case !has(d.targets, kindIntake, kindProposal, kindApply):
		key = nil
	}
	lim := s.o.Limits
	lim.AllowUTF8 = env.SMTPUTF8
	ko := s.keyOptions()
	now := d.now
	ko.Now = func() time.Time { return now } // one instant for the whole message
	m, err := inbound.Open(raw, inbound.Options{Limits: lim, ListKey: key, Members: s.o.Members, Keys: ko})
	switch {
	case err == nil:
	case isDistributors(d.targets):
		// Refused in the transaction, after the recipient check, with an
		// alert; m is nil when the header itself could not be read.
		d.openErr = err
	default:
		var r *lists.Refusal
		if errors.As(err, &r) {
			return nil, err
		}
		return nil, s.cryptoRefusal(err, key)
	}
	d.msg = m
	if d.openErr == nil && has(d.targets, kindIntake, kindProposal, kindApply) {
		d.keys, d.appSigned = s.attachedKeys(m, key, ko, now, isApply(d.targets))
	}
	return d, nil
}

// store is the message's transaction: the raw message, the incident change
// and every outbound row it causes. It is safe to run twice: the group
// commit runs it again when another message of its group fails (commit.go),
// so store reads d and the transaction only and changes nothing but the
// transaction.
func (s *Service) store(tx *bolt.Tx, d *delivery) (outcome, error) {
	var out outcome
	if incidentdb.Seen(tx, d.seen) {
		// The same bytes for the same recipients again: a client that lost
		// our 250 (RFC 1047).
		return outcome{result: "duplicate"}, nil
	}
	// Announce requests and release bounces share the transaction with
	// whatever else the message is (recipients.go).
	if err := s.announceRequests(tx, d); err != nil {
		return out, err
	}
	// Bounces of the private lists' copies (verp.go) alert the SRC; the
	// message is archived below as every bounce is.
	if err := s.privateBounces(tx, d, &out.bounces); err != nil {
		return out, err
	}
	m := d.msg
	rec := incidentdb.Record{Received: d.now, EnvelopeFrom: d.env.From, Rcpts: d.env.To}
	if m != nil {
		rec.Sender, rec.MessageID = m.From(), m.MessageID()
	}
	switch {
	case !has(d.targets, kindIntake, kindProposal, kindApply, kindDistributors):
		if !hasPlainBounce(d.targets) {
			// Announce requests and release bounces alone: the announce
			// list keeps what it needs, the message is not archived.
			out.result = "announce"
			return out, incidentdb.MarkSeen(tx, d.seen)
		}
		// DSNs to our envelope sender: archived, never forwarded (docs/threat-model.md G7).
		rec.Note, out.result = "bounce", "bounce"
	case m != nil && hasLoop(m, s.o.Roster):
		// Our own mail came back (docs/threat-model.md B9): keep it, send nothing.
		rec.Note, out.result = "loop", "loop"
	case isDistributors(d.targets):
		var err error
		out.result, out.refusal, err = s.distributorPost(tx, d, &out.warns, &out.incID)
		if err != nil {
			return out, err
		}
		rec.Note, rec.Incident = "distributors", out.incID
		if out.refusal != nil {
			rec.Note = "quarantine" // kept, never redistributed (docs/threat-model.md G2)
		}
	case isApply(d.targets):
		var g govOutcome
		var err error
		out.result, rec.Incident, g, err = s.application(tx, d, &out.acks)
		if err != nil {
			return out, err
		}
		out.incID, out.roster, rec.Note = rec.Incident, g.roster, "application"
	default:
		detail := intakeDetail(d.targets)
		if id, ok := proposalOf(tx, m, detail); ok {
			took, g, err := s.proposalThread(tx, d, id)
			if err != nil {
				return out, err
			}
			if took {
				rec.Incident, out.incID, out.result, out.roster = workflow.ID(id), workflow.ID(id), "proposal thread", g.roster
				break
			}
		}
		// A distributor's signed answer to a notice that reached them
		// (answers.go); anything else of theirs is intake's, as anybody's.
		if id, took, err := s.distributorThread(tx, d, detail); err != nil {
			return out, err
		} else if took {
			rec.Incident, out.incID, out.result = id, id, "distributor answer"
			break
		}
		r, roster, err := s.intake(tx, d, detail, &out.acks)
		if err != nil {
			return out, err
		}
		rec.Incident, out.incID, out.roster = r.Incident.ID, r.Incident.ID, roster
		out.result = "new"
		switch {
		case r.Incident.ID == "":
			out.result = "commands"
		case !r.New:
			out.result = "thread"
		}
	}
	if _, err := incidentdb.AddMessage(tx, rec, d.archived, d.archivedSum); err != nil {
		return out, err
	}
	// A refused message kept in quarantine is not "seen": the same bytes
	// again must be refused again, not taken for a duplicate.
	if rec.Note != "quarantine" {
		if err := incidentdb.MarkSeen(tx, d.seen); err != nil {
			return out, err
		}
	}
	if s.sh.hooks.BeforeCommit != nil {
		return out, s.sh.hooks.BeforeCommit(tx)
	}
	return out, nil
}

// intakeDetail is the incident sub-address among the recipients
// (security+SEC-…@), "" for none.
func intakeDetail(ts []lists.Target) string {
	detail := ""
	for _, t := range ts {
		if t.List == lists.Security && t.Detail != "" && kindOf(t) != kindBounce {
			detail = t.Detail
		}
	}
	return detail
}

func isLimit(err error) bool { _, ok := asLimitRefusal(err); return ok }

func isDistributors(ts []lists.Target) bool {
	for _, t := range ts {
		if t.List == lists.Distributors && t.Detail == "" {
			return true
		}
	}
	return false
}

// hasPlainBounce reports whether a recipient is a list's own bounce
// address, plain or a private list's per copy (verp.go), not a release's,
// announce+bounces-…@, which daemon/announce keeps.
func hasPlainBounce(ts []lists.Target) bool {
	for _, t := range ts {
		if t.Detail == lists.DetailBounces || (t.List != lists.Announce && lists.IsVERP(t.Detail)) {
			return true
		}
	}
	return false
}

func hasLoop(m *inbound.Message, r *lists.Roster) bool {
	for _, v := range m.XLoop() {
		if r.IsOurs(v) {
			return true
		}
	}
	return false
}

// cryptoRefusal explains to the sender why an encrypted message was refused.
// Nothing of it is stored (docs/threat-model.md D1).
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
