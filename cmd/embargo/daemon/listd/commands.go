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
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// signed is what the signature check of one inbound message found.
type signed struct {
	v   *keys.Verified // nil: no signature that counts
	err error          // why a present signature did not count
	// cipher is the hash of the encrypted data when the message arrived
	// encrypted (keys.Decrypted.CiphertextHash), for threats.md D3.
	cipher *[32]byte
}

// commandText returns the text commands are read from: the text/plain content
// of exactly the signed bytes (threats.md E2, E5), never the unsigned rest.
func commandText(v *keys.Verified, lim message.Limits) (string, error) {
	m, err := message.Parse(v.Entity, lim)
	if err != nil {
		return "", err
	}
	return m.Text, nil
}

// hasCommandLines reports whether a text starts with command lines, signed or
// not, so an unsigned attempt can be answered.
func hasCommandLines(text string) bool {
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		return strings.HasPrefix(l, "/")
	}
	return false
}

// replayRefusal is the receipt of a signed message seen before.
const replayRefusal = "this signed message was already processed (a replay); nothing applied"

var errReplay = errors.New("replay")

// seenSignature records a verified signature in the replay cache and reports
// whether it was there already (docs/threat-model.md E3): the same signer's signature,
// made at the same second over the same bytes, counts once.
func seenSignature(tx *bolt.Tx, v *keys.Verified, now time.Time) (bool, error) {
	id := append(fmt.Appendf(nil, "%s|%d|", v.Fingerprint, v.Signed.Unix()), v.Bytes...)
	return incidentdb.SeenSignature(tx, workflow.ReplayKey(id), workflow.ReplayExpiry(v.Signed), now)
}

// memberByFingerprint finds the roster member a verified signature belongs to.
func (s *Service) memberByFingerprint(fpr string) (lists.Member, bool) {
	for _, m := range s.o.Roster.Members {
		if m.Fingerprint != "" && strings.EqualFold(m.Fingerprint, fpr) {
			return m, true
		}
	}
	return lists.Member{}, false
}

// commands applies the signed commands of one message to an incident inside
// the message's transaction, and queues the receipt and the mail the
// commands cause. It returns the incident as it is afterwards.
func (s *Service) commands(tx *bolt.Tx, sec lists.List, inc workflow.Incident, msg *message.Message, sig signed, now time.Time) (workflow.Incident, []queue.Msg, error) {
	if sig.v == nil {
		// Commands need a valid signature by a pinned key, never the From
		// header (threats.md E1). A member who forgot to sign is told, in a
		// message encrypted to their own key; anyone else learns nothing.
		mem, ok := s.o.Roster.Member(msg.From)
		if !ok || !s.o.Roster.IsCommittee(msg.From) || !hasCommandLines(msg.Text) {
			return inc, nil, nil
		}
		reason := "the message is not signed"
		if sig.err != nil {
			reason = sig.err.Error()
		}
		s.log.Info("unsigned commands ignored", "incident", inc.ID)
		body := fmt.Sprintf("Your message on %s started with command lines, but nothing was applied:\n%s.\n\n"+
			"Commands count only when the message is signed with your pinned OpenPGP key\n(%s).\n"+
			"Sign it (PGP/MIME, or gpg --clearsign) and, better, encrypt it to the list key.\n", inc.ID, reason, orNone(mem.Fingerprint))
		out, err := s.toMember(sec, mem, notice{Subject: "[" + string(inc.ID) + "] commands not applied", Body: body, Kind: "refusal", Thread: inc.RootMsg}, now)
		return inc, out, err
	}
	mem, ok := s.memberByFingerprint(sig.v.Fingerprint)
	if !ok {
		return inc, nil, nil // a key that is no longer pinned: nobody to answer
	}
	text, err := commandText(sig.v, s.o.Limits)
	if err != nil || !hasCommandLines(text) {
		return inc, nil, nil
	}
	replayed, err := seenSignature(tx, sig.v, now)
	if err != nil {
		return inc, nil, err
	}
	env := s.workflowEnv(tx)
	env.LastLead, env.MessageID = incidentdb.Meta(tx, "last_lead"), msg.MessageID
	signer := workflow.Signer{Fingerprint: sig.v.Fingerprint, Email: mem.Email, Roles: mem.Roles, SignedAt: sig.v.Signed}
	var res workflow.Result
	var applyErr error
	if replayed {
		res = workflow.Result{Incident: inc, Receipt: workflow.Receipt{Incident: inc.ID, Signer: mem.Email, At: now, Refused: replayRefusal}}
		applyErr = errReplay
	} else {
		res, applyErr = workflow.Apply(inc, text, signer, now, env)
	}
	log := s.log.With("incident", inc.ID, "signer", sig.v.Fingerprint)
	if applyErr != nil {
		log.Info("commands refused", "reason", res.Receipt.Refused)
	} else {
		log.Info("commands applied", "applied", res.Applied, "actions", len(res.Actions))
	}
	if res.RoundRobin != "" {
		if err := incidentdb.SetMeta(tx, "last_lead", res.RoundRobin); err != nil {
			return inc, nil, err
		}
	}
	var out []queue.Msg
	status := "refused"
	if res.Applied {
		status = "applied"
	}
	if len(res.Receipt.Lines) > 0 || res.Receipt.Refused != "" {
		rc, err := s.toMember(sec, mem, notice{Subject: fmt.Sprintf("[%s] receipt: %s", inc.ID, status), Body: res.Receipt.Text(), Kind: "receipt", Thread: inc.RootMsg}, now)
		if err != nil {
			return inc, nil, err
		}
		out = append(out, rc...)
	}
	if applyErr != nil {
		return inc, out, nil
	}
	for _, a := range res.Actions {
		msgs, err := s.action(tx, sec, &res.Incident, mem, a, now, res.Actions)
		if err != nil {
			return inc, nil, err
		}
		out = append(out, msgs...)
	}
	if res.OnCall != nil { // /oncall (tick.go)
		msgs, err := s.onCallChanged(tx, sec, *res.OnCall, &res.Incident, mem, now)
		if err != nil {
			return inc, nil, err
		}
		out = append(out, msgs...)
	}
	return res.Incident, out, nil
}

func orNone(s string) string {
	if s == "" {
		return "none is configured: ask an SRC member to add your fingerprint"
	}
	return s
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
	mid, err := s.newMessageID("update", sec.Domain())
	if err != nil {
		return nil, err
	}
	om := outMail{
		From:      s.listAddress(sec),
		To:        []*mail.Address{{Address: inc.Reporter}},
		ReplyTo:   &mail.Address{Address: sec.SubAddress(string(inc.ID))},
		Subject:   fmt.Sprintf("[%s] %s", inc.ID, subj),
		MessageID: mid,
		Date:      now,
		XLoop:     sec.Address,
		Body:      body,
	}
	q := queue.Msg{From: sec.SubAddress(lists.DetailBounces), To: []string{inc.Reporter}, MessageID: mid, Kind: "reporter-" + a.Template, Incident: string(inc.ID)}
	if err := s.reporterCopy(tx, sec, inc, &om, inc.Reporter, now, &q); err != nil {
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
// without a list key, in development). Both are made at delivery (seal.go).
func (s *Service) reporterCopy(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, om *outMail, to string, now time.Time, q *queue.Msg) error {
	if s.o.ListKey == nil {
		data, err := om.plain()
		q.Data = data
		return err
	}
	body, err := om.entity()
	if err != nil {
		return err
	}
	q.Body = body
	if rk := s.pinnedReporterKey(tx, inc.ID, now); rk != nil && strings.EqualFold(to, inc.Reporter) {
		q.Seal, err = sealSpec(lists.Security, rk, s.outerHeader(sec, om), om)
		if q.Seal != nil {
			q.Seal.Reporter = true
		}
		return err
	}
	q.Seal, err = signSpec(lists.Security, om)
	return err
}

// pinnedReporterKey is the reporter's key pinned to the incident, if usable now.
func (s *Service) pinnedReporterKey(tx *bolt.Tx, id workflow.ID, now time.Time) *keys.Key {
	pub, ok := incidentdb.ReporterKey(tx, id)
	if !ok {
		return nil
	}
	ks, err := keys.ReadPublicKeys(strings.NewReader(string(pub)))
	if err != nil || len(ks) == 0 || ks[0].Check(now) != nil {
		return nil
	}
	return ks[0]
}
