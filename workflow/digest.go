package workflow

import (
	"fmt"
	"strings"
	"time"
)

// Digest is what the SRC reads every Monday: who is on call, the
// open incidents, and the deadlines of the week, overdue ones included. The
// caller adds the member keys that expire soon and renders it.
type Digest struct {
	Week       time.Time // the shift it covers: Monday 00:00 UTC
	OnCall     string    // "" without a rotation
	HandedOver bool      // OnCall by handover, not by the rotation
	NextOnCall string    // the rotation's choice for next week
	Pending    string    // a handover waiting for its acknowledgement
	Incidents  []string  // one line per open incident, in ID order
	Deadlines  []string  // "ID name  due …" for every open deadline due before the week ends, in time order
	// Distributors is, for each open incident whose notice reached
	// distributors, one line per distributor: "ID address: answer since …"
	// or "no answer" (distributors.go). Their notes are left out.
	Distributors []string
}

// WeeklyDigest builds the digest of the week now falls in. Only IDs, phases,
// people and instants: no subject or advisory text, although the caller
// sends it encrypted to each member.
func WeeklyDigest(incs []Incident, now time.Time, env Env) Digest {
	now = now.UTC()
	week := ShiftStart(now)
	end := week.Add(ShiftLength)
	dg := Digest{Week: week, NextOnCall: env.Rotation.Scheduled(end), Pending: PendingHandover(env.OnCallState, now)}
	dg.OnCall, dg.HandedOver = OnCall(env.Rotation, env.OnCallState, now)
	type dl struct {
		id ID
		d  Deadline
	}
	var due []dl
	for _, inc := range incs {
		if inc.Phase == PhaseClosed || inc.Phase == PhaseUnset {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s  %-9s %-8s", inc.ID, inc.Phase, inc.Severity())
		for _, f := range []struct{ k, v string }{{"commander", inc.Commander}, {"lead", inc.FixLead}} {
			if f.v != "" {
				fmt.Fprintf(&b, "  %s %s", f.k, f.v)
			}
		}
		if !inc.T.IsZero() {
			fmt.Fprintf(&b, "  T %s", FormatInstant(inc.T))
		}
		if tl := trackLine(inc, now); tl != "" {
			b.WriteString("  track " + tl)
		}
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{inc.Public, "public"}, {inc.EmbargoBroken, "embargo-broken"}, {inc.Deferred, "deferred"}, {inc.Approved, "approved"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		if len(flags) > 0 {
			b.WriteString("  (" + strings.Join(flags, ", ") + ")")
		}
		dg.Incidents = append(dg.Incidents, b.String())
		for _, l := range inc.DistributorLines() {
			dg.Distributors = append(dg.Distributors, string(inc.ID)+" "+l)
		}
		for _, d := range Deadlines(inc, env.Holidays) {
			if d.Open() && d.Name != "stale" && (d.ASAP || d.Due.Before(end)) {
				due = append(due, dl{inc.ID, d})
			}
		}
	}
	// Stable insertion sort by due instant: ties keep timeline order.
	for i := 1; i < len(due); i++ {
		for j := i; j > 0 && due[j].d.Due.Before(due[j-1].d.Due); j-- {
			due[j], due[j-1] = due[j-1], due[j]
		}
	}
	for _, x := range due {
		state := "due " + FormatInstant(x.d.Due)
		switch {
		case x.d.ASAP:
			state = "ASAP (was due " + FormatInstant(x.d.Due) + ")"
		case x.d.Due.Before(now):
			state = "OVERDUE since " + FormatInstant(x.d.Due)
		}
		dg.Deadlines = append(dg.Deadlines, fmt.Sprintf("%s %s  %s: %s", x.id, x.d.Name, state, x.d.What))
	}
	return dg
}
