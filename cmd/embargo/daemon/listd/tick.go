package listd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// Meta entries (incidentdb.Meta) the tick and the on-call keep.
const (
	metaOnCall = "oncall"      // workflow.OnCallState, JSON
	metaDigest = "digest_week" // RFC 3339 instant of the last week (Monday 00:00 UTC) the digest went out for
	// metaHeartbeat is the wall clock of the last tick (RFC 3339, nanoseconds).
	metaHeartbeat = "tick_heartbeat"
)

// KeyExpiryWarning is how far ahead the Monday digest lists member keys that
// expire.
const KeyExpiryWarning = 30 * 24 * time.Hour

// Tick sweeps what is due at now (docs/design.md §1): for each open incident,
// workflow.TickAfterGap decides from the persisted deadlines and markers,
// and from the gap the clock check found (a clock jump, or downtime: a
// release whose T fell in it is held, and the hold stored with the
// incident, docs/threat-model.md G4); when it
// changed anything, the incident and the mail its actions cause commit in
// one bbolt transaction, so each reminder goes out exactly once, and late
// rather than never after the daemon was down. Then, once a week, the
// Monday digest (its marker is committed with its mail); and every tick
// deletes a batch of the limits' per-address records whose windows have
// passed (stale.go).
//
// The sweep reads the deadline index (due.go): only the incidents filed
// under an instant at or before now are read and given to
// workflow.TickAfterGap,
// and each due one is ticked in its own short transaction, through the
// group commit, so that mail arriving meanwhile is never held up by a
// sweep. A sweep with nothing due reads one index page and writes nothing.
//
// One incident's failure (a template error, a full disk) is logged and
// reported in the returned error; the others still go out.
func (s *Service) Tick(ctx context.Context, now time.Time) error {
	s = s.current()
	now = now.UTC()
	if err := s.checkClock(now); err != nil {
		return fmt.Errorf("listd: tick: %w", err)
	}
	due, err := s.dueIncidents(now) // the deadline index (due.go)
	if err != nil {
		return fmt.Errorf("listd: tick: %w", err)
	}
	sent, errs := s.sweep(ctx, due, now)
	if ctx.Err() == nil {
		n, err := s.govTickGuarded(ctx, now) // tickjobs.go
		if err != nil {
			s.log.Error("governance tick failed", "err", err)
			errs = append(errs, err)
		}
		sent += n
	}
	if ctx.Err() == nil {
		n, err := s.digestGuarded(ctx, now)
		if err != nil {
			s.log.Error("weekly digest failed", "err", err)
			errs = append(errs, fmt.Errorf("digest: %w", err))
		}
		sent += n
	}
	if ctx.Err() == nil {
		if _, err := s.pruneStale(now); err != nil {
			s.log.Error("clean-up of stale limit records failed", "err", err)
			errs = append(errs, err)
		}
		if _, err := s.pruneVERP(now); err != nil {
			s.log.Error("clean-up of old bounce address records failed", "err", err)
			errs = append(errs, err)
		}
	}
	if sent > 0 {
		s.o.Kick()
	}
	return errors.Join(errs...)
}

// tickIncident applies workflow.TickAfterGap to one incident in its own
// transaction, reading it afresh: a message that changed it since the scan
// counts. A release held because its T fell in a gap is recorded like any
// other tick's work: HeldAt and the alert in the incident's history, with the
// reminders of the same tick, in the transaction that queues the alert.
func (s *Service) tickIncident(id workflow.ID, now time.Time) (int, error) {
	var kinds []string
	var n int
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		kinds, n = nil, 0
		inc, err := incidentdb.Get(tx, id)
		if err != nil {
			return err
		}
		r := workflow.TickAfterGap(*inc, now, s.workflowEnv(tx), s.sh.jumpFrom)
		if !r.Applied {
			return nil
		}
		sec := s.o.Roster.List(lists.Security)
		if err := s.putIncident(tx, &r.Incident); err != nil {
			return err
		}
		var out []queue.Msg
		for _, a := range r.Actions {
			kinds = append(kinds, a.Kind())
			msgs, err := s.tickAction(tx, sec, &r.Incident, a, now, r.Actions)
			if err != nil {
				return fmt.Errorf("%s: %w", a.Kind(), err)
			}
			out = append(out, msgs...)
		}
		for _, q := range out {
			if err := incidentdb.IndexMessageID(tx, q.MessageID, r.Incident.ID); err != nil {
				return err
			}
		}
		n = len(out)
		return s.enqueue(tx, now, out...)
	})
	if err == nil && len(kinds) > 0 {
		s.log.Info("tick", "incident", id, "actions", strings.Join(kinds, ","), "messages", n)
		if s.sh.hooks.Ticked != nil {
			s.sh.hooks.Ticked(id, kinds)
		}
	}
	return n, err
}

// tickAction renders one action of a tick. Reminders are rendered here (to
// one member, or to the SRC); everything else as commands' actions are.
func (s *Service) tickAction(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, a workflow.Action, now time.Time, all []workflow.Action) ([]queue.Msg, error) {
	switch a := a.(type) {
	case workflow.Remind:
		return s.remind(sec, inc, a.To, a.Fields, now)
	case workflow.AlertSRC:
		if a.Template == "reminder" {
			return s.remind(sec, inc, "", a.Fields, now)
		}
	}
	return s.action(tx, sec, inc, lists.Member{}, a, now, all)
}

// remind sends a reminder to one committee member (to), encrypted to their
// key, or to the whole SRC when to is empty or has no usable key. Reminders
// speak of an incident: members without a usable key get none.
func (s *Service) remind(sec lists.List, inc *workflow.Incident, to string, f map[string]string, now time.Time) ([]queue.Msg, error) {
	body, err := s.renderFields("reminder", f)
	if err != nil {
		return nil, err
	}
	title := f["title"]
	if title == "" {
		title = f["deadline"]
	}
	subject := fmt.Sprintf("[%s] reminder: %s", inc.ID, title)
	var rcpts []recipient
	if mem, ok := s.o.Roster.Member(to); ok && to != "" {
		if k, err := s.memberKey(mem); err == nil {
			rcpts = []recipient{{Member: mem, key: k}}
		}
	}
	if len(rcpts) == 0 {
		if to != "" {
			s.log.Info("reminder to the SRC instead of one member: no usable key", "incident", inc.ID)
		}
		rcpts = s.committee()
	}
	return s.sealedEach(sec, rcpts, notice{Subject: subject, Body: body, Kind: "reminder", Incident: inc.ID, Thread: inc.RootMsg}, now)
}

// workflowEnv is what workflow needs beyond the incident: the SRC, the
// distributors a notice reaches now, the holidays and the on-call.
func (s *Service) workflowEnv(tx *bolt.Tx) workflow.Env {
	var src []string
	for _, m := range s.o.Roster.WithRole(workflow.RoleSRC) {
		src = append(src, m.Email)
	}
	var dists []string
	if s.o.DistributorsKey != nil { // without it no notice goes out (toDistributors)
		send, _ := s.distributorKeys()
		for _, d := range send {
			dists = append(dists, d.Email)
		}
	}
	return workflow.Env{SRC: src, Holidays: s.o.Holidays, Rotation: s.o.Rotation, OnCallState: s.onCallState(tx), Quorum: s.o.Quorum,
		Distributors: dists, Announce: s.o.AnnounceKey != nil && s.o.Announcer != nil}
}

// onCallState reads the persisted handover state; a damaged entry reads as
// none (the rotation still applies).
func (s *Service) onCallState(tx *bolt.Tx) workflow.OnCallState {
	var st workflow.OnCallState
	if v := incidentdb.Meta(tx, metaOnCall); v != "" {
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			s.log.Warn("on-call state unreadable; following the rotation", "err", err)
			return workflow.OnCallState{}
		}
	}
	return st
}

// onCallNow is who is on call at now: the incident commander of a new report.
func (s *Service) onCallNow(tx *bolt.Tx, now time.Time) string {
	who, _ := workflow.OnCall(s.o.Rotation, s.onCallState(tx), now)
	return who
}

// onCallChanged persists a new handover state that /oncall produced and
// tells the SRC: a handover was asked for, or someone took over. On a take
// over, the open incidents commanded by the member handing over go to the new
// on-call (process.md §10: an IC keeps the incident until the next on-call
// acknowledges). cur is the incident whose thread carried the command (nil
// outside a thread): it is changed in memory, for its caller to store.
func (s *Service) onCallChanged(tx *bolt.Tx, sec lists.List, st workflow.OnCallState, cur *workflow.Incident, by lists.Member, now time.Time) ([]queue.Msg, error) {
	old := s.onCallState(tx)
	v, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := incidentdb.SetMeta(tx, metaOnCall, string(v)); err != nil {
		return nil, err
	}
	until := workflow.FormatInstant(st.Shift.Add(workflow.ShiftLength))
	rcpts := s.committee()
	var out []queue.Msg
	if st.Pending != "" && (st.Pending != old.Pending || !st.PendingAt.Equal(old.PendingAt)) {
		current, _ := workflow.OnCall(s.o.Rotation, st, now)
		body, err := s.o.Templates.Render("oncall-request", map[string]any{"Project": s.o.Project,
			"by": st.PendingBy, "to": st.Pending, "current": orDash(current), "until": until, "ReplyAddress": sec.Address})
		if err != nil {
			return nil, err
		}
		msgs, err := s.sealedEach(sec, rcpts, notice{Subject: "[embargo] on-call handover to " + st.Pending + " requested", Body: body, Kind: "oncall"}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
		s.log.Info("on-call handover requested", "by", by.Fingerprint)
	}
	if st.Member != "" && (st.Member != old.Member || !st.Since.Equal(old.Since)) {
		var moved []string
		if st.Previous != "" && !strings.EqualFold(st.Previous, st.Member) {
			move := func(inc *workflow.Incident) {
				inc.Commander = st.Member
				inc.History = append(inc.History, workflow.Change{At: now, Fingerprint: by.Fingerprint, Email: by.Email,
					Command: "/oncall", What: "incident commander " + st.Member + " (was " + st.Previous + "), by on-call handover"})
				moved = append(moved, string(inc.ID))
			}
			incs, err := incidentdb.OpenIncidents(tx)
			if err != nil {
				return nil, err
			}
			for i := range incs {
				inc := &incs[i]
				if inc.Phase == workflow.PhaseClosed || !strings.EqualFold(inc.Commander, st.Previous) {
					continue
				}
				if cur != nil && inc.ID == cur.ID {
					move(cur)
					continue
				}
				move(inc)
				if err := s.putIncident(tx, inc); err != nil {
					return nil, err
				}
			}
		}
		body, err := s.o.Templates.Render("oncall-change", map[string]any{"Project": s.o.Project,
			"member": st.Member, "previous": orDash(st.Previous), "since": workflow.FormatInstant(st.Since), "until": until,
			"moved": strings.Join(moved, ", "), "ReplyAddress": sec.Address})
		if err != nil {
			return nil, err
		}
		msgs, err := s.sealedEach(sec, rcpts, notice{Subject: "[embargo] on call: " + st.Member, Body: body, Kind: "oncall"}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
		s.log.Info("on-call handover", "by", by.Fingerprint, "incidents_moved", len(moved))
	}
	return out, nil
}

func orDash(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

// onCallMessage handles a message to the security list, outside any
// incident's thread, whose well-formed command block includes /oncall
// (workflow.ApplyOnCall): it is no report. Signed by a committee member's
// pinned key, it is applied; from a committee member but with a signature
// that does not count, it gets a receipt saying why (refusals.go). It
// queues the receipt and the on-call notices and reports whether it took
// the message; anything else is left to the intake.
func (s *Service) onCallMessage(tx *bolt.Tx, sec lists.List, msg *inbound.Message, now time.Time) (bool, error) {
	cmds, err := msg.Commands()
	isOnCall := false
	for _, c := range cmds {
		isOnCall = isOnCall || c.Name == "oncall"
	}
	if err != nil || !isOnCall {
		return false, nil
	}
	v := msg.Signature()
	if !v.OK() {
		mem, ok := s.commandAuthor(msg.From(), nil)
		if !ok {
			return false, nil
		}
		out, err := s.signatureRefusal(sec, mem, workflow.OnCallThread, "", msg, now)
		if err != nil {
			return true, err
		}
		return true, s.enqueue(tx, now, out...)
	}
	mem, ok, err := s.signerOf(tx, v)
	if err != nil {
		return true, err
	}
	if !ok || !mem.Has(workflow.RoleSRC) && !mem.Has("associate") {
		return false, nil
	}
	if s.encryptionMissing(msg) {
		// Before the replay cache, which must not record it (encryption.go).
		out, err := s.encryptionRefusal(sec, mem, workflow.OnCallThread, "", msg, now)
		if err != nil {
			return true, err
		}
		return true, s.enqueue(tx, now, out...)
	}
	if miss := s.bindingMissing(sec, msg, ""); miss != "" {
		// The list alone: /oncall acts on the rotation (binding.go).
		out, err := s.bindingRefusal(sec, mem, workflow.OnCallThread, "", msg, now, miss, "")
		if err != nil {
			return true, err
		}
		return true, s.enqueue(tx, now, out...)
	}
	replayed, err := seenSignature(tx, v, now)
	if err != nil {
		return true, err
	}
	env := s.workflowEnv(tx)
	signer := workflow.Signer{Fingerprint: v.Fingerprint, Email: mem.Email, Roles: mem.Roles, SignedAt: v.Signed}
	var res workflow.Result
	var applyErr error
	if replayed {
		res = workflow.Result{Receipt: workflow.Receipt{Incident: workflow.OnCallThread, Signer: mem.Email, At: now, Refused: replayRefusal}}
		applyErr = errReplay
	} else {
		res, applyErr = workflow.ApplyOnCall(msg.Text(), signer, now, env)
	}
	status := "applied"
	if applyErr != nil {
		status = "refused"
		s.log.Info("on-call commands refused", "signer", v.Fingerprint, "reason", res.Receipt.Refused)
	}
	out, err := s.toMember(sec, mem, notice{Subject: "[on-call] receipt: " + status, Body: res.Receipt.Text(), Kind: "receipt"}, now)
	if err != nil {
		return true, err
	}
	if applyErr == nil && res.OnCall != nil {
		msgs, err := s.onCallChanged(tx, sec, *res.OnCall, nil, mem, now)
		if err != nil {
			return true, err
		}
		out = append(out, msgs...)
	}
	return true, s.enqueue(tx, now, out...)
}

// weeklyDigest sends the Monday digest to the SRC once per week (from
// Monday 00:00 UTC, the start of the on-call shift), signed and encrypted to
// each member. Its marker commits with its mail: a restart never sends a
// week's digest twice, and a daemon that was down on Monday sends it at its
// first tick. A store without a marker (a first start) records the current
// week without sending: the first digest comes the next Monday.
func (s *Service) weeklyDigest(now time.Time) (int, error) {
	week := workflow.ShiftStart(now)
	sent := func(tx *bolt.Tx) bool {
		t, err := time.Parse(time.RFC3339, incidentdb.Meta(tx, metaDigest))
		return err == nil && !t.Before(week)
	}
	var done bool
	s.o.DB.View(func(tx *bolt.Tx) error { done = sent(tx); return nil })
	if done {
		return 0, nil // the common case: no write, no fsync, once a minute
	}
	var n int
	var marked bool
	err := s.o.DB.Update(func(tx *bolt.Tx) error {
		n, marked = 0, false
		last := incidentdb.Meta(tx, metaDigest)
		if last != "" {
			if t, err := time.Parse(time.RFC3339, last); err == nil && !t.Before(week) {
				return nil
			}
		}
		if err := incidentdb.SetMeta(tx, metaDigest, week.Format(time.RFC3339)); err != nil {
			return err
		}
		if last == "" {
			return nil
		}
		s.jobStep(JobDigest, "marked") // a failpoint of the tests alone (testhooks.go)
		incs, err := incidentdb.OpenIncidents(tx)
		if err != nil {
			return err
		}
		dg := workflow.WeeklyDigest(incs, now, s.workflowEnv(tx))
		sec := s.o.Roster.List(lists.Security)
		body, err := s.o.Templates.Render("digest", map[string]any{
			"Project": s.o.Project, "week": workflow.FormatInstant(dg.Week),
			"oncall": onCallLine(dg.OnCall, dg.HandedOver), "next": orDash(dg.NextOnCall), "pending": dg.Pending,
			"incidents": dg.Incidents, "deadlines": dg.Deadlines, "distributors": dg.Distributors, "keys": s.keyLines(now),
			"ReplyAddress": sec.Address,
		})
		if err != nil {
			return err
		}
		out, err := s.sealedEach(sec, s.committee(), notice{Subject: "[embargo] weekly digest, week of " + dg.Week.Format(time.DateOnly), Body: body, Kind: "digest"}, now)
		if err != nil {
			return err
		}
		n = len(out)
		if err := s.enqueue(tx, now, out...); err != nil {
			return err
		}
		s.jobStep(JobDigest, "queued")
		marked = true
		return nil
	})
	if err == nil && marked {
		s.jobStep(JobDigest, "committed")
	}
	if err == nil && n > 0 {
		s.log.Info("weekly digest", "week", week.Format(time.DateOnly), "messages", n)
	}
	return n, err
}

func onCallLine(who string, handed bool) string {
	switch {
	case who == "":
		return "nobody (no rotation configured)"
	case handed:
		return who + " (by handover)"
	}
	return who
}

// keyLines lists the members whose pinned key expires within
// KeyExpiryWarning, or is not usable now.
func (s *Service) keyLines(now time.Time) []string {
	var out []string
	for _, m := range s.o.Roster.Members {
		who := m.Email + " (" + strings.Join(m.Roles, ", ") + ")"
		if m.Fingerprint == "" {
			if m.Has(workflow.RoleSRC) || m.Has(workflow.RoleDistributor) {
				out = append(out, who+": no pinned key")
			}
			continue
		}
		var k *keys.Key
		if s.o.Members != nil {
			k, _ = s.o.Members.Lookup(m.Fingerprint)
		}
		if k == nil {
			out = append(out, who+": key "+m.Fingerprint+" not usable (missing, expired, revoked or weak at start-up)")
			continue
		}
		if err := k.Check(now); err != nil {
			out = append(out, who+": key "+m.Fingerprint+" not usable: "+err.Error())
			continue
		}
		if end, ok := k.ExpiresAt(); ok && end.Sub(now) <= KeyExpiryWarning {
			days := int((end.Sub(now) + 24*time.Hour - 1) / (24 * time.Hour))
			out = append(out, fmt.Sprintf("%s: key %s expires %s (in %d days)", who, m.Fingerprint, workflow.FormatInstant(end), days))
		}
	}
	return out
}

// checkClock compares the wall clock with the persisted heartbeat of the last
// tick and the monotonic clock of this process (workflow.ClockCheck): a
// forward jump of more than workflow.MaxClockJump holds the releases it made
// due; after a start, a gap that large since the stored heartbeat cannot be
// told from a jump and counts as one. It persists the new heartbeat.
func (s *Service) checkClock(now time.Time) error {
	mono := s.o.Mono()
	var from time.Time
	err := s.o.DB.Update(func(tx *bolt.Tx) error {
		hb, _ := time.Parse(time.RFC3339Nano, incidentdb.Meta(tx, metaHeartbeat))
		from, _ = s.sh.clock.Check(now, mono, hb)
		return incidentdb.SetMeta(tx, metaHeartbeat, now.Format(time.RFC3339Nano))
	})
	if err != nil {
		return err
	}
	s.sh.clock.Beat(now, mono)
	s.sh.jumpFrom = from
	if !from.IsZero() {
		s.log.Warn("wall clock moved forward without the monotonic clock, or the daemon was down: releases due in the gap are held", "gap", now.Sub(from).Round(time.Second).String())
	}
	return nil
}
