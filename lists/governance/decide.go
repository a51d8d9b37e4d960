package governance

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

// Sentinel errors; callers match them with errors.Is. Authorisation and
// syntax errors wrap workflow's (workflow.ErrNotAllowed, ErrSyntax, …).
var (
	ErrRefused       = errors.New("governance: application refused")
	ErrNoProposal    = errors.New("governance: no such open proposal")
	ErrOtherProposal = errors.New("governance: signed text names another proposal")
	ErrKey           = errors.New("governance: key refused")
	ErrConflict      = errors.New("governance: conflicts with the roster or an open proposal")
)

// argErr is an error a member reads, classified by a sentinel.
func argErr(kind error, format string, a ...any) error { return workflow.Explain(kind, format, a...) }

// gov is one call's working copy: every change goes to st, every mail to
// actions; the caller gets them only when the whole call succeeds.
type gov struct {
	st      State
	cfg     Config
	now     time.Time
	by      workflow.Signer // the signer, resolved on the effective roster; zero for Tick and Submit
	msgID   string
	rootMsg string
	thread  string
	keys    []KeyVerdict
	actions []Action
	roster  bool // the effective roster changed
}

func (g *gov) emit(a ...Action)   { g.actions = append(g.actions, a...) }
func (g *gov) effective() []Entry { return Effective(g.cfg.File, g.st) }
func (g *gov) isSRC(addr string) bool {
	return slices.Contains(src(g.effective()), strings.ToLower(addr))
}

// counted returns the approvals of p that count now: by members of the SRC
// now, and for a removal never by the member concerned.
func (g *gov) counted(p *Proposal) []Vote {
	var out []Vote
	for _, v := range p.Approvals {
		dup := slices.ContainsFunc(out, func(o Vote) bool { return strings.EqualFold(o.Email, v.Email) })
		if !dup && g.isSRC(v.Email) && !(p.Kind == KindRemove && strings.EqualFold(v.Email, p.Email)) {
			out = append(out, v)
		}
	}
	return out
}

// settle decides p if it can be decided at now: quorum reached; for an
// application, lazy consensus (at least one approval, no denial, the
// deadline past) or, without any approval a further lazy-consensus period
// later, expiry; for a /member change, expiry at its deadline. It reports
// whether p is decided.
func (g *gov) settle(p *Proposal) bool {
	if p.Status != StatusOpen {
		return true
	}
	n := len(g.counted(p))
	switch {
	case n >= g.cfg.Quorum:
		g.pass(p, fmt.Sprintf("quorum: %d SRC approvals (%s)", n, voters(g.counted(p))))
	case p.Kind == KindApplication && n >= 1 && !g.now.Before(p.Deadline):
		g.pass(p, fmt.Sprintf("lazy consensus: %d SRC approval(s) (%s) and no objection by %s", n, voters(g.counted(p)), workflow.FormatInstant(p.Deadline)))
	case p.Kind == KindApplication && !g.now.Before(p.Deadline.Add(g.cfg.LazyConsensus)):
		g.expire(p, "no SRC member approved it by "+workflow.FormatInstant(p.Deadline.Add(g.cfg.LazyConsensus)))
	case p.Kind != KindApplication && !g.now.Before(p.Deadline):
		g.expire(p, fmt.Sprintf("fewer than %d SRC approvals by %s", g.cfg.Quorum, workflow.FormatInstant(p.Deadline)))
	default:
		return false
	}
	return true
}

// pinnedFor returns the member other than addr whose pinned key is fpr.
func pinnedFor(roster []Entry, fpr, addr string) string {
	for _, e := range roster {
		if e.Fingerprint != "" && strings.EqualFold(e.Fingerprint, fpr) && !strings.EqualFold(e.Email, addr) {
			return e.Email
		}
	}
	return ""
}

func voters(vs []Vote) string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Email)
	}
	return strings.Join(out, ", ")
}

// srcGuard refuses a change that would leave the SRC smaller than the quorum.
func (g *gov) srcGuard(e Entry) error {
	if !e.Has(workflow.RoleSRC) {
		return nil
	}
	if n := len(src(g.effective())) - 1; n < g.cfg.Quorum {
		return argErr(workflow.ErrGuard, "the SRC would have %d member(s), fewer than the quorum of %d: lower [governance] quorum first", n, g.cfg.Quorum)
	}
	return nil
}

// pass carries p out.
func (g *gov) pass(p *Proposal, how string) {
	roster := g.effective()
	cur, member := lookup(roster, p.Email)
	if (p.Kind == KindApplication || p.Kind == KindAdd) && member && p.Key != nil {
		// It joined meanwhile, or was a member all along: an addition
		// never replaces a pinned key (that is /member key's, with its
		// own votes).
		g.deny(p, Vote{Reason: p.Email + " is already on the roster; a new key goes through /member key"}, "")
		return
	}
	if p.Key != nil {
		if problems, _ := p.Key.check("", g.now); len(problems) > 0 {
			g.deny(p, Vote{Reason: "the key cannot be pinned: " + strings.Join(problems, "; ")}, "")
			return
		}
		if other := pinnedFor(roster, p.Key.Fingerprint, p.Email); other != "" {
			g.deny(p, Vote{Reason: "the key " + p.Key.Fingerprint + " is pinned for another member: one key, one member"}, "")
			return
		}
	}
	if p.Kind == KindRemove || p.Kind == KindKey || (p.Kind == KindAdd && p.Key == nil) {
		if !member {
			g.close(p, StatusExpired, p.Email+" is no longer on the roster")
			return
		}
		if err := g.srcGuard(cur); err != nil && !(p.Kind == KindKey || slices.Contains(p.Roles, workflow.RoleSRC)) {
			g.deny(p, Vote{Reason: err.Error()}, "")
			return
		}
	}
	p.Status, p.Decided, p.Outcome = StatusPassed, g.now, "passed by "+how
	g.roster = true
	approvers := voters(g.counted(p))
	note := map[string]string{"id": p.ID, "member": p.Email, "how": p.Outcome, "approvers": approvers, "at": workflow.FormatInstant(g.now)}
	switch p.Kind {
	case KindApplication, KindAdd:
		e := Entry{Email: p.Email, Roles: slices.Clone(p.Roles), Origin: OriginCommand, Ref: p.ID, Change: "added", Since: g.now}
		if p.Kind == KindApplication {
			e.Origin, e.Product = OriginApplication, p.Application.Product
		}
		if member { // new roles for a member: the key stays
			e = cur
			e.Roles, e.Ref, e.Change, e.Since = slices.Clone(p.Roles), p.ID, "roles", g.now
			note["change"] = fmt.Sprintf("%s now has the roles %s (were %s)", p.Email, strings.Join(p.Roles, ", "), strings.Join(cur.Roles, ", "))
		} else {
			e.Fingerprint, e.Key = strings.ToUpper(p.Key.Fingerprint), p.Key.Armored
			g.emit(PinKey{Email: p.Email, Fingerprint: e.Fingerprint, Armored: e.Key})
			note["change"] = fmt.Sprintf("%s joined the roster with the roles %s", p.Email, strings.Join(p.Roles, ", "))
		}
		g.st.setOverride(e)
		g.emit(AddMember{Email: p.Email, Roles: slices.Clone(p.Roles)})
		note["roles"], note["fingerprint"] = strings.Join(e.Roles, ", "), e.Fingerprint
		if !member && e.Has(workflow.RoleDistributor) {
			g.emit(Mail{Template: "distributor-welcome", Subject: "Welcome to the distributors list", Thread: p.ID, To: p.Email, Key: e.Key,
				Fields: map[string]string{"id": p.ID, "member": p.Email, "product": e.Product, "fingerprint": e.Fingerprint}})
		} else {
			g.emit(Mail{Template: "roster-change", Subject: "Roster change", Thread: p.ID, To: p.Email, Key: e.Key, Fingerprint: e.Fingerprint, Fields: fill(note)})
		}
	case KindRemove:
		g.remove(p, cur, note, false)
		return
	case KindKey:
		e := cur
		e.Fingerprint, e.Key, e.Ref, e.Change, e.Since = strings.ToUpper(p.Key.Fingerprint), p.Key.Armored, p.ID, "key", g.now
		g.st.setOverride(e)
		g.emit(PinKey{Email: p.Email, Fingerprint: e.Fingerprint, Armored: e.Key, Previous: cur.Fingerprint})
		note["change"] = fmt.Sprintf("the pinned key of %s is now %s (was %s)", p.Email, e.Fingerprint, orNone(cur.Fingerprint))
		note["roles"], note["fingerprint"], note["previous"] = strings.Join(e.Roles, ", "), e.Fingerprint, cur.Fingerprint
		// Both keys are told: the holder of the old one learns if the
		// change was not theirs (docs/threat-model.md D5).
		g.emit(Mail{Template: "roster-change", Subject: "Your pinned key changed", Thread: p.ID, To: p.Email, Key: e.Key, Fields: fill(note)})
		if cur.Fingerprint != "" {
			g.emit(Mail{Template: "roster-change", Subject: "Your pinned key changed", Thread: p.ID, To: p.Email, Key: cur.Key, Fingerprint: cur.Fingerprint, Fields: fill(note)})
		}
	}
	g.emit(Mail{Template: "roster-change", Subject: "Roster change", Thread: p.ID, ToSRC: true, Fields: fill(note)})
}

// remove takes cur off the roster: p passed, or (left) the member removed
// themself.
func (g *gov) remove(p *Proposal, cur Entry, note map[string]string, left bool) {
	tomb := Entry{Email: cur.Email, Name: cur.Name, Roles: slices.Clone(cur.Roles), Fingerprint: cur.Fingerprint, Product: cur.Product,
		Origin: cur.Origin, Ref: p.ID, Change: "removed", Since: g.now, Removed: true, Reason: p.Reason}
	g.st.setOverride(tomb)
	g.roster = true
	g.emit(RemoveMember{Email: cur.Email})
	note["roles"], note["fingerprint"], note["reason"] = strings.Join(cur.Roles, ", "), cur.Fingerprint, p.Reason
	note["change"] = cur.Email + " was removed from the roster"
	if left {
		note["change"] = cur.Email + " left the roster"
	}
	if cur.Has(workflow.RoleDistributor) {
		kind, person := "removed", voters(g.counted(p))
		if left {
			kind, person = "left", cur.Email
		}
		g.emit(Mail{Template: "distributor-removal", Subject: "Distributors list membership", Thread: p.ID, To: cur.Email, CCSRC: true, Key: cur.Key, Fingerprint: cur.Fingerprint,
			Fields: map[string]string{"id": p.ID, "kind": kind, "member": cur.Email, "product": cur.Product, "reason": p.Reason, "person": person}})
		return
	}
	g.emit(Mail{Template: "roster-change", Subject: "Roster change", Thread: p.ID, To: cur.Email, Key: cur.Key, Fingerprint: cur.Fingerprint, Fields: fill(note)})
	g.emit(Mail{Template: "roster-change", Subject: "Roster change", Thread: p.ID, ToSRC: true, Fields: fill(note)})
}

// deny ends p by an objection (v.Email empty: by a rule, when it came to
// pass). person signs the applicant's notice.
func (g *gov) deny(p *Proposal, v Vote, person string) {
	p.Denial = &v
	who := "by " + v.Email
	if v.Email == "" {
		who = "automatically"
	}
	g.close(p, StatusDenied, fmt.Sprintf("denied %s: %s", who, v.Reason))
	if p.Kind == KindApplication {
		g.emit(g.toApplicant(p, "denied", v.Reason, orNone(person)))
	}
}

// expire ends p undecided.
func (g *gov) expire(p *Proposal, why string) {
	g.close(p, StatusExpired, "expired: "+why)
	if p.Kind == KindApplication {
		g.emit(g.toApplicant(p, "expired", why, "the Security Response Committee"))
	}
}

// close records an outcome that changes nothing of the roster and tells the SRC.
func (g *gov) close(p *Proposal, s Status, outcome string) {
	p.Status, p.Decided, p.Outcome = s, g.now, outcome
	what := p.Command
	if p.Kind == KindApplication {
		what = "the distributor application of " + p.Email
	}
	g.emit(Mail{Template: "roster-change", Subject: "Roster proposal " + string(s), Thread: p.ID, ToSRC: true, Fields: fill(map[string]string{
		"id": p.ID, "change": "nothing changed: " + what + " was " + string(s), "member": p.Email, "how": outcome, "approvers": voters(g.counted(p)), "at": workflow.FormatInstant(g.now)})})
}

// toApplicant is the notice of a denied or expired application.
func (g *gov) toApplicant(p *Proposal, kind, reason, person string) Mail {
	key := ""
	if problems, _ := p.Key.check("", g.now); len(problems) == 0 {
		key = p.Key.Armored
	}
	return Mail{Template: "distributor-removal", Subject: "Your application to the distributors list", Thread: p.ID, To: p.OpenedBy, Key: key,
		Fields: map[string]string{"id": p.ID, "kind": kind, "member": p.Email, "product": p.Application.Product, "reason": reason, "person": person}}
}

// fill gives every roster-change field a value, "" when it does not apply.
func fill(m map[string]string) map[string]string {
	for _, k := range []string{"id", "change", "member", "roles", "fingerprint", "previous", "approvers", "how", "reason", "at"} {
		if _, ok := m[k]; !ok {
			m[k] = ""
		}
	}
	return m
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Tick decides what time alone decides at now: applications that pass by
// lazy consensus, and proposals that expire. The caller runs it from the
// scheduler (every minute is plenty), stores Result.State, rebuilds the
// roster when Result.Roster, and performs Result.Actions. It is idempotent:
// a decided proposal is never decided again.
func Tick(st State, now time.Time, cfg Config) Result {
	g := &gov{st: st.clone(), cfg: cfg.withDefaults(), now: now.UTC()}
	for i := range g.st.Proposals {
		g.settle(&g.st.Proposals[i])
	}
	if len(g.actions) == 0 {
		return Result{State: st}
	}
	g.st.Version = SchemaVersion
	return Result{State: g.st, Actions: g.actions, Applied: true, Roster: g.roster}
}

// NextDeadline is the earliest instant at which Tick may decide something,
// zero when no proposal is open: the scheduler may sleep until then.
func NextDeadline(st State, cfg Config) time.Time {
	cfg = cfg.withDefaults()
	var next time.Time
	for _, p := range st.Open() {
		t := p.Deadline
		if p.Kind == KindApplication && len(p.Approvals) == 0 {
			t = p.Deadline.Add(cfg.LazyConsensus)
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}
