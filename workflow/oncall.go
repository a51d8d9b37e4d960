package workflow

import (
	"fmt"
	"strings"
	"time"
)

// The on-call (docs/process.md §2, §10): an ordered rotation of SRC
// members, one week each, shifts starting Monday 00:00 UTC. The on-call is
// the default incident commander of the reports that arrive during their
// shift and gets the 1-working-day triage reminder. A handover (/oncall ADDR)
// takes effect only when the new on-call acknowledges (/oncall ack), and
// lasts for the rest of the shift; the next shift follows the rotation again.

// ShiftLength is one on-call shift.
const ShiftLength = 7 * 24 * time.Hour

// rotationEpoch is the first Monday of Unix time: without a configured start,
// shifts are counted from it.
var rotationEpoch = time.Date(1970, 1, 5, 0, 0, 0, 0, time.UTC)

// Rotation is the configured on-call rotation.
type Rotation struct {
	Members []string  // SRC members, in order, one shift each
	Start   time.Time // a day in the shift of Members[0]; zero: the week of 1970-01-05
}

// ShiftStart returns the start of the shift t falls in: the Monday 00:00 UTC
// at or before t.
func ShiftStart(t time.Time) time.Time {
	t = t.UTC()
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
}

// Scheduled returns whom the rotation puts on call at t, "" without a
// rotation.
func (r Rotation) Scheduled(t time.Time) string {
	if len(r.Members) == 0 {
		return ""
	}
	start := rotationEpoch
	if !r.Start.IsZero() {
		start = ShiftStart(r.Start)
	}
	// Shifts are whole weeks of UTC days: no DST, no leap seconds in Go time.
	weeks := int(ShiftStart(t).Sub(start) / ShiftLength)
	n := len(r.Members)
	return strings.ToLower(r.Members[((weeks%n)+n)%n])
}

// OnCallState is the persisted handover state (the rotation itself is
// configuration). Its fields apply to one shift only: a handover never
// outlives the week it was made in.
type OnCallState struct {
	Shift     time.Time `json:"shift,omitzero"`       // the shift (its Monday 00:00 UTC) the fields below belong to
	Member    string    `json:"member,omitempty"`     // on call by an acknowledged handover, for the rest of Shift
	Since     time.Time `json:"since,omitzero"`       // when Member acknowledged
	Previous  string    `json:"previous,omitempty"`   // who was on call before Member took over
	Pending   string    `json:"pending,omitempty"`    // asked to take over, not yet acknowledged
	PendingBy string    `json:"pending_by,omitempty"` // who asked
	PendingAt time.Time `json:"pending_at,omitzero"`
}

// at returns the state as it applies at now: empty when it belongs to an
// earlier shift.
func (st OnCallState) at(now time.Time) OnCallState {
	shift := ShiftStart(now)
	if !st.Shift.Equal(shift) {
		return OnCallState{Shift: shift}
	}
	return st
}

func (st OnCallState) equal(o OnCallState) bool {
	return st.Shift.Equal(o.Shift) && st.Member == o.Member && st.Since.Equal(o.Since) && st.Previous == o.Previous &&
		st.Pending == o.Pending && st.PendingBy == o.PendingBy && st.PendingAt.Equal(o.PendingAt)
}

// OnCall returns who is on call at now ("" when nobody: no rotation and no
// handover) and whether by handover rather than by the rotation.
func OnCall(r Rotation, st OnCallState, now time.Time) (member string, handedOver bool) {
	if st = st.at(now); st.Member != "" {
		return st.Member, true
	}
	return r.Scheduled(now), false
}

// PendingHandover returns the member asked to take over at now, if any.
func PendingHandover(st OnCallState, now time.Time) string { return st.at(now).Pending }

// OnCallThread is the pseudo incident of a receipt for on-call commands sent
// outside any incident's thread (ApplyOnCall).
const OnCallThread ID = "on-call"

// ApplyOnCall runs a signed message that reached the security list outside
// any incident's thread and holds only /oncall commands, with Apply's checks
// (signature age, no other incident named, role src). Other commands are
// refused: they need an incident's thread. Result.OnCall carries the new state.
func ApplyOnCall(text string, by Signer, now time.Time, env Env) (Result, error) {
	cmds, err := Parse(text)
	if err == nil {
		for _, c := range cmds {
			if c.Name != "oncall" {
				err = &CommandError{Line: c.Line, Verb: c.Name, Err: argErr(ErrGuard, "outside an incident's thread only /oncall works: send /%s in the incident's thread", c.Name)}
				break
			}
		}
	}
	if err != nil {
		res := Result{Incident: Incident{ID: OnCallThread}, Receipt: Receipt{Incident: OnCallThread, Signer: by.Email, At: now.UTC(), Refused: err.Error()}}
		for _, c := range cmds {
			res.Receipt.Lines = append(res.Receipt.Lines, ReceiptLine{Line: c.Line, Command: c.String()})
		}
		return res, err
	}
	return Apply(Incident{ID: OnCallThread}, text, by, now, env)
}

func parseOnCall(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	switch {
	case len(f) == 0:
		return Command{Name: "oncall"}, nil
	case len(f) > 1:
		return Command{}, argErr(ErrSyntax, "give one address, me or ack")
	case strings.EqualFold(f[0], "ack"), strings.EqualFold(f[0], "me"):
		return Command{Name: "oncall", Args: []string{strings.ToLower(f[0])}}, nil
	}
	a, err := parseAddr(f[0])
	if err != nil {
		return Command{}, err
	}
	return Command{Name: "oncall", Args: []string{a}}, nil
}

// oncall runs /oncall. It changes m.env.OnCallState, never the incident: the
// caller persists Result.OnCall.
func (m *machine) oncall(c Command) (string, bool, error) {
	st := m.env.OnCallState.at(m.now)
	cur, handed := OnCall(m.env.Rotation, st, m.now)
	until := FormatInstant(st.Shift.Add(ShiftLength))
	me := strings.ToLower(m.by.Email)
	take := func(who string) {
		st.Previous, st.Member, st.Since = cur, who, m.now
		st.Pending, st.PendingBy, st.PendingAt = "", "", time.Time{}
		m.env.OnCallState = st
	}
	arg := ""
	if len(c.Args) > 0 {
		arg = c.Args[0]
	}
	switch arg {
	case "":
		who := "nobody (no rotation is configured: take over with /oncall me)"
		if cur != "" {
			how := "by the rotation"
			if handed {
				how = "by handover from " + orNobody(st.Previous) + " " + FormatInstant(st.Since)
			}
			who = fmt.Sprintf("%s, %s, until %s", cur, how, until)
		}
		s := "on call: " + who
		if st.Pending != "" {
			s += fmt.Sprintf("; handover to %s pending (asked by %s %s)", st.Pending, st.PendingBy, FormatInstant(st.PendingAt))
		}
		return s, false, nil
	case "ack":
		if st.Pending == "" || st.Pending != me {
			return "", false, argErr(ErrGuard, "no handover to you is pending this shift: /oncall me takes over at once")
		}
		take(me)
		return fmt.Sprintf("you are on call until %s (handed over by %s); the SRC is told", until, orNobody(cur)), false, nil
	case "me":
		arg = me
	}
	if !containsFold(m.env.SRC, arg) {
		return "", false, argErr(ErrGuard, "%s is not an SRC member", arg)
	}
	if arg == cur {
		return arg + " is already on call until " + until, false, nil
	}
	if arg == me {
		take(me)
		return fmt.Sprintf("you are on call until %s (taking over from %s); the SRC is told", until, orNobody(cur)), false, nil
	}
	st.Pending, st.PendingBy, st.PendingAt = arg, me, m.now
	m.env.OnCallState = st
	return fmt.Sprintf("handover to %s requested; it takes effect when %s sends /oncall ack, for the shift until %s", arg, arg, until), false, nil
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}
