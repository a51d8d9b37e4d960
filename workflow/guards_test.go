package workflow

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestGuards covers each command's refusals and no-op answers that
// TestCommands leaves out: a closed incident, a locked advisory, the wrong
// phase, and a command repeated. Each row gives the receipt result of the
// last command, or the sentinel its refusal must match.
func TestGuards(t *testing.T) {
	closed := func(t *testing.T) Incident {
		return step(t, triage(), "/reject not-a-vulnerability\n", alice, mon).Incident
	}
	approved := func(t *testing.T) Incident { return step(t, ready(t), "/approve\n", alice, mon).Incident }
	disclosed := func(t *testing.T) Incident { return step(t, approved(t), "/disclose now\n", alice, mon).Incident }
	tri := func(*testing.T) Incident { return triage() }
	tests := []struct {
		name   string
		inc    func(*testing.T) Incident
		text   string
		now    time.Time // zero: mon
		err    error
		result string // substring of the last command's result; changed tells whether it counted
		change bool
	}{
		{name: "lead on a closed incident", inc: closed, text: "/lead bob@ex.org\n", err: ErrPhase},
		{name: "fixteam on a closed incident", inc: closed, text: "/fixteam add x@ex.org\n", err: ErrPhase},
		{name: "cvss on a closed incident", inc: closed, text: "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", err: ErrPhase},
		{name: "public on a closed incident", inc: closed, text: "/public\n", err: ErrPhase},
		{name: "duplicate on a closed incident", inc: closed, text: "/duplicate SEC-2026-0002\n", err: ErrPhase},
		{name: "handoff on a closed incident", inc: closed, text: "/handoff sec@other.example\n", err: ErrPhase},
		{name: "severity while approved", inc: approved, text: "/severity low\n", err: ErrLocked},
		{name: "cve while approved", inc: approved, text: "/cve CVE-2026-9999\n", err: ErrLocked},
		{name: "approve in triage", inc: tri, text: "/approve\n", err: ErrPhase},
		{name: "notify in triage", inc: tri, text: "/notify\n", err: ErrPhase},
		{name: "embargo-break in triage", inc: tri, text: "/embargo-break\n", err: ErrPhase},
		{name: "defer in triage", inc: tri, text: "/defer\n", err: ErrPhase},
		{name: "close without resolution in fix", inc: fix, text: "/close\n", err: ErrGuard},
		{name: "notify after T", inc: ready, text: "/notify\n", now: time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC), err: ErrPast},
		{name: "approve twice", inc: approved, text: "/approve\n", result: "already approved"},
		{name: "withdraw unapproved", inc: ready, text: "/approve withdraw\n", result: "the advisory was not approved"},
		{name: "fixed twice", inc: ready, text: "/fixed\n", result: "already marked fixed"},
		{name: "public twice", inc: fix, text: "/public\n/public\n", result: "already public"},
		{name: "embargo-break twice", inc: fix, text: "/embargo-break\n/embargo-break\n", result: "already recorded as broken"},
		{name: "defer twice", inc: tri, text: "/accept\n/severity low\n/defer\n/defer\n", result: "already deferred"},
		{name: "set the same value", inc: ready, text: "/set summary Node authorizer bypass\n", result: "summary unchanged"},
		{name: "cvss under an override", inc: fix, text: "/severity low\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", result: "the override keeps the severity at Low", change: true},
		{name: "lead replaced", inc: fix, text: "/lead bob@ex.org\n", result: "Fix Lead bob@ex.org (was alice@ex.org)", change: true},
		{name: "fixteam add again", inc: fix, text: "/fixteam add eng@ex.org\n", result: "fix team unchanged: eng@ex.org"},
		{name: "fixteam emptied", inc: fix, text: "/fixteam remove eng@ex.org\n", result: "now nobody", change: true},
		{name: "reopen a rejected report", inc: closed, text: "/reopen\n", result: "phase triage", change: true},
		{name: "reopen a disclosed incident", inc: disclosed, text: "/retro\n/reopen\n", result: "phase disclosed", change: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = mon
			}
			inc := tt.inc(t)
			r, err := Apply(inc, tt.text, at(alice, now), now, env)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Apply(%q) = %v, want %v", tt.text, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply(%q) error: %v", tt.text, err)
			}
			last := r.Receipt.Lines[len(r.Receipt.Lines)-1]
			if !strings.Contains(last.Result, tt.result) {
				t.Errorf("result %q, want it to contain %q", last.Result, tt.result)
			}
			var lastChange string
			if n := len(r.Incident.History); n > len(inc.History) {
				lastChange = r.Incident.History[n-1].What
			}
			if changed := lastChange == last.Result; changed != tt.change {
				t.Errorf("recorded in the history: %v, want %v", changed, tt.change)
			}
		})
	}
}

// TestEveryCommandApplies: each row of the table reaches its function.
func TestEveryCommandApplies(t *testing.T) {
	for _, s := range Commands() {
		if s.apply == nil {
			t.Errorf("/%s has no apply function", s.Name)
		}
	}
}
