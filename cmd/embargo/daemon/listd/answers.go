package listd

import (
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// A distributor's answer to the embargoed notice (/affected,
// workflow/distributors.go; docs/process.md §9) is a signed command of a
// distributor, who may run no other. It arrives one of two ways:
//
//   - a reply to the notice, which goes to distributors@ (the notice's
//     Reply-To), encrypted to that list's key as every post must be; its
//     In-Reply-To names the notice the distributor received
//     (distributorReply). The post itself reaches the SRC as every
//     distributor's post does.
//   - mail to the incident's address security+ID@, or to security@ in reply
//     to a notice or a receipt (distributorThread). It must be encrypted to
//     the security list's key whatever [commands] require_encryption says:
//     an answer speaks of an embargoed issue (which vendor is exposed, and
//     whether its fix is ready), distributors must encrypt every post
//     already (docs/threat-model.md G2), and the encryption binds the signed
//     answer to this list (E3).
//
// Either way the distributor belongs to the incident's thread for this
// alone, and only when the incident's notice reached them
// (workflow.DistributorThread). Otherwise their mail is what anybody's
// would be: a post to the SRC, or a new report answered like any other, so
// nothing tells a distributor the notice did not reach that the incident
// exists. The answer goes to the SRC, each copy encrypted to a member; the
// receipt to the distributor alone; nothing of it to any other distributor.

// answerer is the distributor whose pinned key signed msg's commands, when
// the message is theirs to answer with: commands that are not roster
// commands (those go where they always go), a signature that counts, a
// signer with role distributor who is not on the committee.
func (s *Service) answerer(tx *bolt.Tx, msg *inbound.Message) (lists.Member, bool, error) {
	if !msg.HasCommands() || rosterScope(msg) {
		return lists.Member{}, false, nil
	}
	mem, ok, err := s.signerOf(tx, msg.Signature())
	if err != nil || !ok || !mem.Has(workflow.RoleDistributor) || s.o.Roster.IsCommittee(mem.Email) {
		return lists.Member{}, false, err
	}
	return mem, true, nil
}

// lookup is read access to the store for workflow's thread finding; a read
// error is kept in *lookErr.
func (s *Service) lookup(tx *bolt.Tx, lookErr *error) workflow.Lookup {
	return workflow.Lookup{
		Incident: func(id workflow.ID) (*workflow.Incident, bool) {
			inc, err := incidentdb.Get(tx, id)
			if err != nil && !errors.Is(err, incidentdb.ErrNotFound) {
				*lookErr = err
			}
			return inc, err == nil
		},
		MessageID: func(id string) (workflow.ID, bool) { return incidentdb.IncidentOf(tx, id) },
		IsSRC:     s.o.Roster.IsCommittee,
	}
}

// distributorThread takes a message to security@ that is a distributor's
// signed answer in the thread of an incident whose notice reached them: it
// is archived under that incident (the caller files it), and answered with
// a receipt; took is false for anything else, which intake handles as
// before. A distributor who belongs to the incident in their own right (its
// reporter, its fix team) is left to intake.
func (s *Service) distributorThread(tx *bolt.Tx, d *delivery, detail string) (_ workflow.ID, took bool, _ error) {
	msg, now := d.msg, d.now
	mem, ok, err := s.answerer(tx, msg)
	if err != nil || !ok {
		return "", false, err
	}
	var lookErr error
	in := inboundOf(d, detail, s.o.Roster)
	inc := workflow.DistributorThread(in, s.lookup(tx, &lookErr), mem.Email)
	if lookErr != nil || inc == nil || workflow.Belongs(inc, mem.Email, s.o.Roster.IsCommittee) {
		return "", false, lookErr
	}
	sec := s.o.Roster.List(lists.Security)
	after, out := *inc, []queue.Msg(nil)
	if !msg.Encrypted() {
		s.log.Info("distributor answer refused: not encrypted to the list key", "incident", inc.ID, "signer", msg.Signature().Fingerprint)
		out, err = s.answerRefusal(sec, mem, inc.ID, msg, now)
	} else {
		after, out, err = s.applyAnswer(tx, sec, *inc, d, mem)
	}
	if err != nil {
		return "", false, err
	}
	after.Messages++
	return inc.ID, true, s.commitAnswer(tx, &after, out, now)
}

// distributorReply applies the answer in a distributor's post to
// distributors@ (already decrypted, its signature counted: distributorPost)
// to the incident whose notice the post replies to, when that notice
// reached its author: it queues the receipt and the SRC's copy, and
// returns the incident, "" when the post answers no such notice, which is
// then only the post it always was.
func (s *Service) distributorReply(tx *bolt.Tx, d *delivery, author lists.Member) (workflow.ID, error) {
	msg := d.msg
	if !author.Has(workflow.RoleDistributor) || s.o.Roster.IsCommittee(author.Email) || !msg.HasCommands() || rosterScope(msg) {
		return "", nil
	}
	var lookErr error
	in := workflow.Inbound{Subject: msg.Subject(), MessageID: msg.MessageID(), Refs: msg.Refs()}
	inc := workflow.DistributorThread(in, s.lookup(tx, &lookErr), author.Email)
	if lookErr != nil || inc == nil {
		return "", lookErr
	}
	after, out, err := s.applyAnswer(tx, s.o.Roster.List(lists.Distributors), *inc, d, author)
	if err != nil {
		return "", err
	}
	after.Messages++
	return inc.ID, s.commitAnswer(tx, &after, out, d.now)
}

// commitAnswer stores the incident and queues out, each filed under the
// incident, so that a reply to the receipt finds its thread again.
func (s *Service) commitAnswer(tx *bolt.Tx, inc *workflow.Incident, out []queue.Msg, now time.Time) error {
	if err := s.putIncident(tx, inc); err != nil {
		return err
	}
	for _, q := range out {
		if err := incidentdb.IndexMessageID(tx, q.MessageID, inc.ID); err != nil {
			return err
		}
	}
	return s.enqueue(tx, now, out...)
}

// applyAnswer runs a distributor's signed commands on inc (workflow.Apply:
// /affected alone is theirs) and returns the incident afterwards, the
// receipt to the distributor from list l, and the SRC's copy of the answer.
// A signature seen before counts for nothing (docs/threat-model.md E3).
func (s *Service) applyAnswer(tx *bolt.Tx, l lists.List, inc workflow.Incident, d *delivery, mem lists.Member) (workflow.Incident, []queue.Msg, error) {
	msg, now := d.msg, d.now
	defer s.observe("command", time.Now())
	v := msg.Signature()
	replayed, err := seenSignature(tx, v, now)
	if err != nil {
		return inc, nil, err
	}
	env := s.workflowEnv(tx)
	env.MessageID = msg.MessageID()
	var res workflow.Result
	var applyErr error
	if replayed {
		res = workflow.Result{Incident: inc, Receipt: workflow.Receipt{Incident: inc.ID, Signer: mem.Email, At: now, Refused: replayRefusal}}
		applyErr = errReplay
	} else {
		signer := workflow.Signer{Fingerprint: v.Fingerprint, Email: mem.Email, Roles: mem.Roles, SignedAt: v.Signed}
		res, applyErr = workflow.Apply(inc, msg.Text(), signer, now, env)
	}
	status := "applied"
	if applyErr != nil {
		status = "refused"
		s.log.Info("distributor answer refused", "incident", inc.ID, "signer", v.Fingerprint, "reason", res.Receipt.Refused)
	} else {
		s.log.Info("distributor answer applied", "incident", inc.ID, "signer", v.Fingerprint, "actions", len(res.Actions))
	}
	out, err := s.toDistributor(l, mem, fmt.Sprintf("[%s] receipt: %s", inc.ID, status),
		res.Receipt.Text()+"\n"+s.howToAnswer(l), "receipt", msg.MessageID(), now)
	if err != nil || applyErr != nil {
		return inc, out, err
	}
	sec := s.o.Roster.List(lists.Security)
	for _, a := range res.Actions {
		msgs, err := s.action(tx, sec, &res.Incident, mem, a, now, res.Actions)
		if err != nil {
			return inc, nil, err
		}
		out = append(out, msgs...)
	}
	return res.Incident, out, nil
}

// answerRefusal is the receipt of a distributor's answer to security@ that
// was signed but not encrypted: nothing applied, why, and how to send it.
// Its signature is not recorded as used, so the same signed text counts
// once it comes encrypted.
func (s *Service) answerRefusal(sec lists.List, mem lists.Member, id workflow.ID, msg *inbound.Message, now time.Time) ([]queue.Msg, error) {
	why := wrap(fmt.Sprintf("Nothing was applied: a distributor's answer speaks of an embargoed issue and must be encrypted to the list key %s as well as signed. "+
		"Your message was signed by your pinned key %s, but not encrypted, so what it says travelled in plaintext.",
		s.fingerprint(s.o.ListKey), msg.Signature().Fingerprint), 72)
	body := refusedReceipt(id, now, why, msg, s.howToAnswer(sec))
	return s.toDistributor(sec, mem, fmt.Sprintf("[%s] receipt: refused", id), body, "receipt", msg.MessageID(), now)
}

// howToAnswer ends a distributor's receipt: how to send the next answer.
// The command is shown indented, and nothing wrapped can start a line with
// "/": a reply that carries the receipt along unquoted must not run it
// (docs/threat-model.md E5).
func (s *Service) howToAnswer(l lists.List) string {
	key := s.o.ListKey
	if l.Name == lists.Distributors {
		key = s.o.DistributorsKey
	}
	return wrap(fmt.Sprintf("To answer again, reply to this message or to the notice, signed with your pinned key and encrypted to %s (%s), "+
		"with this command at the start of a line:", l.Address, s.fingerprint(key)), 72) +
		"\n\n    /affected yes|no|unknown|fixed [NOTE]\n\n" +
		wrap("Your latest answer counts. Only the committee reads it; no other distributor does.", 72) + "\n"
}

// toDistributor sends one message from list l to a distributor alone,
// encrypted to their pinned key and signed by l's key, under the generic
// outer Subject (docs/threat-model.md D7), from the null sender (RFC 3834
// §3.3), in reply to inReplyTo (their message; not repeated outside the
// encryption). Without a usable key they get nothing: it speaks of an
// embargoed issue (D6).
func (s *Service) toDistributor(l lists.List, mem lists.Member, subject, body, kind, inReplyTo string, now time.Time) ([]queue.Msg, error) {
	key, err := s.memberKey(mem)
	if err != nil || (l.Name == lists.Distributors && s.o.DistributorsKey == nil) || (l.Name != lists.Distributors && s.o.ListKey == nil) {
		s.log.Info("no usable key for an answer to a distributor", "kind", kind)
		return nil, nil
	}
	mid, err := s.newMessageID(l.Domain())
	if err != nil {
		return nil, err
	}
	om := outMail{
		From:       &mail.Address{Name: s.o.Project + " Security Response", Address: l.Address},
		To:         []*mail.Address{{Name: mem.Name, Address: mem.Email}},
		ReplyTo:    &mail.Address{Address: l.Address},
		Subject:    subject,
		MessageID:  mid,
		InReplyTo:  inReplyTo,
		Date:       now,
		AutoSubmit: "auto-replied",
		XLoop:      l.Address,
		Body:       body,
	}
	if inReplyTo != "" {
		om.References = []string{inReplyTo}
	}
	entity, err := om.entity()
	if err != nil {
		return nil, err
	}
	outer := om
	outer.Subject, outer.InReplyTo, outer.References = l.OuterSubject, "", nil
	spec, err := sealSpec(l.Name, key, outer.header(), &om)
	if err != nil {
		return nil, err
	}
	return []queue.Msg{{To: []string{mem.Email}, Body: entity, Seal: spec, MessageID: mid, Kind: kind}}, nil
}

// distributorAnswer tells the committee a distributor's answer
// (workflow.DistributorAnswer), each copy encrypted to its member. The
// note is the distributor's text: cleaned (safeText) and made inert, so
// that no line of the copy runs as a command when a member's signed reply
// carries it along unquoted (docs/threat-model.md E5).
func (s *Service) distributorAnswer(inc *workflow.Incident, a workflow.DistributorAnswer, now time.Time) ([]queue.Msg, error) {
	prev := ""
	if a.Previous != workflow.AffectedUnset {
		prev = a.Previous.Words()
	}
	body, err := s.renderFields("distributor-answer", map[string]string{
		"id": string(inc.ID), "distributor": a.Distributor, "status": a.Status.Words(), "previous": prev,
		"at": workflow.FormatInstant(a.At), "note": safeText(a.Note),
		"answered": fmt.Sprint(a.Answered), "notified": fmt.Sprint(a.Notified),
	})
	if err != nil {
		return nil, err
	}
	return s.sealedEach(s.o.Roster.List(lists.Security), s.committee(), notice{
		Subject: fmt.Sprintf("[%s] distributor answer: %s: %s", inc.ID, a.Distributor, a.Status.Words()),
		Body:    inert(body), Kind: "distributor-answer", Incident: inc.ID, Thread: inc.RootMsg,
	}, now)
}
