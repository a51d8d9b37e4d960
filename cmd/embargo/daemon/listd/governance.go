package listd

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// Governance by mail (docs/design.md §1; docs/process.md §5, §7.9;
// docs/threat-model.md D5, E3, E4, F2): the pure core is lists/governance;
// this file carries its calls into the message's transaction and turns its
// results into mail. Three ways in:
//
//   - a distributor application, mail to distributors+apply@ (application);
//   - any mail in a proposal's thread, security+GOV-YYYY-NNNN@ or a reply
//     filed under the proposal (proposalThread);
//   - signed roster commands (/member, /admit, /deny) in an incident's
//     thread or to the security list alone (rosterCommands).
//
// Every result commits its governance record in the message's transaction;
// when the roster changed, the mail it causes is rendered on the roster
// after the change, and the Service's snapshot is rebuilt after the commit,
// for the next message (live.go).

// applyRateKey keys the applicant's acknowledgements in the intake's rate
// limit: an application's sender is not authenticated (docs/threat-model.md
// B8), but a reporter's acknowledgement must not use up theirs.
const applyRateKey = "apply/"

func isApply(ts []lists.Target) bool {
	for _, t := range ts {
		if t.List == lists.Distributors && t.Detail == lists.DetailApply {
			return true
		}
	}
	return false
}

// attachedKeys reads the public keys attached to a message
// (application/pgp-keys), each checked at the message's time: what an
// application, /member add and /member key carry. An attachment that is no
// key the daemon can read becomes a verdict with that problem, so that the
// sender is told. For an application, signed reports whether the message
// carries a good signature by one of those keys: a second verification of
// the raw message (before the transaction, like the first), because no
// attached key is trusted when the message is opened.
func (s *Service) attachedKeys(m *inbound.Message, listKey *keys.Key, ko keys.Options, now time.Time, apply bool) (vs []governance.KeyVerdict, signed bool) {
	var ks []*keys.Key
	for _, a := range m.Attachments() {
		if a.Type != "application/pgp-keys" {
			continue
		}
		parsed, err := keys.ReadPublicKeys(bytes.NewReader(a.Data))
		if err != nil {
			name := a.Name
			if name == "" {
				name = "(unnamed)"
			}
			vs = append(vs, governance.KeyVerdict{Problems: []string{fmt.Sprintf("the attachment %s is no OpenPGP public key embargo can read (%s)", name, keyProblem(err))}})
			continue
		}
		for _, k := range parsed {
			ks = append(ks, k)
			vs = append(vs, keyVerdict(k, now))
		}
	}
	if apply && len(ks) > 0 && m.Signature().Status == keys.SigUnknownKey {
		o, err := keys.Open(m.Raw(), listKey, keys.NewKeyring(ks...), ko)
		signed = err == nil && o.Signature().OK()
	}
	return vs, signed
}

// govOutcome is what one governance call did in a transaction.
type govOutcome struct {
	out    []queue.Msg
	roster bool // the roster changed: rebuild the snapshot after the commit
}

// application takes a distributor application (governance.Submit): the
// application to the SRC in the proposal's new thread and the
// acknowledgement to the sender, or the refusal with every reason. The
// sender gets mail at most AcksPerDay times a day (docs/threat-model.md B8);
// automatic mail gets none and opens nothing (RFC 3834 §2).
func (s *Service) application(tx *bolt.Tx, d *delivery, tally *ackTally) (string, workflow.ID, govOutcome, error) {
	msg, now := d.msg, d.now
	var g govOutcome
	if msg.Auto() || d.env.From == "" || s.o.Roster.IsOurs(d.env.From) || s.o.Roster.IsOurs(msg.From()) || msg.From() == "" {
		return "application ignored: automatic mail", "", g, nil
	}
	st, err := govdb.Load(tx)
	if err != nil {
		return "", "", g, err
	}
	root, err := s.anchor()
	if err != nil {
		return "", "", g, err
	}
	sub := governance.Submission{From: msg.From(), Text: msg.Text(), Keys: d.keys, Signed: d.appSigned, MessageID: msg.MessageID(), RootMsg: root}
	res, subErr := governance.Submit(st, sub, now, s.govConfig(now, false))
	result, id := "application refused", workflow.ID("")
	if subErr == nil {
		if err := govdb.Save(tx, res.State); err != nil {
			return "", "", g, err
		}
		p := res.State.Proposals[len(res.State.Proposals)-1]
		result, id = "application "+p.ID, workflow.ID(p.ID)
		if err := incidentdb.IndexMessageID(tx, root, id); err != nil {
			return "", "", g, err
		}
	}
	// The refusal is one of the actions: performed either way, but what
	// goes to the unauthenticated sender is rate-limited.
	var acts []governance.Action
	for _, a := range res.Actions {
		if m, ok := a.(governance.Mail); ok && m.To != "" && !m.CCSRC {
			allowed, err := s.allowAck(tx, applyRateKey+m.To, id, now, tally)
			if err != nil {
				return "", "", g, err
			}
			if !allowed {
				continue
			}
		}
		acts = append(acts, a)
	}
	res.Actions = acts
	g, err = s.govResult(tx, res, lists.Member{}, "", now)
	if err != nil {
		return "", "", g, err
	}
	s.log.Info("distributor application", "result", result, "keys", len(d.keys), "signed", d.appSigned)
	return result, id, g, s.enqueue(tx, now, g.out...)
}

// anchor is a fresh random Message-ID that anchors a thread: it names
// nothing (docs/threat-model.md D7).
func (s *Service) anchor() (string, error) {
	tok, err := s.random(12)
	if err != nil {
		return "", err
	}
	return "thread." + tok + "@" + s.o.Roster.List(lists.Security).Domain(), nil
}

// proposalOf finds the proposal whose thread a message to the security
// list continues, in the order incident threads are found (docs/design.md
// §2): the sub-address, then In-Reply-To/References against the Message-IDs
// filed under a proposal, then a [GOV-…] tag in the Subject. An incident's
// address, or a reference to an incident, is no proposal's thread.
func proposalOf(tx *bolt.Tx, msg *inbound.Message, detail string) (string, bool) {
	if detail != "" {
		return workflow.ParseProposalID(detail)
	}
	for _, ref := range msg.Refs() {
		if id, ok := incidentdb.IncidentOf(tx, ref); ok {
			return workflow.ParseProposalID(string(id))
		}
	}
	if _, ok := workflow.SubjectTag(msg.Subject()); ok {
		return "", false
	}
	if ids := workflow.NamedProposals(msg.Subject()); len(ids) > 0 && strings.Contains(msg.Subject(), "["+ids[0]+"]") {
		return ids[0], true
	}
	return "", false
}

// proposalThread handles a message in a proposal's thread when its sender
// belongs there: a signature by a pinned roster key (its commands go to
// governance.Apply with the thread), or the SRC, or the applicant or the
// member the proposal is about. Anyone else's mail is a new report, as for
// an incident's address: nothing tells whether the proposal exists. It
// reports false, with nothing done, for such mail. The message goes to the
// SRC (each copy encrypted) in the proposal's thread, with the receipt and
// the mail of its commands.
func (s *Service) proposalThread(tx *bolt.Tx, d *delivery, id string) (bool, govOutcome, error) {
	msg, now := d.msg, d.now
	var g govOutcome
	st, err := govdb.Load(tx)
	if err != nil {
		return false, g, err
	}
	p, exists := st.Proposal(id)
	signer, signed, err := s.signerOf(tx, msg.Signature())
	if err != nil {
		return false, g, err
	}
	from := msg.From()
	belongs := signed && msg.HasCommands() ||
		exists && (s.o.Roster.IsCommittee(from) || strings.EqualFold(from, p.OpenedBy) || strings.EqualFold(from, p.Email))
	if !belongs {
		return false, g, nil
	}
	sec := s.o.Roster.List(lists.Security)
	thread := &workflow.Incident{ID: workflow.ID(p.ID), RootMsg: p.RootMsg, Reporter: p.OpenedBy}
	if !exists {
		thread.ID = workflow.ID(id)
	}
	if msg.HasCommands() {
		if g, err = s.rosterCommands(tx, sec, msg, signer, signed, id, p.RootMsg, d.keys, now); err != nil {
			return true, g, err
		}
	}
	copies, err := s.renderCopies(sec, thread, workflow.Mail{Template: "reply", To: workflow.AudienceSRC, Except: from, Forward: true}, msg, "", now)
	if err != nil {
		return true, g, err
	}
	for _, q := range copies {
		if err := incidentdb.IndexMessageID(tx, q.MessageID, thread.ID); err != nil {
			return true, g, err
		}
	}
	g.out = append(g.out, copies...)
	return true, g, s.enqueue(tx, now, g.out...)
}

// rosterMessage handles a message to the security list alone (no thread)
// whose command block holds roster commands: signed by a pinned roster key,
// they go to governance.Apply; from a member whose signature does not
// count, the member is told why. It reports whether it took the message;
// anything else (a stranger's text that looks like commands) is a report.
func (s *Service) rosterMessage(tx *bolt.Tx, sec lists.List, d *delivery) (bool, govOutcome, error) {
	msg := d.msg
	if !rosterScope(msg) {
		return false, govOutcome{}, nil
	}
	signer, signed, err := s.signerOf(tx, msg.Signature())
	if err != nil {
		return true, govOutcome{}, err
	}
	if _, member := s.o.Roster.Member(msg.From()); !signed && !member {
		return false, govOutcome{}, nil
	}
	g, err := s.rosterCommands(tx, sec, msg, signer, signed, "", "", d.keys, d.now)
	if err != nil {
		return true, g, err
	}
	return true, g, s.enqueue(tx, d.now, g.out...)
}

// rosterScope reports whether a message's command block holds roster
// commands (workflow.Classify; a block mixing them with incident commands
// counts too: the receipt refuses it).
func rosterScope(msg *inbound.Message) bool {
	cmds, err := msg.Commands()
	if err != nil {
		return false
	}
	for _, c := range cmds {
		if workflow.CommandScope(c.Name) == workflow.ScopeRoster {
			return true
		}
	}
	return false
}

// rosterCommands runs a message's commands through governance.Apply
// (thread: the proposal's thread the message came in, "" otherwise; anchor:
// its thread's root Message-ID) and returns the receipt to the signer and
// the mail the commands cause; it does not enqueue. A replayed signature
// (docs/threat-model.md E3) is refused before the core sees it, and a
// signature that does not count gets the receipt that says why, when the
// From names a member (encrypted to their pinned key: only they read it).
func (s *Service) rosterCommands(tx *bolt.Tx, sec lists.List, msg *inbound.Message, signer lists.Member, signed bool, thread, anchor string, attached []governance.KeyVerdict, now time.Time) (govOutcome, error) {
	defer s.observe("command", time.Now())
	var g govOutcome
	rid := governance.RosterThread
	if thread != "" {
		rid = workflow.ID(thread)
	}
	v := msg.Signature()
	if !signed {
		mem, ok := s.o.Roster.Member(msg.From())
		if !ok || v.OK() {
			return g, nil // a stranger, or a key no longer on the roster: nobody to answer
		}
		s.log.Info("roster commands ignored: the signature does not count", "thread", rid, "verdict", v.Status.String())
		out, err := s.signatureRefusal(sec, mem, rid, anchor, msg, now)
		g.out = out
		return g, err
	}
	if s.encryptionMissing(msg) {
		// Before the replay cache, which must not record it (encryption.go).
		out, err := s.encryptionRefusal(sec, signer, rid, anchor, msg, now)
		g.out = out
		return g, err
	}
	// A proposal's commands name the proposal; any other roster command,
	// the list alone (binding.go). Before the replay cache, likewise.
	if miss := s.bindingMissing(sec, msg, workflow.ID(thread)); miss != "" {
		out, err := s.bindingRefusal(sec, signer, rid, anchor, msg, now, miss, workflow.ID(thread))
		g.out = out
		return g, err
	}
	replayed, err := seenSignature(tx, v, now)
	if err != nil {
		return g, err
	}
	var res governance.Result
	var applyErr error
	if replayed {
		res = governance.Result{Receipt: workflow.Receipt{Incident: rid, Signer: signer.Email, At: now, Refused: replayRefusal}}
		applyErr = errReplay
	} else {
		st, err := govdb.Load(tx)
		if err != nil {
			return g, err
		}
		root, err := s.anchor()
		if err != nil {
			return g, err
		}
		req := governance.Request{Text: msg.Text(), Signer: workflow.Signer{Fingerprint: v.Fingerprint, SignedAt: v.Signed},
			Thread: thread, Keys: attached, MessageID: msg.MessageID(), RootMsg: root}
		res, applyErr = governance.Apply(st, req, now, s.govConfig(now, true))
	}
	log := s.log.With("thread", rid, "signer", v.Fingerprint)
	status := "applied"
	if applyErr != nil {
		status = "refused"
		log.Info("roster commands refused", "reason", res.Receipt.Refused)
	} else {
		log.Info("roster commands applied", "actions", len(res.Actions), "roster_changed", res.Roster)
	}
	if len(res.Receipt.Lines) > 0 || res.Receipt.Refused != "" {
		rc, err := s.toMember(sec, signer, notice{Subject: fmt.Sprintf("[%s] receipt: %s", rid, status), Body: res.Receipt.Text(), Kind: "receipt", Thread: anchor}, now)
		if err != nil {
			return g, err
		}
		g.out = append(g.out, rc...)
	}
	if applyErr != nil || !res.Applied {
		return g, nil
	}
	if err := govdb.Save(tx, res.State); err != nil {
		return g, err
	}
	more, err := s.govResult(tx, res, signer, anchor, now)
	if err != nil {
		return g, err
	}
	g.out, g.roster = append(g.out, more.out...), more.roster
	return g, nil
}

// signerOf resolves a message's signature against the roster in force in
// the transaction: the file's members as the committed governance record
// changed them (governance.SignerOf), so that a removal or a new key counts
// from the next message on, whatever snapshot the message began with
// (docs/threat-model.md E4). signed is false for a signature that does not
// count and for a key nobody on the roster has pinned.
func (s *Service) signerOf(tx *bolt.Tx, v keys.Verdict) (lists.Member, bool, error) {
	if !v.OK() {
		return lists.Member{}, false, nil
	}
	st, err := govdb.Load(tx)
	if err != nil {
		return lists.Member{}, false, err
	}
	sg, ok := governance.SignerOf(s.settings().Members, st, v.Fingerprint, v.Signed)
	if !ok {
		return lists.Member{}, false, nil
	}
	mem := lists.Member{Email: sg.Email, Roles: sg.Roles, Fingerprint: sg.Fingerprint}
	if m, ok := s.o.Roster.Member(sg.Email); ok {
		mem.Name = m.Name
	}
	return mem, true, nil
}

// govResult performs a governance result's actions, in order: the roster
// actions are logged (the record already holds them), each Mail is
// rendered on the roster after the change (govMail), each Reply goes to the
// signer like the receipt. anchor threads the replies.
func (s *Service) govResult(tx *bolt.Tx, res governance.Result, signer lists.Member, anchor string, now time.Time) (govOutcome, error) {
	g := govOutcome{roster: res.Roster}
	after := s
	if res.Roster {
		after = s.withState(res.State)
	}
	sec := s.o.Roster.List(lists.Security)
	// Whoever gets a mail of their own (a member just added to the SRC, one
	// whose key changed) is left out of the SRC's copies of the result.
	told := map[string]bool{}
	for _, a := range res.Actions {
		if m, ok := a.(governance.Mail); ok && m.To != "" {
			told[strings.ToLower(m.To)] = true
		}
	}
	for _, a := range res.Actions {
		switch a := a.(type) {
		case governance.PinKey:
			s.log.Info("roster: key pinned", "fingerprint", a.Fingerprint, "previous", a.Previous)
		case governance.AddMember:
			s.log.Info("roster: member added", "roles", strings.Join(a.Roles, ","))
		case governance.RemoveMember:
			s.log.Info("roster: member removed")
		case governance.Mail:
			msgs, err := after.govMail(tx, s, res.State, a, told, now)
			if err != nil {
				return g, fmt.Errorf("%s: %w", a.Kind(), err)
			}
			g.out = append(g.out, msgs...)
		case governance.Reply:
			rid := governance.RosterThread
			if res.Receipt.Incident != "" {
				rid = res.Receipt.Incident
			}
			msgs, err := s.toMember(sec, signer, notice{Subject: fmt.Sprintf("[%s] %s", rid, a.What), Body: a.Text, Kind: a.What, Thread: anchor}, now)
			if err != nil {
				return g, err
			}
			g.out = append(g.out, msgs...)
		default:
			return g, fmt.Errorf("listd: unknown governance action %s", a.Kind())
		}
	}
	return g, nil
}

// govFields are the fields the daemon adds to every governance template.
func (s *Service) govFields(f map[string]string) map[string]string {
	dl := s.o.Roster.List(lists.Distributors)
	out := map[string]string{
		"ListAddress":     dl.Address,
		"ListKey":         s.fingerprint(s.o.DistributorsKey),
		"ApplyAddress":    dl.SubAddress(lists.DetailApply),
		"SecurityAddress": s.o.Roster.List(lists.Security).Address,
	}
	for k, v := range f {
		out[k] = v
	}
	return out
}
