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
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// Options configures a Service.
type Options struct {
	DB         *bolt.DB
	Roster     *lists.Roster
	Templates  *templates.Set
	Project    string // the name used in mail, e.g. "example.org"
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

	// TestPanic, when set, runs first on every message: the failpoint of the
	// poison-message tests.
	TestPanic func(raw []byte)

	// LiftGrace is how long the announcement waits after the distributors
	// were sent "embargo lifted" (threats.md G5: they hear first). Default 1 min.
	LiftGrace time.Duration

	Now    func() time.Time
	Rand   io.Reader
	Kick   func() // wakes the delivery worker after a commit
	Logger *slog.Logger

	// BeforeCommit, when set, runs at the end of each message's transaction; an
	// error rolls it back. It is the failpoint the storage-failure tests use.
	BeforeCommit func(tx *bolt.Tx) error

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
	lastMono time.Duration
	haveMono bool
	jumpFrom time.Time // the heartbeat before a jump seen by this tick
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
	if s.o.TestPanic != nil {
		s.o.TestPanic(raw)
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
		out, err := s.alertSRC(sec, &workflow.Incident{ID: "quarantine"}, "quarantined",
			map[string]string{"id": "quarantine", "size": fmt.Sprint(len(raw)), "at": workflow.FormatInstant(now)}, now, false)
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
		if s.o.BeforeCommit != nil {
			return s.o.BeforeCommit(tx)
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

// intake applies a message for security@ to its incident and queues the mail.
func (s *Service) intake(tx *bolt.Tx, sec lists.List, env Envelope, msg *message.Message, encrypted bool, sig signed, detail string, now time.Time) (workflow.Received, error) {
	in := workflow.Inbound{
		Sender:    msg.From,
		Detail:    detail,
		Subject:   msg.Subject,
		MessageID: msg.MessageID,
		Refs:      msg.Refs,
		Auto:      msg.Auto || env.From == "" || s.o.Roster.IsOurs(env.From),
	}
	var lookErr error
	look := workflow.Lookup{
		Incident: func(id workflow.ID) (*workflow.Incident, bool) {
			inc, err := incidentdb.Get(tx, id)
			if err != nil && !errors.Is(err, incidentdb.ErrNotFound) {
				lookErr = err
			}
			return inc, err == nil
		},
		MessageID: func(id string) (workflow.ID, bool) { return incidentdb.IncidentOf(tx, id) },
		IsSRC:     s.o.Roster.IsCommittee,
	}
	inc := workflow.Thread(in, look)
	if lookErr != nil {
		return workflow.Received{}, lookErr
	}
	// threats.md D3: a captured ciphertext resubmitted by someone else is no
	// new report. It joins the incident it first arrived on, flagged to the
	// SRC; its sender is not made a reporter and gets nothing back, so no
	// automatic mail can become a decryption oracle.
	var firstSeen bool
	if sig.cipher != nil {
		if first, ok, err := incidentdb.Ciphertext(tx, *sig.cipher); err != nil {
			return workflow.Received{}, err
		} else if ok {
			firstSeen = true
			if !strings.EqualFold(first.Sender, msg.From) {
				if orig, err := incidentdb.Get(tx, first.Incident); err == nil {
					inc = orig
					in.Auto = true
					msg.Text = fmt.Sprintf("[embargo] This encrypted message was first received from %s on %s; it came again from %s, "+
						"who is not made a reporter and was sent nothing (a possible decryption-oracle attempt).\n\n%s",
						first.Sender, workflow.FormatInstant(first.At), msg.From, msg.Text)
					s.log.Warn("resubmitted ciphertext flagged", "incident", orig.ID)
				}
			}
		}
	}
	if inc == nil {
		// Signed /oncall commands outside any thread are no report (tick.go).
		if took, err := s.onCallMessage(tx, sec, msg, sig, now); took || err != nil {
			return workflow.Received{}, err
		}
	}
	var id workflow.ID
	if inc == nil {
		var err error
		if id, err = incidentdb.NextID(tx, now.Year()); err != nil {
			return workflow.Received{}, err
		}
	}
	r := workflow.Receive(inc, id, in, now)
	if r.New {
		r.Incident.Commander = s.onCallNow(tx, now) // the on-call is the default incident commander
	}
	if sig.cipher != nil && !firstSeen {
		if err := incidentdb.SetCiphertext(tx, *sig.cipher, r.Incident.ID, msg.From, now); err != nil {
			return r, err
		}
	}
	var cmdMail []queue.Msg
	if !r.New {
		// Signed commands in the thread (DESIGN.md §3): applied with the
		// message, in its transaction.
		after, msgs, err := s.commands(tx, sec, r.Incident, msg, sig, now)
		if err != nil {
			return r, err
		}
		r.Incident, cmdMail = after, msgs
	}
	if r.New {
		// A random anchor: threading headers name no incident (threats.md D7).
		tok, err := s.random(12)
		if err != nil {
			return r, err
		}
		r.Incident.RootMsg = "thread." + tok + "@" + sec.Domain()
	}
	if err := incidentdb.Put(tx, &r.Incident); err != nil {
		return r, err
	}
	if strings.EqualFold(msg.From, r.Incident.Reporter) {
		if pub := s.reporterKey(msg, now); pub != nil {
			if _, err := incidentdb.SetReporterKey(tx, r.Incident.ID, pub); err != nil {
				return r, err
			}
		}
	}
	var out []queue.Msg
	for _, m := range r.Mail {
		msgs, err := s.render(tx, sec, &r.Incident, m, env, msg, encrypted, now)
		if err != nil {
			return r, err
		}
		out = append(out, msgs...)
	}
	out = append(out, cmdMail...)
	for _, q := range out {
		if err := incidentdb.IndexMessageID(tx, q.MessageID, r.Incident.ID); err != nil {
			return r, err
		}
	}
	if err := queue.Enqueue(tx, now, out...); err != nil {
		return r, err
	}
	return r, nil
}

// render turns one workflow mail action into queue rows, one per recipient.
func (s *Service) render(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, m workflow.Mail, env Envelope, msg *message.Message, encrypted bool, now time.Time) ([]queue.Msg, error) {
	switch m.To {
	case workflow.AudienceReporter:
		return s.renderAck(tx, sec, inc, m, env, msg, now)
	case workflow.AudienceSRC:
		return s.renderCopies(sec, inc, m, msg, encrypted, now)
	}
	return nil, fmt.Errorf("listd: no recipients for audience %d", m.To)
}

// renderAck answers the reporter: signed by the list key, with the key
// attached, and encrypted to the reporter's own key when one is pinned to the
// incident.
func (s *Service) renderAck(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, m workflow.Mail, env Envelope, msg *message.Message, now time.Time) ([]queue.Msg, error) {
	// RFC 3834 §4: the response goes to the envelope sender (Return-Path).
	to := env.From
	if to == "" || s.o.Roster.IsOurs(to) {
		return nil, nil
	}
	ok, err := incidentdb.AllowAck(tx, to, now, s.o.AcksPerDay)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.log.Info("acknowledgement suppressed by rate limit", "incident", inc.ID)
		return nil, nil
	}
	incAddr := sec.SubAddress(string(inc.ID))
	fpr := ""
	var attach []message.Attachment
	if s.o.ListKey != nil {
		fpr = s.o.ListKey.Fingerprint()
		pub, err := s.o.ListKey.ArmoredPublic()
		if err != nil {
			return nil, err
		}
		attach = append(attach, message.Attachment{Name: "security-key.asc", Type: "application/pgp-keys", Data: pub})
	}
	body, err := s.o.Templates.Render(m.Template, map[string]any{
		"Project":         s.o.Project,
		"ID":              inc.ID,
		"IncidentAddress": incAddr,
		"ListAddress":     sec.Address,
		"KeyFingerprint":  fpr,
	})
	if err != nil {
		return nil, err
	}
	mid, err := s.newMessageID("ack", sec.Domain())
	if err != nil {
		return nil, err
	}
	om := outMail{
		From:        s.listAddress(sec),
		To:          []*mail.Address{{Address: to}},
		ReplyTo:     &mail.Address{Address: incAddr},
		Subject:     fmt.Sprintf("[%s] Vulnerability report received", inc.ID),
		MessageID:   mid,
		InReplyTo:   msg.MessageID, // RFC 3834 §3.1.5
		Date:        now,
		AutoSubmit:  "auto-replied", // RFC 3834 §5.2
		XLoop:       sec.Address,
		Body:        body,
		Attachments: attach,
	}
	if msg.MessageID != "" {
		om.References = []string{msg.MessageID}
	}
	var data []byte
	switch {
	case s.o.ListKey == nil:
		data, err = om.plain()
	default:
		var rk *keys.Key
		if pub, ok := incidentdb.ReporterKey(tx, inc.ID); ok {
			if ks, err := keys.ReadPublicKeys(bytes.NewReader(pub)); err == nil && len(ks) > 0 && ks[0].Check(now) == nil {
				rk = ks[0]
			}
		}
		if rk != nil && strings.EqualFold(to, inc.Reporter) {
			data, err = om.sealed(s.outerHeader(sec, &om), rk, s.o.ListKey, s.keyOptions())
		} else {
			data, err = om.signed(s.o.ListKey, s.keyOptions())
		}
	}
	if err != nil {
		return nil, err
	}
	// The null sender: nothing may answer an automatic reply (RFC 3834 §3.3).
	return []queue.Msg{{From: "", To: []string{to}, Data: data, MessageID: mid, Kind: "ack", Incident: string(inc.ID)}}, nil
}

// recipient is one committee copy to make: the member and, if usable, their key.
type recipient struct {
	lists.Member
	key *keys.Key
}

// sealRecipients splits members into those who get a copy and those who do
// not. A member without a usable key gets no copy when the list requires
// encryption or the content arrived encrypted: what a reporter encrypted is
// never re-sent in plaintext.
func (s *Service) sealRecipients(sec lists.List, ms []lists.Member, sensitive bool) (send []recipient, skipped []string) {
	for _, mem := range ms {
		k, err := s.memberKey(mem)
		if err != nil && (sec.EncryptionRequired() || sensitive) {
			skipped = append(skipped, fmt.Sprintf("%s (%v)", mem.Email, err))
			continue
		}
		send = append(send, recipient{Member: mem, key: k})
	}
	return send, skipped
}

// renderCopies makes one copy per committee member (and fix-team member),
// each encrypted to that member's pinned key where one is usable.
func (s *Service) renderCopies(sec lists.List, inc *workflow.Incident, m workflow.Mail, msg *message.Message, encrypted bool, now time.Time) ([]queue.Msg, error) {
	var members []lists.Member
	for _, mem := range s.o.Roster.WithRole("src") {
		if !strings.EqualFold(mem.Email, m.Except) {
			members = append(members, mem)
		}
	}
	for _, a := range inc.FixTeam {
		if !strings.EqualFold(a, m.Except) && !containsMember(members, a) {
			mem, ok := s.o.Roster.Member(a)
			if !ok {
				mem = lists.Member{Email: a}
			}
			members = append(members, mem)
		}
	}
	rcpts, skipped := s.sealRecipients(sec, members, encrypted)
	if len(skipped) > 0 {
		s.log.Warn("committee copies withheld: no usable key", "incident", inc.ID, "count", len(skipped))
	}
	var names []string
	for _, a := range msg.Attachments {
		n := a.Name
		if n == "" {
			n = "(unnamed " + a.Type + ")"
		}
		names = append(names, n)
	}
	sender := msg.From
	if msg.FromName != "" {
		sender = msg.FromName + " <" + msg.From + ">"
	}
	date := "(none)"
	if !msg.Date.IsZero() {
		date = msg.Date.Format(time.RFC1123Z)
	}
	body, err := s.o.Templates.Render(m.Template, map[string]any{
		"ID":           inc.ID,
		"Received":     now,
		"SenderLine":   sender,
		"Subject":      msg.Subject,
		"DateLine":     date,
		"Text":         msg.Text,
		"HTMLOmitted":  msg.HTMLOmitted,
		"Attachments":  names,
		"FromReporter": strings.EqualFold(msg.From, inc.Reporter),
		"Encrypted":    encrypted,
		"Withheld":     skipped,
	})
	if err != nil {
		return nil, err
	}
	subject := msg.Subject
	if _, tagged := workflow.SubjectTag(subject); !tagged {
		subject = "[" + string(inc.ID) + "] " + subject
	}
	who := msg.FromName
	if who == "" {
		who = msg.From
	}
	var out []queue.Msg
	for _, rc := range rcpts {
		mid, err := s.newMessageID(m.Template, sec.Domain())
		if err != nil {
			return nil, err
		}
		om := outMail{
			From:        &mail.Address{Name: who + " via " + sec.Local(), Address: sec.Address},
			To:          []*mail.Address{{Name: rc.Name, Address: rc.Email}},
			ReplyTo:     &mail.Address{Name: s.o.Project + " Security " + string(inc.ID), Address: sec.SubAddress(string(inc.ID))},
			Subject:     subject,
			MessageID:   mid,
			References:  []string{inc.RootMsg},
			InReplyTo:   inc.RootMsg,
			Date:        now,
			ListID:      listID(sec),
			XLoop:       sec.Address,
			Body:        body,
			Attachments: msg.Attachments,
		}
		data, err := s.seal(sec, &om, rc.key)
		if err != nil {
			return nil, err
		}
		out = append(out, queue.Msg{From: sec.SubAddress(lists.DetailBounces), To: []string{rc.Email}, Data: data, MessageID: mid, Kind: m.Template + "-copy", Incident: string(inc.ID)})
	}
	return out, nil
}

// seal renders a committee copy: encrypted to key and signed by the list when
// key is set, else plaintext (only where the list allows it).
func (s *Service) seal(sec lists.List, om *outMail, key *keys.Key) ([]byte, error) {
	if key == nil || s.o.ListKey == nil {
		if sec.EncryptionRequired() {
			return nil, errors.New("listd: plaintext copy on a list that requires encryption")
		}
		return om.plain()
	}
	return om.sealed(s.outerHeader(sec, om), key, s.o.ListKey, s.keyOptions())
}

// outerHeader is what relays see of an encrypted message: the list address,
// the recipient, a generic subject, random identifiers. Reply-To is the plain
// list address: replies thread by In-Reply-To, and the incident ID stays
// inside (threats.md D7).
func (s *Service) outerHeader(sec lists.List, om *outMail) mail.Header {
	outer := outMail{
		From:       s.listAddress(sec),
		To:         om.To,
		ReplyTo:    &mail.Address{Address: sec.Address},
		Subject:    sec.OuterSubject,
		MessageID:  om.MessageID,
		InReplyTo:  om.InReplyTo,
		References: om.References,
		Date:       om.Date,
		AutoSubmit: om.AutoSubmit,
		ListID:     om.ListID,
		XLoop:      om.XLoop,
	}
	if om.AutoSubmit == "auto-replied" {
		// The reporter's own Message-ID is not ours to repeat in clear.
		outer.InReplyTo, outer.References = "", nil
	}
	return outer.header()
}

func (s *Service) listAddress(sec lists.List) *mail.Address {
	return &mail.Address{Name: s.o.Project + " Security Response", Address: sec.Address}
}

func listID(sec lists.List) string { return "<" + sec.Local() + "." + sec.Domain() + ">" }

func containsMember(ms []lists.Member, addr string) bool {
	for _, m := range ms {
		if strings.EqualFold(m.Email, addr) {
			return true
		}
	}
	return false
}

func (s *Service) random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		return "", fmt.Errorf("listd: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// newMessageID makes a random Message-ID: nothing in it links copies to one
// another or to the reporter's identifiers (threats.md D7).
func (s *Service) newMessageID(kind, domain string) (string, error) {
	r, err := s.random(12)
	if err != nil {
		return "", err
	}
	return kind + "." + r + "@" + domain, nil
}

// Alert queues a notice to the committee that a message could not be delivered.
// The delivery worker calls it inside the transaction that marks the row failed.
// It is never sent to the author of the triggering mail (threats.md B8), and
// failures of alerts raise no further alerts.
func (s *Service) Alert(tx *bolt.Tx, r queue.Row, reason string) error {
	sec := s.o.Roster.List(lists.Security)
	now := s.o.Now().UTC()
	body, err := s.o.Templates.Render("alert", map[string]any{
		"Row": r.ID, "Kind": r.Kind, "Incident": r.Incident, "To": r.To, "MessageID": r.MessageID,
		"Created": r.Created, "Attempts": r.Attempts, "Reason": reason,
	})
	if err != nil {
		return err
	}
	rcpts, _ := s.sealRecipients(sec, s.o.Roster.WithRole("src"), false)
	var out []queue.Msg
	for _, rc := range rcpts {
		mid, err := s.newMessageID("alert", sec.Domain())
		if err != nil {
			return err
		}
		om := outMail{
			From:       &mail.Address{Name: s.o.Project + " embargo", Address: sec.Address},
			To:         []*mail.Address{{Name: rc.Name, Address: rc.Email}},
			Subject:    "[embargo] delivery failed",
			MessageID:  mid,
			Date:       now,
			AutoSubmit: "auto-generated",
			XLoop:      sec.Address,
			Body:       body,
		}
		data, err := s.seal(sec, &om, rc.key)
		if err != nil {
			return err
		}
		out = append(out, queue.Msg{From: "", To: []string{rc.Email}, Data: data, MessageID: mid, Kind: "alert", Incident: r.Incident, NoAlert: true})
	}
	s.log.Warn("delivery failed", "row", r.ID, "kind", r.Kind, "incident", r.Incident, "reason", reason)
	return queue.Enqueue(tx, now, out...)
}
