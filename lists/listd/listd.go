// Package listd takes the mail that smtpd accepted for our lists and turns it
// into stored state and outbound copies. For each inbound message it runs one
// bbolt transaction holding the raw message, the incident change and every
// outbound row it causes; smtpd answers 250 only after that commit (DESIGN.md §1,
// docs/threats.md A1, A2). The decisions themselves are made by the pure cores:
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
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/smtpd/message"
	"github.com/embargo-project/embargo/smtpd/queue"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
	"github.com/embargo-project/embargo/workflow/incidentdb"
)

// Options configures a Service.
type Options struct {
	DB         *bolt.DB
	Roster     *lists.Roster
	Templates  *templates.Set
	Project    string // the name used in mail, e.g. "example.org"
	Limits     message.Limits
	AcksPerDay int // acknowledgements per sender address in 24 h (threats.md B8)

	Now    func() time.Time
	Rand   io.Reader
	Kick   func() // wakes the delivery worker after a commit
	Logger *slog.Logger

	// BeforeCommit, when set, runs at the end of each message's transaction; an
	// error rolls it back. It is the failpoint the storage-failure tests use.
	BeforeCommit func(tx *bolt.Tx) error
}

// Service handles mail for the lists.
type Service struct {
	o   Options
	log *slog.Logger
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
	t, err := s.o.Roster.Route(rcpt)
	if err != nil {
		return err
	}
	if t.List == lists.Distributors && t.Detail == "" {
		// Posting to the embargo list arrives with its leak guards (issue 5);
		// until then nothing may reach distributors through it.
		return &lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: "The distributors list does not take posts yet; write to " + s.o.Roster.List(lists.Security).Address}
	}
	return nil
}

// Handle stores one accepted message and everything it causes.
func (s *Service) Handle(ctx context.Context, env Envelope, raw []byte) error {
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
			return &lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: "Subscribing by mail is not open yet on this list"}
		}
	}
	lim := s.o.Limits
	lim.AllowUTF8 = env.SMTPUTF8
	msg, err := message.Parse(raw, lim)
	if err != nil {
		return err
	}
	now := s.o.Now().UTC()
	sum := sha256.Sum256(raw)
	log := s.log.With("session", env.SessionID, "size", len(raw))

	var result string
	var incID workflow.ID
	err = s.o.DB.Batch(func(tx *bolt.Tx) error {
		result, incID = "", ""
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
		default:
			detail := ""
			for _, t := range targets {
				if t.List == lists.Security && t.Detail != "" {
					detail = t.Detail
				}
			}
			r, err := s.intake(tx, sec, env, msg, detail, now)
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
	log.Info("message accepted", "result", result, "incident", incID)
	s.o.Kick()
	return nil
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

// intake applies a message for security@ to its incident and queues the mail.
func (s *Service) intake(tx *bolt.Tx, sec lists.List, env Envelope, msg *message.Message, detail string, now time.Time) (workflow.Received, error) {
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
	var id workflow.ID
	if inc == nil {
		var err error
		if id, err = incidentdb.NextID(tx, now.Year()); err != nil {
			return workflow.Received{}, err
		}
	}
	r := workflow.Receive(inc, id, in, now)
	if err := incidentdb.Put(tx, &r.Incident); err != nil {
		return r, err
	}
	var out []queue.Msg
	for _, m := range r.Mail {
		msgs, err := s.render(tx, sec, &r.Incident, m, env, msg, now)
		if err != nil {
			return r, err
		}
		out = append(out, msgs...)
	}
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
func (s *Service) render(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, m workflow.Mail, env Envelope, msg *message.Message, now time.Time) ([]queue.Msg, error) {
	listAddr := &mail.Address{Name: s.o.Project + " Security Response", Address: sec.Address}
	incAddr := &mail.Address{Name: s.o.Project + " Security " + string(inc.ID), Address: sec.SubAddress(string(inc.ID))}
	threadRoot := string(inc.ID) + ".thread@" + sec.Domain()
	bounce := sec.SubAddress(lists.DetailBounces)

	switch m.To {
	case workflow.AudienceReporter:
		// RFC 3834 §4: the response goes to the envelope sender (Return-Path).
		to := env.From
		if to == "" || s.o.Roster.IsOurs(to) {
			return nil, nil
		}
		ok, err := incidentdb.AllowAck(tx, to, now, s.o.AcksPerDay)
		if err != nil || !ok {
			if !ok {
				s.log.Info("acknowledgement suppressed by rate limit", "incident", inc.ID)
			}
			return nil, err
		}
		body, err := s.o.Templates.Render(m.Template, map[string]any{
			"Project":         s.o.Project,
			"ID":              inc.ID,
			"IncidentAddress": incAddr.Address,
			"ListAddress":     sec.Address,
			"KeyFingerprint":  "",
		})
		if err != nil {
			return nil, err
		}
		mid, err := s.newMessageID("ack", sec.Domain())
		if err != nil {
			return nil, err
		}
		om := outMail{
			From:       listAddr,
			To:         []*mail.Address{{Address: to}},
			ReplyTo:    incAddr,
			Subject:    fmt.Sprintf("[%s] Vulnerability report received", inc.ID),
			MessageID:  mid,
			InReplyTo:  msg.MessageID, // RFC 3834 §3.1.5
			Date:       now,
			AutoSubmit: "auto-replied", // RFC 3834 §5.2
			XLoop:      sec.Address,
			Body:       body,
		}
		if msg.MessageID != "" {
			om.References = []string{msg.MessageID}
		}
		data, err := om.bytes()
		if err != nil {
			return nil, err
		}
		// The null sender: nothing may answer an automatic reply (RFC 3834 §3.3).
		return []queue.Msg{{From: "", To: []string{to}, Data: data, MessageID: om.MessageID, Kind: "ack", Incident: string(inc.ID)}}, nil

	case workflow.AudienceSRC:
		var rcpts []lists.Member
		for _, mem := range s.o.Roster.WithRole("src") {
			if !strings.EqualFold(mem.Email, m.Except) {
				rcpts = append(rcpts, mem)
			}
		}
		for _, a := range inc.FixTeam {
			if !strings.EqualFold(a, m.Except) && !containsMember(rcpts, a) {
				rcpts = append(rcpts, lists.Member{Email: a})
			}
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
		for _, mem := range rcpts {
			mid, err := s.newMessageID(m.Template, sec.Domain())
			if err != nil {
				return nil, err
			}
			om := outMail{
				From:        &mail.Address{Name: who + " via " + sec.Local(), Address: sec.Address},
				To:          []*mail.Address{{Name: mem.Name, Address: mem.Email}},
				ReplyTo:     incAddr,
				Subject:     subject,
				MessageID:   mid,
				References:  []string{threadRoot},
				InReplyTo:   threadRoot,
				Date:        now,
				ListID:      "<" + sec.Local() + "." + sec.Domain() + ">",
				XLoop:       sec.Address,
				Body:        body,
				Attachments: msg.Attachments,
			}
			data, err := om.bytes()
			if err != nil {
				return nil, err
			}
			out = append(out, queue.Msg{From: bounce, To: []string{mem.Email}, Data: data, MessageID: om.MessageID, Kind: m.Template + "-copy", Incident: string(inc.ID)})
		}
		return out, nil
	}
	return nil, fmt.Errorf("listd: no recipients for audience %d", m.To)
}

func containsMember(ms []lists.Member, addr string) bool {
	for _, m := range ms {
		if strings.EqualFold(m.Email, addr) {
			return true
		}
	}
	return false
}

// newMessageID makes a random Message-ID: nothing in it links copies to one
// another or to the reporter's identifiers (threats.md D7).
func (s *Service) newMessageID(kind, domain string) (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(s.o.Rand, b[:]); err != nil {
		return "", fmt.Errorf("listd: message id: %w", err)
	}
	return kind + "." + hex.EncodeToString(b[:]) + "@" + domain, nil
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
	var out []queue.Msg
	for _, mem := range s.o.Roster.WithRole("src") {
		mid, err := s.newMessageID("alert", sec.Domain())
		if err != nil {
			return err
		}
		om := outMail{
			From:       &mail.Address{Name: s.o.Project + " embargo", Address: sec.Address},
			To:         []*mail.Address{{Name: mem.Name, Address: mem.Email}},
			Subject:    "[embargo] delivery failed",
			MessageID:  mid,
			Date:       now,
			AutoSubmit: "auto-generated",
			XLoop:      sec.Address,
			Body:       body,
		}
		data, err := om.bytes()
		if err != nil {
			return err
		}
		out = append(out, queue.Msg{From: "", To: []string{mem.Email}, Data: data, MessageID: mid, Kind: "alert", Incident: r.Incident, NoAlert: true})
	}
	s.log.Warn("delivery failed", "row", r.ID, "kind", r.Kind, "incident", r.Incident, "reason", reason)
	return queue.Enqueue(tx, now, out...)
}
