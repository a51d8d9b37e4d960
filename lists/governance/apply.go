package governance

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

// RosterThread is the receipt's subject for roster commands sent outside a
// proposal's thread.
const RosterThread workflow.ID = "roster"

// Request is one signed message whose commands are roster commands
// (workflow.Classify gave ScopeRoster), or any signed message in a
// proposal's thread.
type Request struct {
	Text   string          // the verified text/plain part the signature covers
	Signer workflow.Signer // Fingerprint and SignedAt of the verified signature (SignerOf resolves the rest)
	// Thread is the proposal whose thread the message came in
	// (security+GOV-YYYY-NNNN@), "" for the security list alone or an
	// incident's thread.
	Thread    string
	Keys      []KeyVerdict // the public keys attached (application/pgp-keys), checked by the caller
	MessageID string
	RootMsg   string // a fresh random Message-ID, anchoring the thread of a proposal this message opens
}

// Result is what a governance call decided.
type Result struct {
	State   State
	Actions []Action         // in order; empty unless Applied (Submit: the refusal mail)
	Receipt workflow.Receipt // for the signer (Apply); empty when the text held no commands
	Applied bool             // every command applied (Apply), or the state changed (Tick, Submit)
	Roster  bool             // the effective roster changed: rebuild it (Members, PinnedKeys)
}

// Apply runs the roster commands of one signed message: all apply or none,
// like workflow.Apply. It refuses the message when a command is malformed or
// is an incident command; the signature is more than 24 h old (workflow.
// CheckSignatureTime); the signer's key is not on the effective roster; in a
// proposal's thread, the signed text names another proposal; or the signer
// may not run a command (role src for everything, except that any member
// may /member remove me, propose /member key me, and ask /help).
//
// Votes: the first signed /member add|remove|key opens a proposal
// (GOV-YYYY-NNNN) and counts as its first approval; the identical command
// signed by another SRC member, or /admit in the proposal's thread, adds an
// approval; /deny there ends it. A change passes with Config.Quorum distinct
// SRC approvals. Apply is pure: now is the time of processing.
func Apply(st State, req Request, now time.Time, cfg Config) (Result, error) {
	now = now.UTC()
	cfg = cfg.withDefaults()
	rid := RosterThread
	if req.Thread != "" {
		rid = workflow.ID(strings.ToUpper(req.Thread))
	}
	res := Result{State: st, Receipt: workflow.Receipt{Incident: rid, Signer: req.Signer.Email, At: now}}
	refuse := func(err error) (Result, error) {
		res.Receipt.Refused = err.Error()
		return res, err
	}
	cmds, err := workflow.Parse(req.Text)
	if err != nil {
		return refuse(err)
	}
	if len(cmds) == 0 {
		return res, nil
	}
	for _, c := range cmds {
		res.Receipt.Lines = append(res.Receipt.Lines, workflow.ReceiptLine{Line: c.Line, Command: c.String()})
	}
	by, ok := SignerOf(cfg.File, st, req.Signer.Fingerprint, req.Signer.SignedAt)
	if !ok {
		return refuse(argErr(workflow.ErrNotAllowed, "the signing key is not pinned on the roster"))
	}
	res.Receipt.Signer = by.Email
	if err := workflow.CheckSignatureTime(by.SignedAt, now); err != nil {
		return refuse(err)
	}
	if err := checkMessage(req, cmds); err != nil {
		return refuse(err)
	}
	g := &gov{st: st.clone(), cfg: cfg, now: now, by: by, msgID: req.MessageID, rootMsg: req.RootMsg, thread: string(rid), keys: req.Keys}
	if req.Thread == "" {
		g.thread = ""
	}
	for i, c := range cmds {
		if err := g.authorise(c); err != nil {
			res.Receipt.Lines[i].Err = err.Error()
			return refuse(&workflow.CommandError{Line: c.Line, Verb: c.Name, Err: err})
		}
	}
	for i, c := range cmds {
		what, err := g.run(c)
		if err != nil {
			res.Receipt.Lines[i].Err = err.Error()
			return refuse(&workflow.CommandError{Line: c.Line, Verb: c.Name, Err: err})
		}
		res.Receipt.Lines[i].Result = what
	}
	g.st.Version = SchemaVersion
	res.State, res.Actions, res.Applied, res.Roster = g.st, g.actions, true, g.roster
	res.Receipt.Applied = true
	return res, nil
}

// checkMessage refuses what no command of the message may do: incident
// commands, a text naming another proposal than the thread's (docs/
// threat-model.md E3: a signed /admit cannot be carried into another
// proposal's thread), and more than one command that needs the attached key.
func checkMessage(req Request, cmds []workflow.Command) error {
	needKey := 0
	for _, c := range cmds {
		if workflow.CommandScope(c.Name) == workflow.ScopeIncident {
			return &workflow.CommandError{Line: c.Line, Verb: c.Name, Err: argErr(workflow.ErrScope,
				"/%s is an incident command: send it in the incident's thread, in a message without roster commands", c.Name)}
		}
		if c.Name == "member" && (c.Args[0] == "add" || c.Args[0] == "key") {
			needKey++
		}
	}
	if needKey > 1 {
		return argErr(workflow.ErrSyntax, "one /member add or /member key per message: each needs its own attached key")
	}
	if req.Thread != "" {
		for _, id := range workflow.NamedProposals(req.Text) {
			if !strings.EqualFold(id, req.Thread) {
				return argErr(ErrOtherProposal, "the signed text names %s, but this is the thread of %s: send it in the thread of %s", id, strings.ToUpper(req.Thread), id)
			}
		}
	}
	return nil
}

// self reports whether addr ("me" or an address) is the signer.
func (g *gov) self(addr string) bool { return addr == "me" || strings.EqualFold(addr, g.by.Email) }

func (g *gov) signerIsSRC() bool { return slices.Contains(g.by.Roles, workflow.RoleSRC) }

// authorise decides whether the signer may run c (before any command runs).
func (g *gov) authorise(c workflow.Command) error {
	if g.signerIsSRC() {
		return nil
	}
	switch {
	case c.Name == "help":
		return nil
	case c.Name == "member" && (c.Args[0] == "remove" || c.Args[0] == "key") && g.self(c.Args[1]):
		return nil
	}
	return argErr(workflow.ErrNotAllowed, "only SRC members may run /%s (a member may /member remove me or propose /member key me)", c.Name)
}

func (g *gov) run(c workflow.Command) (string, error) {
	switch c.Name {
	case "member":
		switch c.Args[0] {
		case "add":
			return g.memberAdd(c)
		case "remove":
			return g.memberRemove(c)
		case "key":
			return g.memberKey(c)
		case "list":
			g.emit(Reply{What: "member-list", Text: ListText(g.cfg.File, g.st, g.cfg.KeyStates, g.now)})
			return "roster sent", nil
		}
	case "admit":
		p, err := g.threadProposal(c)
		if err != nil {
			return "", err
		}
		return g.approve(p, false)
	case "deny":
		return g.denyCmd(c)
	case "status":
		g.emit(Reply{What: "status", Text: g.statusText()})
		return "status sent", nil
	case "help":
		name := ""
		if len(c.Args) > 0 {
			name = c.Args[0]
		}
		g.emit(Reply{What: "help", Text: workflow.HelpText(name)})
		return "help sent", nil
	}
	return "", argErr(workflow.ErrUnknownCommand, "/%s is not a roster command", c.Name)
}

// key returns the one key attached to the message.
func (g *gov) key() (KeyVerdict, error) {
	switch len(g.keys) {
	case 0:
		return KeyVerdict{}, argErr(ErrKey, "attach the member's public key to the signed message (application/pgp-keys)")
	case 1:
		return g.keys[0], nil
	}
	return KeyVerdict{}, argErr(ErrKey, "%d keys are attached: attach exactly one", len(g.keys))
}

// usableKey checks the attached key for addr: no problems, and pinned to
// nobody else on the roster (one key, one member).
func (g *gov) usableKey(addr string) (KeyVerdict, []string, error) {
	k, err := g.key()
	if err != nil {
		return k, nil, err
	}
	problems, warnings := k.check(addr, g.now)
	if len(problems) > 0 {
		return k, nil, argErr(ErrKey, "the attached key %s cannot be pinned: %s", k.Fingerprint, strings.Join(problems, "; "))
	}
	if other := pinnedFor(g.effective(), k.Fingerprint, addr); other != "" {
		return k, nil, argErr(ErrConflict, "the attached key %s is pinned for %s: one key, one member", k.Fingerprint, other)
	}
	return k, warnings, nil
}

// memberAdd runs /member add: a new member with the attached key, or new
// roles for a member (no key needed; an attached one must be theirs).
func (g *gov) memberAdd(c workflow.Command) (string, error) {
	addr, roles := c.Args[1], strings.Split(c.Args[2], ",")
	if cur, ok := lookup(g.effective(), addr); ok {
		if len(g.keys) > 0 {
			if k, err := g.key(); err != nil || !strings.EqualFold(cur.Fingerprint, k.Fingerprint) {
				return "", argErr(ErrConflict, "%s is a member with the key %s: change the key with /member key %s", addr, orNone(cur.Fingerprint), addr)
			}
		}
		if slices.Equal(cur.Roles, roles) {
			return fmt.Sprintf("%s is already a member with the roles %s; nothing to do", addr, c.Args[2]), nil
		}
		if err := g.srcGuard(cur); err != nil && !slices.Contains(roles, workflow.RoleSRC) {
			return "", err
		}
		return g.propose(Proposal{Kind: KindAdd, Command: c.String(), Email: addr, Roles: roles}, nil)
	}
	k, warnings, err := g.usableKey(addr)
	if err != nil {
		return "", err
	}
	return g.propose(Proposal{Kind: KindAdd, Command: c.String(), Email: addr, Roles: roles, Key: &k}, warnings)
}

func (g *gov) memberRemove(c workflow.Command) (string, error) {
	addr := c.Args[1]
	if addr == "me" {
		addr = g.by.Email
	}
	reason := ""
	if len(c.Args) > 2 {
		reason = c.Args[2]
	}
	cur, ok := lookup(g.effective(), addr)
	if !ok {
		return "", argErr(ErrConflict, "%s is not on the roster", addr)
	}
	if err := g.srcGuard(cur); err != nil {
		return "", err
	}
	if g.self(addr) {
		// Leaving needs no vote: the signature is the member's own pinned
		// key (docs/threat-model.md F2).
		p := g.open(Proposal{Kind: KindRemove, Command: "/member remove me", Email: cur.Email, Reason: reason})
		p.Status, p.Decided, p.Outcome = StatusPassed, g.now, "left: removed themself"
		g.remove(p, cur, map[string]string{"id": p.ID, "member": cur.Email, "how": p.Outcome, "at": workflow.FormatInstant(g.now)}, true)
		return fmt.Sprintf("you left the roster (%s); the SRC is told", p.ID), nil
	}
	return g.propose(Proposal{Kind: KindRemove, Command: "/member remove " + addr, Email: addr, Reason: reason}, nil)
}

func (g *gov) memberKey(c workflow.Command) (string, error) {
	addr := c.Args[1]
	if addr == "me" {
		addr = g.by.Email
	}
	cur, ok := lookup(g.effective(), addr)
	if !ok {
		return "", argErr(ErrConflict, "%s is not on the roster: add it with /member add", addr)
	}
	k, warnings, err := g.usableKey(addr)
	if err != nil {
		return "", err
	}
	if strings.EqualFold(cur.Fingerprint, k.Fingerprint) {
		return "the key " + k.Fingerprint + " is already pinned for " + addr + "; nothing to do", nil
	}
	return g.propose(Proposal{Kind: KindKey, Command: "/member key " + addr, Email: addr, Key: &k}, warnings)
}

// open records a new proposal and returns it.
func (g *gov) open(p Proposal) *Proposal {
	p.ID, p.Opened, p.OpenedBy, p.Status = g.st.nextID(g.now), g.now, g.by.Email, StatusOpen
	p.Deadline, p.RootMsg = g.now.Add(g.cfg.LazyConsensus), g.rootMsg
	g.st.Proposals = append(g.st.Proposals, p)
	return &g.st.Proposals[len(g.st.Proposals)-1]
}

// propose opens np, or counts the signature for the identical open one.
func (g *gov) propose(np Proposal, warnings []string) (string, error) {
	if p := g.st.openFor(np.Kind, np.Email); p != nil && !g.settle(p) {
		if !sameProposal(p, &np) {
			return "", argErr(ErrConflict, "%s is open for %s (%s): sign the identical command (with the same key), or /deny it in its thread first", p.ID, p.Email, p.Command)
		}
		return g.approve(p, false)
	}
	if g.cfg.Quorum > len(src(g.effective())) {
		return "", argErr(workflow.ErrGuard, "a roster change needs %d SRC approvals, but the SRC has %d member(s): lower [governance] quorum", g.cfg.Quorum, len(src(g.effective())))
	}
	p := g.open(np)
	what, err := g.approve(p, true)
	if err != nil || p.Status != StatusOpen {
		return what, err
	}
	if len(warnings) > 0 {
		what += "; note: " + strings.Join(warnings, "; ")
	}
	return p.ID + " opened: " + what, nil
}

func sameProposal(a, b *Proposal) bool {
	if !slices.Equal(a.Roles, b.Roles) {
		return false
	}
	if a.Key == nil || b.Key == nil {
		return a.Key == b.Key
	}
	return strings.EqualFold(a.Key.Fingerprint, b.Key.Fingerprint)
}

// threadProposal is the open proposal of the thread /admit or /deny came in.
func (g *gov) threadProposal(c workflow.Command) (*Proposal, error) {
	if g.thread == "" {
		return nil, argErr(workflow.ErrScope, "/%s works only in a proposal's thread (security+GOV-YYYY-NNNN@): reply to the proposal's message", c.Name)
	}
	if len(c.Args) > 0 {
		if id, ok := workflow.ParseProposalID(c.Args[0]); ok && id != g.thread {
			return nil, argErr(ErrOtherProposal, "/%s names %s, but this is the thread of %s", c.Name, id, g.thread)
		}
	}
	p := g.st.proposal(g.thread)
	if p == nil {
		return nil, argErr(ErrNoProposal, "%s is no proposal", g.thread)
	}
	if g.settle(p) {
		return nil, argErr(ErrNoProposal, "%s was decided %s: %s", p.ID, workflow.FormatInstant(p.Decided), p.Outcome)
	}
	// A signature made before the proposal existed cannot be meant for it.
	if g.by.SignedAt.Before(p.Opened.Add(-workflow.SignatureMaxSkew)) {
		return nil, argErr(workflow.ErrStaleSignature, "the signature was made %s, before %s opened (%s): sign again", workflow.FormatInstant(g.by.SignedAt), p.ID, workflow.FormatInstant(p.Opened))
	}
	return p, nil
}

// approve counts the signer's approval of p (opened: by this very
// signature) and decides it if it can.
func (g *gov) approve(p *Proposal, opened bool) (string, error) {
	if !g.signerIsSRC() {
		// A member proposing their own new key: the SRC decides.
		if opened {
			g.pendingNotice(p)
		}
		return g.awaiting(p), nil
	}
	if p.Kind == KindRemove && strings.EqualFold(p.Email, g.by.Email) {
		return "", argErr(workflow.ErrNotAllowed, "you cannot vote on your own removal: /member remove me leaves at once")
	}
	for _, v := range p.Approvals {
		if strings.EqualFold(v.Email, g.by.Email) || strings.EqualFold(v.Fingerprint, g.by.Fingerprint) {
			return "you already approved " + p.ID + "; " + g.awaiting(p), nil
		}
	}
	p.Approvals = append(p.Approvals, Vote{Email: g.by.Email, Fingerprint: g.by.Fingerprint, At: g.now, MessageID: g.msgID})
	if g.settle(p) {
		return p.ID + " " + p.Outcome, nil
	}
	g.pendingNotice(p)
	return "approval recorded; " + g.awaiting(p), nil
}

func (g *gov) denyCmd(c workflow.Command) (string, error) {
	p, err := g.threadProposal(c)
	if err != nil {
		return "", err
	}
	if strings.EqualFold(p.Email, g.by.Email) {
		return "", argErr(workflow.ErrNotAllowed, "you cannot deny a proposal about yourself")
	}
	g.deny(p, Vote{Email: g.by.Email, Fingerprint: g.by.Fingerprint, At: g.now, MessageID: g.msgID, Reason: c.Args[len(c.Args)-1]}, g.by.Email)
	tail := ""
	if p.Kind == KindApplication {
		tail = "; the applicant is told, with your reason"
	}
	return p.ID + " " + p.Outcome + tail, nil
}

// what names a proposal in a sentence.
func (p Proposal) what() string {
	if p.Kind == KindApplication {
		return "the distributor application of " + p.Email
	}
	return p.Command
}

// awaiting says what p still needs, for receipts and /status.
func (g *gov) awaiting(p *Proposal) string {
	have := g.counted(p)
	var others []string
	for _, s := range src(g.effective()) {
		if !strings.EqualFold(s, p.Email) || p.Kind != KindRemove {
			voted := false
			for _, v := range have {
				voted = voted || strings.EqualFold(v.Email, s)
			}
			if !voted {
				others = append(others, s)
			}
		}
	}
	s := fmt.Sprintf("%s has %d of %d SRC approvals; awaiting %s (/admit in its thread, or the identical signed command) before %s",
		p.ID, len(have), g.cfg.Quorum, strings.Join(others, ", "), workflow.FormatInstant(p.Deadline))
	if p.Kind == KindApplication {
		s += fmt.Sprintf("; with at least one approval and no /deny it passes by lazy consensus at %s", workflow.FormatInstant(p.Deadline))
	}
	return s
}

// pendingNotice tells the SRC a proposal awaits their signatures.
func (g *gov) pendingNotice(p *Proposal) {
	have := g.counted(p)
	var signed []string
	for _, v := range have {
		signed = append(signed, v.Email+" at "+workflow.FormatInstant(v.At))
	}
	var awaited []string
	for _, s := range src(g.effective()) {
		if !slices.ContainsFunc(have, func(v Vote) bool { return strings.EqualFold(v.Email, s) }) && !(p.Kind == KindRemove && strings.EqualFold(s, p.Email)) {
			awaited = append(awaited, s)
		}
	}
	how := "To approve, reply in the thread of " + p.ID + " with /admit, signed (or send the identical command, signed, with the same key attached); to object, /deny REASON. Without " +
		fmt.Sprint(g.cfg.Quorum) + " approvals by the deadline it lapses and nothing changes."
	if p.Kind == KindApplication {
		how = "To approve, reply in the thread of " + p.ID + " with /admit, signed; to object, /deny REASON (the applicant is told the reason). With at least one approval and no /deny it passes by lazy consensus at the deadline."
	}
	g.emit(Mail{Template: "two-person-pending", Subject: "Signature awaited", Thread: p.ID, ToSRC: true, Fields: map[string]string{
		"id": p.ID, "command": p.what(), "by": g.by.Email, "signed": orNone(strings.Join(signed, ", ")),
		"needed": fmt.Sprint(g.cfg.Quorum - len(have)), "quorum": fmt.Sprint(g.cfg.Quorum), "awaited": strings.Join(awaited, ", "),
		"expires": workflow.FormatInstant(p.Deadline),
		"how":     how,
	}})
}

// summary is one line about a proposal.
func (p Proposal) summary() string {
	s := fmt.Sprintf("%s  %s  opened %s by %s, %d approval(s)", p.ID, p.what(), workflow.FormatInstant(p.Opened), p.OpenedBy, len(p.Approvals))
	if p.Status == StatusOpen {
		return s + ", deadline " + workflow.FormatInstant(p.Deadline)
	}
	return s + "; " + p.Outcome
}

// statusText is /status: the thread's proposal, or every open one.
func (g *gov) statusText() string {
	if g.thread != "" {
		if p := g.st.proposal(g.thread); p != nil {
			s := p.summary() + "\n"
			if p.Status == StatusOpen {
				s += g.awaiting(p) + "\n"
			}
			return s
		}
	}
	open := g.st.Open()
	if len(open) == 0 {
		return "No roster proposal is open.\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Open roster proposals as of %s (quorum %d):\n", workflow.FormatInstant(g.now), g.cfg.Quorum)
	for _, p := range open {
		b.WriteString("  " + p.summary() + "\n")
	}
	return b.String()
}
