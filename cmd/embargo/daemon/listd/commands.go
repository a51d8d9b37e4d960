package listd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// replayRefusal is the receipt of a signed message seen before.
const replayRefusal = "this signed message was already processed (a replay); nothing applied"

var errReplay = errors.New("replay")

// seenSignature records a verified signature in the replay cache and reports
// whether it was there already (docs/threat-model.md E3): the same signer's signature,
// made at the same second over the same bytes, counts once.
func seenSignature(tx *bolt.Tx, v keys.Verdict, now time.Time) (bool, error) {
	id := append(fmt.Appendf(nil, "%s|%d|", v.Fingerprint, v.Signed.Unix()), v.SignedBytes()...)
	return incidentdb.SeenSignature(tx, workflow.ReplayKey(id), workflow.ReplayExpiry(v.Signed), now)
}

// commands applies the signed commands of one message to an incident inside
// the message's transaction, and queues the receipt and the mail the
// commands cause. It returns the incident as it is afterwards. A message
// with command lines whose signature does not count gets a receipt that
// says why and how to fix it (refusals.go), if it came from a member.
// Roster commands (/member, /admit, /deny) in the thread go to the
// governance core instead (governance.go); roster reports that they changed
// the roster.
func (s *Service) commands(tx *bolt.Tx, sec lists.List, inc workflow.Incident, d *delivery) (_ workflow.Incident, _ []queue.Msg, roster bool, _ error) {
	msg, now := d.msg, d.now
	if !msg.HasCommands() {
		return inc, nil, false, nil
	}
	v := msg.Signature()
	mem, signed, err := s.signerOf(tx, v)
	if err != nil {
		return inc, nil, false, err
	}
	if signed && rosterScope(msg) {
		g, err := s.rosterCommands(tx, sec, msg, mem, true, "", "", d.keys, now)
		return inc, g.out, g.roster, err
	}
	defer s.observe("command", time.Now())
	if !v.OK() {
		// Commands need a valid signature by a pinned key, never the From
		// header (docs/threat-model.md E1). The member the From names is
		// told why, in a receipt encrypted to their own pinned key: only
		// they can read it, whoever wrote the From. Anyone else learns
		// nothing.
		mem, ok := s.commandAuthor(msg.From(), &inc)
		if !ok {
			return inc, nil, false, nil
		}
		s.log.Info("commands ignored: the signature does not count", "incident", inc.ID, "verdict", v.Status.String())
		out, err := s.signatureRefusal(sec, mem, inc.ID, inc.RootMsg, msg, now)
		return inc, out, false, err
	}
	if !signed {
		return inc, nil, false, nil // a key that is no longer pinned: nobody to answer
	}
	if s.encryptionMissing(msg) {
		// Before the replay cache: the same signed text may come again,
		// encrypted (encryption.go).
		out, err := s.encryptionRefusal(sec, mem, inc.ID, inc.RootMsg, msg, now)
		return inc, out, false, err
	}
	if miss := s.bindingMissing(sec, msg, inc.ID); miss != "" {
		// Before the replay cache too: a corrected text may follow (binding.go).
		out, err := s.bindingRefusal(sec, mem, inc.ID, inc.RootMsg, msg, now, miss, inc.ID)
		return inc, out, false, err
	}
	replayed, err := seenSignature(tx, v, now)
	if err != nil {
		return inc, nil, false, err
	}
	env := s.workflowEnv(tx)
	env.LastLead, env.MessageID = incidentdb.Meta(tx, "last_lead"), msg.MessageID()
	signer := workflow.Signer{Fingerprint: v.Fingerprint, Email: mem.Email, Roles: mem.Roles, SignedAt: v.Signed}
	var res workflow.Result
	var applyErr error
	if replayed {
		res = workflow.Result{Incident: inc, Receipt: workflow.Receipt{Incident: inc.ID, Signer: mem.Email, At: now, Refused: replayRefusal}}
		applyErr = errReplay
	} else {
		// The text is exactly what was signed, decoded (lists/inbound).
		res, applyErr = workflow.Apply(inc, msg.Text(), signer, now, env)
	}
	log := s.log.With("incident", inc.ID, "signer", v.Fingerprint)
	if applyErr != nil {
		log.Info("commands refused", "reason", res.Receipt.Refused)
	} else {
		log.Info("commands applied", "applied", res.Applied, "actions", len(res.Actions))
	}
	if res.RoundRobin != "" {
		if err := incidentdb.SetMeta(tx, "last_lead", res.RoundRobin); err != nil {
			return inc, nil, false, err
		}
	}
	// The actions first: the receipt says what they did (a
	// pre-announcement's subscribers), and goes first all the same.
	var acted []queue.Msg
	if applyErr == nil {
		for _, a := range res.Actions {
			msgs, err := s.action(tx, sec, &res.Incident, mem, a, now, res.Actions)
			if err != nil {
				return inc, nil, false, err
			}
			acted = append(acted, msgs...)
		}
		preannounceReceipt(&res)
	}
	var out []queue.Msg
	status := "refused"
	if res.Applied {
		status = "applied"
	}
	if len(res.Receipt.Lines) > 0 || res.Receipt.Refused != "" {
		rc, err := s.toMember(sec, mem, notice{Subject: fmt.Sprintf("[%s] receipt: %s", inc.ID, status), Body: res.Receipt.Text(), Kind: "receipt", Thread: inc.RootMsg}, now)
		if err != nil {
			return inc, nil, false, err
		}
		out = append(out, rc...)
	}
	if applyErr != nil {
		return inc, out, false, nil
	}
	out = append(out, acted...)
	if res.OnCall != nil { // /oncall (tick.go)
		msgs, err := s.onCallChanged(tx, sec, *res.OnCall, &res.Incident, mem, now)
		if err != nil {
			return inc, nil, false, err
		}
		out = append(out, msgs...)
	}
	return res.Incident, out, false, nil
}

// reporterSubjects are the subjects of the reporter updates, by template.
var reporterSubjects = map[string]string{
	"accepted":  "Your report is confirmed",
	"fixed":     "A fix is ready",
	"date":      "Disclosure date",
	"disclosed": "Disclosed",
	"reply":     "Message from the Security Response Committee",
	"duplicate": "Your report is a duplicate",
	"handoff":   "Your report was handed on",
}

// action renders one workflow action into queue rows. all is the whole list
// of actions it belongs to, for ordering between them.
func (s *Service) action(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, by lists.Member, a workflow.Action, now time.Time, all []workflow.Action) ([]queue.Msg, error) {
	switch a := a.(type) {
	case workflow.ReporterMail:
		return s.toReporter(tx, sec, inc, a, now)
	case workflow.AlertSRC:
		return s.alertSRC(inc, a, now)
	case workflow.StatusReply:
		return s.toMember(sec, by, notice{Subject: "[" + string(inc.ID) + "] status", Body: a.Text, Kind: "status", Thread: inc.RootMsg}, now)
	case workflow.HelpReply:
		return s.toMember(sec, by, notice{Subject: "[" + string(inc.ID) + "] help", Body: a.Text, Kind: "help", Thread: inc.RootMsg}, now)
	case workflow.DistributorNotice:
		return s.distributorNotice(inc, a, now)
	case workflow.DistributorAnswer:
		return s.distributorAnswer(inc, a, now)
	case workflow.EmbargoLifted:
		return s.embargoLifted(inc, a, now)
	case workflow.Release:
		notBefore := now
		for _, o := range all {
			if _, ok := o.(workflow.EmbargoLifted); ok {
				notBefore = now.Add(s.o.LiftGrace)
			}
		}
		return s.release(tx, inc, a, now, notBefore)
	case workflow.Preannounce:
		return nil, s.preannounce(tx, inc, a, now)
	}
	return nil, fmt.Errorf("listd: unknown action %s", a.Kind())
}

// toReporter sends a stage update or a /reply text to the reporter, from the
// list address, signed, and encrypted to the reporter's pinned key if any.
func (s *Service) toReporter(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, a workflow.ReporterMail, now time.Time) ([]queue.Msg, error) {
	tmpl := a.Template
	if tmpl == "reply" {
		tmpl = "reporter-reply" // "reply" is the committee copy of a reply
	}
	body, err := s.renderFields(tmpl, a.Fields)
	if err != nil {
		return nil, err
	}
	subj := reporterSubjects[a.Template]
	if subj == "" {
		subj = "About your report"
	}
	mid, err := s.newMessageID(sec.Domain())
	if err != nil {
		return nil, err
	}
	om := outMail{
		From:      s.listAddress(sec),
		To:        []*mail.Address{{Address: inc.Reporter}},
		ReplyTo:   s.reporterReplyTo(sec, inc),
		Subject:   fmt.Sprintf("[%s] %s", inc.ID, subj),
		MessageID: mid,
		Date:      now,
		XLoop:     sec.Address,
		Body:      body,
	}
	q := queue.Msg{From: sec.SubAddress(lists.DetailBounces), To: []string{inc.Reporter}, MessageID: mid, Kind: "reporter-" + a.Template, Incident: string(inc.ID)}
	if err := s.reporterCopy(tx, sec, inc, &om, inc.Reporter, now, &q, false); err != nil {
		return nil, err
	}
	if err := incidentdb.IndexMessageID(tx, mid, inc.ID); err != nil {
		return nil, err
	}
	return []queue.Msg{q}, nil
}

// reporterCopy makes q a message from the security list to to: encrypted
// to the reporter's key pinned to the incident and signed by the list when
// to is the reporter and a usable key is pinned, else signed only (plain
// without a list key, in development). Both are made at delivery (seal.go),
// the headers and the MIME entity too (composed.go): the row holds the
// text and the header's fields. withKey attaches the list's public key
// (the acknowledgement).
func (s *Service) reporterCopy(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, om *outMail, to string, now time.Time, q *queue.Msg, withKey bool) error {
	if s.o.ListKey == nil {
		data, err := om.plain()
		q.Data = data
		return err
	}
	seal := &queue.Seal{Signer: string(lists.Security), SignOnly: true}
	var outer *outMail
	rk := s.reporterKeyOf(tx, inc, now)
	if rk != nil && strings.EqualFold(to, inc.Reporter) {
		o := s.outerMail(sec, om)
		outer = &o
		// The key chosen now travels with the row: the one pinned to the
		// incident when the mail was written (docs/threat-model.md D5).
		pub, err := rk.ArmoredPublic()
		if err != nil {
			return err
		}
		seal = &queue.Seal{Signer: string(lists.Security), To: rk.Fingerprint(), Key: pub}
	}
	spec, err := compose(om, outer, true, withKey)
	switch {
	case err == nil && om.Body != "":
		seal.Compose, q.Body, q.Seal = spec, []byte(om.Body), seal
		return nil
	case err != nil && !errors.Is(err, errNotComposable):
		return err
	}
	// A field a composed spec cannot carry (or no text at all): rendered
	// now, as it always was.
	if withKey {
		pub, err := s.listKeyArmored()
		if err != nil {
			return err
		}
		om.Attachments = append(om.Attachments, listKeyAttachment(pub))
	}
	if q.Body, err = om.entity(); err != nil {
		return err
	}
	if outer == nil {
		q.Seal, err = signSpec(lists.Security, om)
		return err
	}
	rendered, err := sealSpec(lists.Security, rk, outer.header(), om)
	if err != nil {
		return err
	}
	rendered.Key, q.Seal = seal.Key, rendered
	return nil
}
