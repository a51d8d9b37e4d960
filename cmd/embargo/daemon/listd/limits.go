package listd

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// The intake limits (docs/threat-model.md B7, B8): how many new incidents
// one envelope sender, and one client address, may open in LimitWindow
// (Options.NewPerSender, Options.NewPerClient; [intake]
// new_incidents_per_sender_per_hour and new_incidents_per_client_per_hour).
// Beyond them a report is refused with 450 4.7.1: the sender's MTA tries
// again later, and gets through as the count goes down; nothing is stored.
//
// Only new incidents count and only they are refused: mail that threads into
// an incident (its reporter's, the committee's), commands, distributor posts
// and announce requests never are, nor is a report from a committee member
// (signed with their pinned key, or From their address with an aligned pass
// of a trusted MTA). The decision is made where the incident would be
// opened, in the message's transaction (intake); a read-only check before
// the transaction refuses the bulk of a flood without a write or a place in
// the group commit. Whether a message opens an incident depends on its
// header (References, the incident address), so the answer comes at the end
// of DATA.
//
// The SRC is told once per limit and LimitWindow, not once per refusal:
// /metrics counts every refusal (embargo_intake_refused_total by reason).

// LimitWindow is the period the intake limits count over.
const LimitWindow = time.Hour

// The reasons of a LimitRefusal, as /metrics labels them.
const (
	LimitSender = "sender"
	LimitClient = "client"
)

// LimitRefusal is a report refused by an intake limit: 450 4.7.1. Its text
// is fixed; Who (the sender or client address) is for the log and the
// SRC's alert, never the reply.
type LimitRefusal struct {
	Reason string // LimitSender or LimitClient
	Who    string
	Limit  int
	Opened int       // new incidents Who opened in the window
	Until  time.Time // when the count goes down by one
}

func (e *LimitRefusal) Error() string {
	if e.Reason == LimitClient {
		return "Too many new reports from this client address in the last hour; try again later"
	}
	return "Too many new reports from this sender in the last hour; try again later"
}

// SMTPStatus is 450 4.7.1 (RFC 5321 §4.2.2, RFC 3463 X.7.1): refused for
// now, by policy.
func (e *LimitRefusal) SMTPStatus() (int, string) { return 450, "4.7.1" }

// Permanent is false: the same report later gets through.
func (e *LimitRefusal) Permanent() bool { return false }

// limitState remembers when the SRC was last told of each limit, so that a
// flood costs no transaction per refusal to find out; the store keeps the
// same instant (metaLimitAlert) for after a restart.
type limitState struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const metaLimitAlert = "limit_alert/" // + reason: RFC 3339 instant of the last alert

// limited reports whether the intake limits are on.
func (s *Service) limited() bool { return s.o.NewPerSender > 0 || s.o.NewPerClient > 0 }

// precheckLimits refuses, before the transaction and without writing, a
// message that certainly opens a new incident beyond a limit. When in doubt
// it lets the message through: the transaction decides (admitNew).
func (s *Service) precheckLimits(d *delivery) error {
	if !s.limited() || d.msg == nil || d.openErr != nil || s.exempt(d) {
		return nil
	}
	var refusal error
	err := s.o.DB.View(func(tx *bolt.Tx) error {
		if s.wouldOpen(tx, d) {
			refusal = s.overLimit(tx, d)
		}
		return nil
	})
	if err != nil {
		return nil // the transaction will meet the same trouble, and answer it
	}
	return refusal
}

// wouldOpen reports whether d certainly opens a new incident, as store
// would decide (read-only: false whenever store might decide otherwise).
func (s *Service) wouldOpen(tx *bolt.Tx, d *delivery) bool {
	m := d.msg
	if !has(d.targets, kindIntake) || has(d.targets, kindProposal, kindApply, kindDistributors) ||
		incidentdb.Seen(tx, d.seen) || hasLoop(m, s.o.Roster) {
		return false
	}
	detail := intakeDetail(d.targets)
	if _, ok := proposalOf(tx, m, detail); ok {
		return false
	}
	if cmds, err := m.Commands(); err != nil || len(cmds) > 0 {
		return false // roster or on-call commands outside a thread are no report
	}
	if sum, ok := m.Protection().CiphertextHash(); ok {
		if _, seen, _ := incidentdb.Ciphertext(tx, sum); seen {
			return false // a resubmitted ciphertext joins its first incident
		}
	}
	inc, err := s.thread(tx, d, detail)
	return err == nil && inc == nil
}

// admitNew is the limits' decision where a new incident is opened, in the
// message's transaction: a refusal (the transaction then rolls back), or
// the incident counted against its sender and client.
func (s *Service) admitNew(tx *bolt.Tx, d *delivery) error {
	if !s.limited() || s.exempt(d) {
		return nil
	}
	if err := s.overLimit(tx, d); err != nil {
		return err
	}
	since := d.now.Add(-LimitWindow)
	if s.o.NewPerSender > 0 {
		if err := incidentdb.CountOpened(tx, incidentdb.LimitKey(LimitSender, senderKey(d.env.From)), d.now, since, s.o.NewPerSender); err != nil {
			return err
		}
	}
	if s.o.NewPerClient > 0 && d.env.Client != "" {
		return incidentdb.CountOpened(tx, incidentdb.LimitKey(LimitClient, d.env.Client), d.now, since, s.o.NewPerClient)
	}
	return nil
}

// overLimit returns the LimitRefusal for a new incident from d, or nil.
func (s *Service) overLimit(tx *bolt.Tx, d *delivery) error {
	since := d.now.Add(-LimitWindow)
	check := func(reason, who string, limit int) error {
		if limit <= 0 || who == "" {
			return nil
		}
		n, oldest := incidentdb.OpenedSince(tx, incidentdb.LimitKey(reason, who), since)
		if n < limit {
			return nil
		}
		return &LimitRefusal{Reason: reason, Who: who, Limit: limit, Opened: n, Until: oldest.Add(LimitWindow)}
	}
	if err := check(LimitSender, senderKey(d.env.From), s.o.NewPerSender); err != nil {
		return err
	}
	return check(LimitClient, d.env.Client, s.o.NewPerClient)
}

// senderKey is what the per-sender limit counts: the envelope sender, lower
// case; the null sender counts as one sender.
func senderKey(from string) string {
	if from == "" {
		return "<>"
	}
	return strings.ToLower(from)
}

// exempt reports whether a report comes from a committee member, whom no
// limit applies to: signed by a pinned key of a member with role src or
// associate, or From such a member's address with an aligned DKIM, SPF or
// DMARC pass of a trusted MTA or of embargo's own checks (authres.go). A
// From address alone proves nothing: a flood could carry any.
func (s *Service) exempt(d *delivery) bool {
	m := d.msg
	if v := m.Signature(); v.OK() {
		for _, mem := range s.o.Roster.Members {
			if strings.EqualFold(mem.Fingerprint, v.Fingerprint) && (mem.Has(workflow.RoleSRC) || mem.Has("associate")) {
				return true
			}
		}
	}
	return s.o.Roster.IsCommittee(m.From()) && s.senderAuthenticated(d) != ""
}

// withinWindow reports whether an alert at last covers a refusal at now.
// Concurrent refusals reach limitRefused out of their arrival order, so a
// refusal a few milliseconds before the alert is covered too; only a clock
// that went back by more than the window alerts again.
func withinWindow(now, last time.Time) bool {
	d := now.Sub(last)
	return d < LimitWindow && -d < LimitWindow
}

// limitRefused logs a refusal and tells the SRC, once per limit and
// LimitWindow (an alert committed before the sender hears the 450).
func (s *Service) limitRefused(lr *LimitRefusal, d *delivery) {
	s.log.Info("new incident refused by an intake limit", "session", d.env.SessionID, "limit", lr.Reason, "who", lr.Who,
		"opened", lr.Opened, "max", lr.Limit, "until", lr.Until.Format(time.RFC3339))
	now := d.now
	st := &s.sh.limits
	st.mu.Lock()
	if st.last == nil {
		st.last = map[string]time.Time{}
	}
	last, told := st.last[lr.Reason]
	if told && withinWindow(now, last) {
		st.mu.Unlock()
		return
	}
	st.last[lr.Reason] = now
	st.mu.Unlock()
	sent := false
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		sent = false
		key := metaLimitAlert + lr.Reason
		if t, err := time.Parse(time.RFC3339Nano, incidentdb.Meta(tx, key)); err == nil && withinWindow(now, t) {
			return nil // told before a restart
		}
		if err := incidentdb.SetMeta(tx, key, now.Format(time.RFC3339Nano)); err != nil {
			return err
		}
		out, err := s.sealedEach(s.o.Roster.List(lists.Security), s.committee(), limitNotice(lr, now), now)
		if err != nil {
			return err
		}
		sent = len(out) > 0
		return s.enqueue(tx, now, out...)
	})
	if err != nil {
		s.log.Error("intake limit alert not queued", "limit", lr.Reason, "err", err)
		st.mu.Lock()
		delete(st.last, lr.Reason) // the next refusal tries again
		st.mu.Unlock()
		return
	}
	if sent {
		s.o.Kick()
	}
}

// limitNotice is the SRC's alert about a limit: which one, who hit it, and
// what to do. It names no incident and quotes nothing of the refused mail.
// Who is the envelope's, escaped and cut as outside text (EscapeLine): it
// is smtpd's strict parse of MAIL FROM or the client's IP address, but
// Handle takes an Envelope as given.
func limitNotice(lr *LimitRefusal, now time.Time) notice {
	what, key := "sender", "new_incidents_per_sender_per_hour"
	if lr.Reason == LimitClient {
		what, key = "client address", "new_incidents_per_client_per_hour"
	}
	body := fmt.Sprintf("embargo is refusing new reports from the %s %s with 450 4.7.1 (try again\n"+
		"later), from %s: it opened %d new incidents in the last hour, the limit of\n"+
		"[intake] %s = %d. Its next new report is taken from %s.\n\n"+
		"Nothing of the refused mail is stored. A real sender's mail server tries\n"+
		"again (450 is temporary) and gets through as the count goes down. Mail into\n"+
		"an existing incident, and reports signed by a committee member, are never\n"+
		"limited.\n\n"+
		"This is the only alert about this limit for an hour, however many reports it\n"+
		"refuses: /metrics counts them (embargo_intake_refused_total{reason=%q}),\n"+
		"and the log has a line for each (\"new incident refused by an intake limit\").\n"+
		"To let more through, raise %s in the configuration and restart embargo.\n",
		what, cutLine(EscapeLine(lr.Who), maxQuotedLine), workflow.FormatInstant(now), lr.Opened, key, lr.Limit, workflow.FormatInstant(lr.Until), lr.Reason, key)
	return notice{Subject: "[embargo] new reports refused: limit per " + what, Body: body, Kind: "alert-limit"}
}

// asLimitRefusal finds a LimitRefusal in err's chain.
func asLimitRefusal(err error) (*LimitRefusal, bool) {
	var lr *LimitRefusal
	ok := errors.As(err, &lr)
	return lr, ok
}
