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

	// Quorum is how many distinct SRC members must sign an irreversible
	// command (/disclose now, /embargo-break, /public) before it runs
	// (approval.go). The daemon sets it from [governance] quorum, whose
	// default is 2; 0 (unset) and 1 mean one signature: the rule is off.
	Quorum int

	// Announce is set when the announce list can send: its key and its
	// fan-out are configured. /preannounce is refused without it.
	Announce bool
	// Distributors are the addresses a distributor notice made now
	// reaches: the caller sends it to exactly these (role distributor,
	// with a usable pinned key). A message or tick that sends the notice
	// records them in Incident.Distributors (distributors.go): only they
	// may answer it with /affected.
	Distributors []string
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
// before now or more than 5 min after it (docs/threat-model.md E3); the text names an
// incident other than inc, apart from the ID of a /duplicate command; or the
// signer may not run one of the commands (Spec.WhoCanUse: role src may run
// everything; role associate, only while the incident is rated Low or None or
// is public, judged before the message; the incident's fix team, /set, /fixed,
// /status and /help; anyone else, distributors and reporters included,
// nothing). The caller keeps the replay cache (ReplayKey). A message with
// roster commands (/member, /admit, /deny) is refused: those go to the
// governance core (Classify).
//
// The irreversible commands (/disclose now, /embargo-break, /public) run
// only once Env.Quorum distinct SRC members have signed them (approval.go);
// until then the message applies with the signature recorded as a pending
// approval, and the receipt says whose signature is awaited.
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
	if scope, err := Classify(cmds); err != nil {
		return refuse(err)
	} else if scope == ScopeRoster {
		c := cmds[0]
		for _, x := range cmds {
			if CommandScope(x.Name) == ScopeRoster {
				c = x
				break
			}
		}
		return refuse(&CommandError{Line: c.Line, Verb: c.Name, Err: argErr(ErrScope, "roster commands are not incident commands: send them signed in a message of their own")})
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
	m := &machine{inc: inc.clone(), before: inc, by: by, now: now, env: env, cmds: cmds}
	for i, c := range cmds {
		what, changed, err := m.run(i, c)
		if err != nil {
			res.Receipt.Lines[i].Err = err.Error()
			return refuse(&CommandError{Line: c.Line, Verb: c.Name, Err: err})
		}
		res.Receipt.Lines[i].Result, res.Receipt.Lines[i].Pending, m.waiting = what, m.waiting, false
		if changed {
			m.changed = true
			m.inc.History = append(m.inc.History, Change{
				At: now, Fingerprint: by.Fingerprint, Email: by.Email, MessageID: env.MessageID,
				Command: c.String(), What: what,
			})
		}
	}
	if noticeIn(m.actions) && recordNotified(&m.inc, env.Distributors, now) {
		m.changed = true
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
// before now or more than SignatureMaxSkew after it (docs/threat-model.md E3).
func CheckSignatureTime(signedAt, now time.Time) error {
	if signedAt.Before(now.Add(-SignatureMaxAge)) {
		return argErr(ErrStaleSignature, "the signature was made %s, more than 24 h ago: sign the commands again", FormatInstant(signedAt))
	}
	if signedAt.After(now.Add(SignatureMaxSkew)) {
		return argErr(ErrFutureSignature, "the signature is dated %s, in the future: check your clock", FormatInstant(signedAt))
	}
	return nil
}

// ReplayKey is the replay-cache key of a signature: the hex SHA-256 of the
// bytes that identify it (the daemon passes the signer's fingerprint, the
// signature's creation time and the signed bytes, so one signature over the
// same text counts once). The caller refuses a message whose key it has
// seen, and keeps each key until ReplayExpiry; past that, CheckSignatureTime
// refuses the signature anyway.
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
// thread's (docs/threat-model.md E3: a signed command cannot be replayed into another
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
	// A distributor the notice reached may answer it, and do nothing else;
	// one it did not reach is told what anyone would be.
	if by.has(RoleDistributor) && inc.Notified(by.Email) {
		if spec.WhoCanUse&WhoDistributor != 0 {
			return nil
		}
		return argErr(ErrNotAllowed, "distributors may run /affected alone; /%s is the SRC's", name)
	}
	return argErr(ErrNotAllowed, "you may not run /%s on this incident (who may: %s)", name, spec.WhoCanUse)
}

// machine applies one message's commands to a working copy of the incident.
type machine struct {
	inc        Incident
	before     Incident // the incident as the message found it: read only
	by         Signer
	now        time.Time
	env        Env
	cmds       []Command
	at         int // the index in cmds of the command running
	actions    []Action
	changed    bool
	roundRobin string
	waiting    bool // the running command awaits more signatures (approval.go)
}

func (m *machine) emit(a ...Action) { m.actions = append(m.actions, a...) }

func (m *machine) reporter(template string, kv ...string) {
	f := map[string]string{"id": string(m.inc.ID)}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	m.emit(ReporterMail{Template: template, Fields: f})
}

// inPhase guards the running command to some phases.
func (m *machine) inPhase(ps ...Phase) error {
	for _, p := range ps {
		if m.inc.Phase == p {
			return nil
		}
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.String())
	}
	return argErr(ErrPhase, "the incident is in phase %s; /%s works in %s", m.inc.Phase, m.cmds[m.at].Name, orList(names))
}

// open guards a command to an incident that is not closed.
func (m *machine) open() error {
	if m.inc.Phase == PhaseClosed {
		return argErr(ErrPhase, "the incident is closed; /reopen it first")
	}
	return nil
}

// editable guards the advisory: the incident is open and the advisory not
// approved (the lock of /approve).
func (m *machine) editable() error {
	if err := m.open(); err != nil {
		return err
	}
	if m.inc.Approved {
		return argErr(ErrLocked, "the advisory was approved %s and is locked: send /approve withdraw first, and /approve again after the change", FormatInstant(m.inc.ApprovedAt))
	}
	return nil
}

// run applies command i through its table entry (Spec.apply); it returns
// what changed, for the receipt and the history, and whether anything did.
func (m *machine) run(i int, c Command) (string, bool, error) {
	spec, ok := lookupSpec(c.Name)
	if !ok || spec.apply == nil {
		return "", false, argErr(ErrUnknownCommand, "unknown command")
	}
	m.at = i
	return spec.apply(m, c)
}

// arg is the command's nth argument, or "".
func (c Command) arg(n int) string {
	if n < len(c.Args) {
		return c.Args[n]
	}
	return ""
}

// The commands that answer in the thread and change nothing of the incident.

func (m *machine) reply(c Command) (string, bool, error) {
	m.reporter("reply", "text", c.Value)
	return fmt.Sprintf("reply sent to the reporter (%d lines)", strings.Count(c.Value, "\n")+1), true, nil
}

func (m *machine) status(Command) (string, bool, error) {
	m.emit(StatusReply{Text: statusText(m.inc, m.now, m.env)})
	return "status sent", false, nil
}

func (m *machine) help(c Command) (string, bool, error) {
	m.emit(HelpReply{Text: HelpText(c.arg(0))})
	return "help sent", false, nil
}

// later reports whether a command named name follows the running one.
func (m *machine) later(name string) bool {
	for _, c := range m.cmds[m.at+1:] {
		if c.Name == name {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
