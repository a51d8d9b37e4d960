package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// The roster roles (the caller resolves them from the signer's fingerprint).
const (
	RoleSRC            = "src"
	RoleAssociate      = "associate"
	RoleReleaseManager = "release-manager"
	RoleDistributor    = "distributor"
)

// Signer is who signed a command message, as the caller verified and resolved
// it: the signature's primary key fingerprint, the roster entry it belongs to
// (its address and roles, at processing time: removing a member takes effect
// at once), and the signature's creation time. A signer the roster does not
// know has no roles, and only the incident's fix team may act without one.
type Signer struct {
	Fingerprint string
	Email       string
	Roles       []string
	SignedAt    time.Time
}

func (s Signer) has(role string) bool {
	for _, r := range s.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Env is what Apply needs to know beyond the incident.
type Env struct {
	SRC       []string    // the members with role src, in round-robin order
	LastLead  string      // the Fix Lead /accept assigned most recently, any incident (Result.RoundRobin)
	Holidays  []time.Time // dates (UTC) that are no release slot and no working day
	MessageID string      // of the message carrying the commands, for the history

	// The on-call (oncall.go): the configured rotation and the persisted
	// handover state; /oncall changes the state (Result.OnCall), Tick sends
	// the triage reminder to the on-call.
	Rotation    Rotation
	OnCallState OnCallState
}

// Result is what Apply decided.
type Result struct {
	Incident   Incident     // the incident after the message (unchanged unless Applied)
	Actions    []Action     // mail to send, in order
	Receipt    Receipt      // for the signer, whatever happened (empty when the text held no commands)
	Applied    bool         // the commands were applied, all of them
	RoundRobin string       // the Fix Lead assigned round-robin, if any: the caller's next Env.LastLead
	OnCall     *OnCallState // the new on-call handover state when /oncall changed it: the caller persists it
}

// Apply runs the commands of one signed message against an incident: text is
// the verified text/plain part the signature covers. All commands apply, or
// none: on any error the incident comes back unchanged, no action is
// returned, and the receipt says why. A text without commands (discussion)
// returns an empty receipt and no error.
//
// In order, before anything applies, the message is refused when: a command
// is unknown or malformed (Parse); the signature was made more than 24 h
// before now or more than 5 min after it (threats.md E3); the text names an
// incident other than inc, apart from the ID of a /duplicate command; or the
// signer may not run one of the commands (Spec.WhoCanUse: role src may run
// everything; role associate, only while the incident is rated Low or None or
// is public, judged before the message; the incident's fix team, /set, /fixed,
// /status and /help; anyone else, distributors and reporters included,
// nothing). The caller keeps the replay cache (ReplayKey).
//
// Apply is pure: now is the time of processing.
func Apply(inc Incident, text string, by Signer, now time.Time, env Env) (Result, error) {
	now = now.UTC()
	res := Result{Incident: inc, Receipt: Receipt{Incident: inc.ID, Signer: by.Email, At: now}}
	refuse := func(err error) (Result, error) {
		res.Receipt.Refused = err.Error()
		return res, err
	}
	cmds, err := Parse(text)
	if err != nil {
		return refuse(err)
	}
	if len(cmds) == 0 {
		return res, nil
	}
	for _, c := range cmds {
		res.Receipt.Lines = append(res.Receipt.Lines, ReceiptLine{Line: c.Line, Command: c.String()})
	}
	if err := CheckSignatureTime(by.SignedAt, now); err != nil {
		return refuse(err)
	}
	if err := checkIDs(text, inc.ID, cmds); err != nil {
		return refuse(err)
	}
	for i, c := range cmds {
		if err := authorise(inc, c.Name, by); err != nil {
			res.Receipt.Lines[i].Err = err.Error()
			return refuse(&CommandError{Line: c.Line, Verb: c.Name, Err: err})
		}
	}
	m := &machine{inc: inc.clone(), by: by, now: now, env: env, cmds: cmds}
	for i, c := range cmds {
		what, changed, err := m.apply(i, c)
		if err != nil {
			res.Receipt.Lines[i].Err = err.Error()
			return refuse(&CommandError{Line: c.Line, Verb: c.Name, Err: err})
		}
		res.Receipt.Lines[i].Result = what
		if changed {
			m.changed = true
			m.inc.History = append(m.inc.History, Change{
				At: now, Fingerprint: by.Fingerprint, Email: by.Email, MessageID: env.MessageID,
				Command: c.String(), What: what,
			})
		}
	}
	if m.changed {
		m.inc.Updated = now
		m.inc.Version = SchemaVersion
	}
	res.Incident, res.Actions, res.Applied, res.RoundRobin = m.inc, m.actions, true, m.roundRobin
	if st := m.env.OnCallState; !st.equal(env.OnCallState) {
		res.OnCall = &st
	}
	res.Receipt.Applied = true
	return res, nil
}

// CheckSignatureTime refuses a signature created more than SignatureMaxAge
// before now or more than SignatureMaxSkew after it (threats.md E3).
func CheckSignatureTime(signedAt, now time.Time) error {
	if signedAt.Before(now.Add(-SignatureMaxAge)) {
		return argErr(ErrStaleSignature, "the signature was made %s, more than 24 h ago: sign the commands again", FormatInstant(signedAt))
	}
	if signedAt.After(now.Add(SignatureMaxSkew)) {
		return argErr(ErrFutureSignature, "the signature is dated %s, in the future: check your clock", FormatInstant(signedAt))
	}
	return nil
}

// ReplayKey is the replay-cache key of a signature: the hex SHA-256 of its
// packet bytes. The caller refuses a message whose key it has seen, and keeps
// each key until ReplayExpiry; past that, CheckSignatureTime refuses the
// signature anyway.
func ReplayKey(signature []byte) string {
	h := sha256.Sum256(signature)
	return hex.EncodeToString(h[:])
}

// ReplayExpiry is when a replay-cache entry for a signature made at signedAt
// may be dropped.
func ReplayExpiry(signedAt time.Time) time.Time {
	return signedAt.Add(SignatureMaxAge + SignatureMaxSkew + time.Hour)
}

var idToken = regexp.MustCompile(`(?i)\bSEC-[0-9]{4}-[0-9]{4,9}\b`)

// NamedIDs returns the incident IDs a text names, in order, upper-cased.
func NamedIDs(text string) []ID {
	var ids []ID
	for _, s := range idToken.FindAllString(text, -1) {
		ids = append(ids, ID(strings.ToUpper(s)))
	}
	return ids
}

// checkIDs refuses a signed text that names an incident other than the
// thread's (threats.md E3: a signed command cannot be replayed into another
// incident). The argument of /duplicate is the one other ID allowed.
func checkIDs(text string, id ID, cmds []Command) error {
	ok := map[ID]bool{id: true}
	for _, c := range cmds {
		if c.Name == "duplicate" {
			ok[ID(c.Args[0])] = true
		}
	}
	for _, n := range NamedIDs(text) {
		if !ok[n] {
			return argErr(ErrOtherIncident, "the signed text names %s, but this is %s: commands for another incident go to its own thread", n, id)
		}
	}
	return nil
}

// authorise decides whether by may run the named command on inc as it was
// before the message.
func authorise(inc Incident, name string, by Signer) error {
	spec, _ := lookupSpec(name)
	if by.Fingerprint == "" {
		return argErr(ErrNotAllowed, "unknown signer")
	}
	if by.has(RoleSRC) && spec.WhoCanUse&WhoSRC != 0 {
		return nil
	}
	if by.Email != "" && inc.HasFixTeamMember(by.Email) && spec.WhoCanUse&WhoFixTeam != 0 {
		return nil
	}
	if by.has(RoleAssociate) && spec.WhoCanUse&WhoAssociate != 0 {
		if s := inc.Severity(); inc.Public || s == SeverityLow || s == SeverityNone {
			return nil
		}
		return argErr(ErrNotAllowed, "associates act only on incidents rated Low (or None) or public; this one is rated %s", inc.Severity())
	}
	return argErr(ErrNotAllowed, "you may not run /%s on this incident (who may: %s)", name, spec.WhoCanUse)
}

// machine applies one message's commands to a working copy of the incident.
type machine struct {
	inc        Incident
	by         Signer
	now        time.Time
	env        Env
	cmds       []Command
	actions    []Action
	changed    bool
	roundRobin string
}

func (m *machine) emit(a ...Action) { m.actions = append(m.actions, a...) }

func (m *machine) reporter(template string, kv ...string) {
	f := map[string]string{"id": string(m.inc.ID)}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	m.emit(ReporterMail{Template: template, Fields: f})
}

// inPhase guards a command to some phases.
func (m *machine) inPhase(name string, ps ...Phase) error {
	for _, p := range ps {
		if m.inc.Phase == p {
			return nil
		}
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.String())
	}
	return argErr(ErrPhase, "the incident is in phase %s; /%s works in %s", m.inc.Phase, name, orList(names))
}

func (m *machine) open(name string) error {
	if m.inc.Phase == PhaseClosed {
		return argErr(ErrPhase, "the incident is closed; /reopen it first")
	}
	return nil
}

func (m *machine) unlocked() error {
	if m.inc.Approved {
		return argErr(ErrLocked, "the advisory was approved %s and is locked: send /approve withdraw first, and /approve again after the change", FormatInstant(m.inc.ApprovedAt))
	}
	return nil
}

// closeAs ends the incident.
func (m *machine) closeAs(r Resolution) string {
	from := m.inc.Phase
	if from == PhaseTriage && m.inc.TriagedAt.IsZero() {
		m.inc.TriagedAt = m.now
	}
	m.inc.Phase, m.inc.Resolution, m.inc.ClosedAt = PhaseClosed, r, m.now
	return fmt.Sprintf("phase %s → closed (%s)", from, r)
}

// apply runs one command; it returns what changed, for the receipt and the
// history, and whether anything did.
func (m *machine) apply(i int, c Command) (string, bool, error) {
	inc := &m.inc
	arg := func(n int) string {
		if n < len(c.Args) {
			return c.Args[n]
		}
		return ""
	}
	switch c.Name {
	case "accept":
		if err := m.inPhase("accept", PhaseTriage); err != nil {
			return "", false, err
		}
		how := "already Fix Lead"
		if inc.FixLead == "" && !m.later(i, "lead") {
			lead := nextLead(m.env.SRC, m.env.LastLead)
			if lead == "" {
				return "", false, argErr(ErrGuard, "no SRC member to assign round-robin: name a Fix Lead with /lead ADDR")
			}
			inc.FixLead, m.roundRobin, how = lead, lead, "round-robin"
		} else if inc.FixLead == "" {
			how = "named by /lead below"
		}
		inc.Phase, inc.AcceptedAt = PhaseFix, m.now
		if inc.TriagedAt.IsZero() {
			inc.TriagedAt = m.now
		}
		m.reporter("accepted")
		if inc.FixLead == "" {
			return "phase triage → fix; Fix Lead " + how + "; reporter told", true, nil
		}
		return fmt.Sprintf("phase triage → fix; Fix Lead %s (%s); reporter told", inc.FixLead, how), true, nil

	case "reject":
		if err := m.inPhase("reject", PhaseTriage, PhaseFix); err != nil {
			return "", false, err
		}
		r := ResolutionNotAVulnerability
		if arg(0) == "out-of-scope" {
			r = ResolutionOutOfScope
		}
		what := m.closeAs(r)
		for _, rr := range rejectReasons {
			if rr.reason == arg(0) {
				m.reporter(rr.template)
			}
		}
		return what + "; canned reply " + arg(0) + " to the reporter", true, nil

	case "duplicate":
		if err := m.inPhase("duplicate", PhaseTriage, PhaseFix); err != nil {
			return "", false, err
		}
		if ID(arg(0)) == inc.ID {
			return "", false, argErr(ErrGuard, "an incident cannot duplicate itself")
		}
		inc.DuplicateOf = ID(arg(0))
		what := m.closeAs(ResolutionDuplicate)
		m.reporter("duplicate")
		return what + " of " + arg(0) + "; reporter told it is already known", true, nil

	case "handoff":
		if err := m.inPhase("handoff", PhaseTriage, PhaseFix); err != nil {
			return "", false, err
		}
		inc.HandedOffTo = arg(0)
		what := m.closeAs(ResolutionHandedOff)
		m.reporter("handoff", "contact", arg(0))
		return what + " to " + arg(0) + "; reporter told whom to contact", true, nil

	case "lead":
		if err := m.open("lead"); err != nil {
			return "", false, err
		}
		lead := arg(0)
		if lead == "me" {
			lead = strings.ToLower(m.by.Email)
			if lead == "" || !(m.by.has(RoleSRC) || m.by.has(RoleAssociate)) {
				return "", false, argErr(ErrGuard, "only a committee member can be Fix Lead")
			}
		} else if !containsFold(m.env.SRC, lead) {
			return "", false, argErr(ErrGuard, "%s is not an SRC member", lead)
		}
		if strings.EqualFold(inc.FixLead, lead) {
			return "Fix Lead already " + lead, false, nil
		}
		was := inc.FixLead
		inc.FixLead = lead
		if was == "" {
			return "Fix Lead " + lead, true, nil
		}
		return fmt.Sprintf("Fix Lead %s (was %s)", lead, was), true, nil

	case "fixteam":
		if err := m.open("fixteam"); err != nil {
			return "", false, err
		}
		var done []string
		for _, a := range c.Args[1:] {
			if arg(0) == "add" {
				if !inc.HasFixTeamMember(a) {
					inc.FixTeam = append(inc.FixTeam, a)
					done = append(done, a)
				}
				continue
			}
			if !inc.HasFixTeamMember(a) {
				return "", false, argErr(ErrGuard, "%s is not on the fix team", a)
			}
			kept := inc.FixTeam[:0:0]
			for _, x := range inc.FixTeam {
				if !strings.EqualFold(x, a) {
					kept = append(kept, x)
				}
			}
			inc.FixTeam = kept
			done = append(done, a)
		}
		if len(done) == 0 {
			return "fix team unchanged: " + strings.Join(inc.FixTeam, ", "), false, nil
		}
		if len(inc.FixTeam) > 0 && inc.FixTeamAt.IsZero() {
			inc.FixTeamAt = m.now
		}
		team := strings.Join(inc.FixTeam, ", ")
		if team == "" {
			team = "nobody"
		}
		verb := "added"
		if arg(0) == "remove" {
			verb = "removed"
		}
		return fmt.Sprintf("fix team: %s %s; now %s", strings.Join(done, ", "), verb, team), true, nil

	case "cvss":
		if err := m.open("cvss"); err != nil {
			return "", false, err
		}
		if err := m.unlocked(); err != nil {
			return "", false, err
		}
		cv, err := ParseCVSS(arg(0))
		if err != nil {
			return "", false, err
		}
		inc.CVSSVector = cv.Vector
		what := fmt.Sprintf("CVSS %s: score %s, %s", cv.Vector, cv.ScoreText(), cv.Severity())
		if inc.SeverityOverride != SeverityUnset {
			what += fmt.Sprintf("; the override keeps the severity at %s", inc.SeverityOverride)
		}
		return what, true, nil

	case "severity":
		if err := m.open("severity"); err != nil {
			return "", false, err
		}
		if err := m.unlocked(); err != nil {
			return "", false, err
		}
		if arg(0) == "auto" {
			inc.SeverityOverride = SeverityUnset
			return "severity override removed; severity " + inc.Severity().String(), true, nil
		}
		s, _ := ParseSeverity(arg(0))
		inc.SeverityOverride = s
		if cv, ok := inc.CVSS(); ok && cv.Severity() != s {
			return fmt.Sprintf("severity %s (override; CVSS %s says %s)", s, cv.ScoreText(), cv.Severity()), true, nil
		}
		return "severity " + s.String(), true, nil

	case "cve":
		if err := m.open("cve"); err != nil {
			return "", false, err
		}
		if err := m.unlocked(); err != nil {
			return "", false, err
		}
		inc.CVEs = append([]string(nil), c.Args...)
		return "CVE " + strings.Join(c.Args, ", "), true, nil

	case "set":
		if err := m.open("set"); err != nil {
			return "", false, err
		}
		if err := m.unlocked(); err != nil {
			return "", false, err
		}
		f, _ := lookupField(arg(0))
		p := f.ptr(&inc.Advisory)
		if *p == c.Value {
			return f.name + " unchanged", false, nil
		}
		*p = c.Value
		return setResult(f.name, c.Value), true, nil

	case "fixed":
		if err := m.inPhase("fixed", PhaseFix, PhaseEmbargo); err != nil {
			return "", false, err
		}
		if !inc.FixedAt.IsZero() {
			return "already marked fixed " + FormatInstant(inc.FixedAt), false, nil
		}
		inc.FixedAt = m.now
		m.reporter("fixed")
		return "fix ready; reporter told", true, nil

	case "disclose":
		return m.disclose(c)

	case "notify":
		return m.notify()

	case "approve":
		if err := m.inPhase("approve", PhaseFix, PhaseEmbargo); err != nil {
			return "", false, err
		}
		if arg(0) == "withdraw" {
			if !inc.Approved {
				return "the advisory was not approved", false, nil
			}
			inc.Approved = false
			return "approval withdrawn: the advisory may change; approve it again by T-24 h or the release is held", true, nil
		}
		if missing := m.missingForApproval(); len(missing) > 0 {
			return "", false, argErr(ErrGuard, "the advisory lacks %s", strings.Join(missing, ", "))
		}
		if inc.Approved {
			return "already approved " + FormatInstant(inc.ApprovedAt), false, nil
		}
		inc.Approved, inc.ApprovedAt = true, m.now
		return "advisory approved and locked", true, nil

	case "public":
		if err := m.open("public"); err != nil {
			return "", false, err
		}
		if inc.Public {
			return "already public", false, nil
		}
		inc.Public = true
		return "marked public: every deadline is now ASAP; no 7-day notice rule", true, nil

	case "embargo-break":
		if err := m.inPhase("embargo-break", PhaseFix, PhaseEmbargo); err != nil {
			return "", false, err
		}
		if inc.EmbargoBroken {
			return "embargo already recorded as broken", false, nil
		}
		inc.EmbargoBroken = true
		m.emit(AlertSRC{Template: "embargo-break", Fields: map[string]string{"id": string(inc.ID), "by": m.by.Email}})
		return "embargo broken: every deadline is now ASAP; SRC alerted; pull T in with /disclose", true, nil

	case "defer":
		if err := m.inPhase("defer", PhaseFix, PhaseEmbargo); err != nil {
			return "", false, err
		}
		if s := inc.Severity(); s != SeverityLow && s != SeverityNone {
			return "", false, argErr(ErrGuard, "only a Low (or None) incident may be deferred; this one is rated %s", s)
		}
		if inc.Deferred {
			return "already deferred", false, nil
		}
		inc.Deferred = true
		return "deferred (low severity: next patch release)", true, nil

	case "reply":
		m.reporter("reply", "text", c.Value)
		return fmt.Sprintf("reply sent to the reporter (%d lines)", strings.Count(c.Value, "\n")+1), true, nil

	case "retro":
		if err := m.inPhase("retro", PhaseDisclosed); err != nil {
			return "", false, err
		}
		inc.RetroAt = m.now
		return "retrospective recorded; " + m.closeAs(ResolutionFixed), true, nil

	case "close":
		if inc.Phase == PhaseEmbargo {
			return "", false, argErr(ErrPhase, "the embargo is running (T %s): /disclose now, or withdraw the date, before closing", FormatInstant(inc.T))
		}
		if err := m.inPhase("close", PhaseTriage, PhaseFix, PhaseDisclosed); err != nil {
			return "", false, err
		}
		r := ResolutionFixed
		if arg(0) != "" {
			r, _ = ParseResolution(arg(0))
		} else if inc.Phase != PhaseDisclosed {
			return "", false, argErr(ErrGuard, "give a RESOLUTION: the incident was not disclosed")
		}
		return m.closeAs(r), true, nil

	case "reopen":
		if err := m.inPhase("reopen", PhaseClosed); err != nil {
			return "", false, err
		}
		switch {
		case !inc.DisclosedAt.IsZero():
			inc.Phase = PhaseDisclosed
		case !inc.AcceptedAt.IsZero():
			inc.Phase = PhaseFix
		default:
			inc.Phase = PhaseTriage
		}
		was := inc.Resolution
		inc.Resolution, inc.ClosedAt, inc.DuplicateOf, inc.HandedOffTo = ResolutionUnset, time.Time{}, "", ""
		return fmt.Sprintf("reopened (was %s): phase %s", was, inc.Phase), true, nil

	case "oncall":
		return m.oncall(c)

	case "status":
		m.emit(StatusReply{Text: StatusText(*inc, m.now, m.env.Holidays)})
		return "status sent", false, nil

	case "help":
		m.emit(HelpReply{Text: HelpText(arg(0))})
		return "help sent", false, nil
	}
	return "", false, argErr(ErrUnknownCommand, "unknown command")
}

// later reports whether a command named name follows command i.
func (m *machine) later(i int, name string) bool {
	for _, c := range m.cmds[i+1:] {
		if c.Name == name {
			return true
		}
	}
	return false
}

func (m *machine) missingForApproval() []string {
	a := m.inc.Advisory
	var missing []string
	for _, f := range []struct{ name, v string }{{"summary", a.Summary}, {"actor", a.Actor}, {"impact", a.Impact}, {"affected", a.Affected}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if m.inc.Severity() == SeverityUnset {
		missing = append(missing, "a severity (/cvss or /severity)")
	}
	if a.Fixed == "" && a.Mitigation == "" {
		missing = append(missing, "fixed versions or a mitigation")
	}
	return missing
}

// noticeRule enforces the 7-day rule: with a CVE, T at least NoticeBefore after
// the distributor notice, or after now when none was sent; not for a public
// incident, a broken embargo, or an emergency.
func (m *machine) noticeRule(t time.Time, emergency bool) error {
	if len(m.inc.CVEs) == 0 || m.inc.ASAP() || emergency {
		return nil
	}
	base, what := m.now, "now (no distributor notice yet)"
	if !m.inc.NotifiedAt.IsZero() {
		base, what = m.inc.NotifiedAt, "the distributor notice of "+FormatInstant(m.inc.NotifiedAt)
	}
	if t.Before(base.Add(NoticeBefore)) {
		return argErr(ErrNoticeRule, "with a CVE, T must be at least 7 days after %s: the earliest slot is %s (or say emergency, or mark the incident /public)",
			what, FormatInstant(NextSlot(base.Add(NoticeBefore), m.env.Holidays)))
	}
	return nil
}

func (m *machine) disclose(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase("disclose", PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	emergency := len(c.Args) > 1 && c.Args[1] == "emergency"
	if c.Args[0] == "now" {
		if !inc.Approved {
			return "", false, argErr(ErrGuard, "the advisory is not approved: /approve it first (in the same message if need be)")
		}
		var what []string
		if !inc.NotifiedAt.IsZero() {
			m.emit(EmbargoLifted{At: m.now})
			what = append(what, "distributors told the embargo is lifted")
		}
		m.emit(Release{At: m.now})
		inc.T, inc.DisclosedAt, inc.Phase = m.now, m.now, PhaseDisclosed
		if emergency {
			inc.Emergency = true
		}
		m.reporter("disclosed", "t", FormatInstant(m.now), "cve", strings.Join(inc.CVEs, ", "), "summary", inc.Advisory.Summary)
		what = append(what, "advisory released "+FormatInstant(m.now), "phase → disclosed", "reporter told")
		return strings.Join(what, "; "), true, nil
	}
	asked, err := ParseInstant(c.Args[0])
	if err != nil {
		return "", false, err
	}
	if asked.Before(m.now) {
		return "", false, argErr(ErrPast, "%s is in the past (now is %s)", FormatInstant(asked), FormatInstant(m.now))
	}
	t := NextSlot(asked, m.env.Holidays)
	if t.After(m.now.Add(MaxEmbargo)) {
		return "", false, argErr(ErrGuard, "T would be %s, more than 90 days ahead", FormatInstant(t))
	}
	if err := m.noticeRule(t, emergency); err != nil {
		return "", false, err
	}
	what := "T = " + FormatInstant(t)
	if !t.Equal(asked) {
		what += " (asked " + FormatInstant(asked) + "; T is 16:00 UTC on the next Monday–Thursday that is not a holiday)"
	}
	if emergency {
		what += "; emergency: no 7-day rule"
	}
	if t.Equal(inc.T) && emergency == inc.Emergency {
		return what + "; unchanged", false, nil
	}
	prev := inc.T
	inc.T, inc.Emergency = t, emergency
	if !t.Equal(prev) { // a new T needs its own final notice, and may release
		inc.FinalNoticeAt, inc.HeldAt = time.Time{}, time.Time{}
	}
	if !inc.NotifiedAt.IsZero() && !t.Equal(inc.NotifiedT) {
		m.emit(DistributorNotice{T: t, Previous: inc.NotifiedT, Renotify: true})
		what += "; distributors re-notified (they had " + FormatInstant(inc.NotifiedT) + ")"
		inc.NotifiedT = t
	}
	p := ""
	if !prev.IsZero() {
		p = FormatInstant(prev)
	}
	m.reporter("date", "t", FormatInstant(t), "previous_t", p)
	return what + "; reporter told", true, nil
}

func (m *machine) notify() (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase("notify", PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	var missing []string
	if inc.Severity() == SeverityUnset {
		missing = append(missing, "a severity (/cvss or /severity)")
	}
	if inc.FixedAt.IsZero() && inc.Advisory.Mitigation == "" {
		missing = append(missing, "a fix (/fixed) or a mitigation (/set mitigation)")
	}
	if inc.T.IsZero() {
		missing = append(missing, "T (/disclose DATE)")
	}
	if len(missing) > 0 {
		return "", false, argErr(ErrGuard, "the notice needs %s", strings.Join(missing, ", "))
	}
	if !inc.T.After(m.now) {
		return "", false, argErr(ErrPast, "T %s has passed: set a new one with /disclose", FormatInstant(inc.T))
	}
	if inc.NotifiedAt.IsZero() {
		if err := m.noticeRule(inc.T, inc.Emergency); err != nil {
			return "", false, err
		}
		inc.NotifiedAt, inc.NotifiedT, inc.Phase = m.now, inc.T, PhaseEmbargo
		m.emit(DistributorNotice{T: inc.T})
		return "distributors notified of T = " + FormatInstant(inc.T) + "; phase fix → embargo", true, nil
	}
	m.emit(DistributorNotice{T: inc.T, Previous: inc.NotifiedT, Renotify: true})
	inc.NotifiedT = inc.T
	return "distributors notified again of T = " + FormatInstant(inc.T), true, nil
}

// nextLead is the member after last in the round-robin order, or the first.
func nextLead(src []string, last string) string {
	if len(src) == 0 {
		return ""
	}
	for i, a := range src {
		if strings.EqualFold(a, last) {
			return strings.ToLower(src[(i+1)%len(src)])
		}
	}
	return strings.ToLower(src[0])
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
