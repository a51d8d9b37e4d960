package listd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// distMail is one message to every distributor.
type distMail struct {
	Kind        string // the queue rows' kind, and the Message-IDs' prefix
	Subject     string // the real Subject, inside the encryption
	Body        string
	Attachments []message.Attachment
}

// toDistributors sends one body to every distributor, each copy rebuilt and
// encrypted to exactly that distributor's pinned key, signed by the
// distributors list key, To: the list address only, under the generic outer
// Subject (docs/threat-model.md D6, D7, G1). A distributor without a usable key gets
// nothing, and the SRC is told who and why. There is no plaintext path.
func (s *Service) toDistributors(inc *workflow.Incident, m distMail, now time.Time) ([]queue.Msg, error) {
	dl := s.o.Roster.List(lists.Distributors)
	if len(s.o.Roster.WithRole(workflow.RoleDistributor)) == 0 {
		return nil, nil
	}
	if s.o.DistributorsKey == nil {
		return nil, fmt.Errorf("listd: no distributors list key")
	}
	// One body for every distributor, stored once; each copy is sealed to
	// its distributor's key at delivery (seal.go), and nothing else.
	base := outMail{
		From:        &mail.Address{Name: s.o.Project + " Security Response", Address: dl.Address},
		To:          []*mail.Address{{Address: dl.Address}},
		ReplyTo:     &mail.Address{Address: dl.Address},
		Subject:     m.Subject,
		Date:        now,
		AutoSubmit:  "auto-generated",
		ListID:      dl.ListID(),
		XLoop:       dl.Address,
		Body:        m.Body,
		Attachments: m.Attachments,
	}
	body, err := base.entity()
	if err != nil {
		return nil, err
	}
	var out []queue.Msg
	send, withheld := s.distributorKeys()
	for _, d := range send {
		mid, err := s.newMessageID(dl.Domain())
		if err != nil {
			return nil, err
		}
		om := base
		om.MessageID = mid
		outer := om.header()
		outer.SetSubject(dl.OuterSubject)
		spec, err := sealSpec(lists.Distributors, d.key, outer, &om)
		if err != nil {
			return nil, err
		}
		out = append(out, queue.Msg{From: dl.SubAddress(lists.DetailBounces), To: []string{d.Email}, Body: body, Seal: spec, MessageID: mid, Kind: m.Kind, Incident: string(inc.ID)})
	}
	if len(withheld) > 0 {
		s.log.Warn("distributor copies withheld: no usable key", "incident", inc.ID, "count", len(withheld))
		alerts, err := s.alertSRC(inc, workflow.AlertSRC{Template: "distributors-withheld",
			Fields: map[string]string{"id": string(inc.ID), "kind": m.Kind, "names": strings.Join(withheld, "\n")}}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, alerts...)
	}
	return out, nil
}

// distributorKeys splits the distributors into those mail to the
// distributors reaches now, each with their usable pinned key, and those
// withheld for want of one, with why. toDistributors sends to exactly the
// first, and workflowEnv names them to workflow, which records whom a
// notice reached (workflow.Env.Distributors): the same roster and clock
// decide both.
func (s *Service) distributorKeys() (send []recipient, withheld []string) {
	for _, d := range s.o.Roster.WithRole(workflow.RoleDistributor) {
		key, err := s.memberKey(d)
		if err != nil {
			withheld = append(withheld, fmt.Sprintf("%s (%v)", d.Email, err))
			continue
		}
		send = append(send, recipient{Member: d, key: key})
	}
	return send, withheld
}

// distributorNotice renders and sends a DistributorNotice action: the
// embargoed notice (process.md §7.1), a re-notification, or the final notice
// with the public text (§7.2).
func (s *Service) distributorNotice(inc *workflow.Incident, a workflow.DistributorNotice, now time.Time) ([]queue.Msg, error) {
	d := s.advisory(inc)
	d.T = workflow.FormatInstant(a.T)
	if a.Renotify && !a.Previous.IsZero() {
		d.Renotify, d.PreviousNotice = true, workflow.FormatInstant(a.Previous)
	}
	tmpl, kind, subject := "distributor-notice", "distributor-notice", "[EMBARGOED] "+d.CVE+": "+d.Summary
	if a.Final {
		adv, err := s.o.Templates.Render("advisory", d)
		if err != nil {
			return nil, err
		}
		d.AdvisoryText = strings.TrimRight(adv, "\n")
		tmpl, kind, subject = "distributor-final", "distributor-final", "[EMBARGOED] FINAL NOTICE "+d.CVE+": "+d.Summary
	}
	body, err := s.o.Templates.Render(tmpl, d)
	if err != nil {
		return nil, err
	}
	return s.toDistributors(inc, distMail{Kind: kind, Subject: subject, Body: body}, now)
}

// embargoLifted tells the distributors first, before any announcement
// (docs/threat-model.md G5).
func (s *Service) embargoLifted(inc *workflow.Incident, a workflow.EmbargoLifted, now time.Time) ([]queue.Msg, error) {
	d := s.advisory(inc)
	d.At = workflow.FormatInstant(a.At)
	body, err := s.o.Templates.Render("embargo-lifted", d)
	if err != nil {
		return nil, err
	}
	return s.toDistributors(inc, distMail{Kind: "embargo-lifted", Subject: "EMBARGO LIFTED " + d.CVE + ": " + d.Summary, Body: body}, now)
}

// distributorPost handles mail to distributors@, opened before the
// transaction with that list's key (Service.openOnce). A refusal is returned
// separately from err: the alert it raises must commit, and only then is
// the sender answered with the refusal. Only encrypted mail signed by a
// pinned member key is taken; a post that names anyone outside the list
// and the SRC in To or Cc is refused and the SRC alerted (docs/threat-model.md G1,
// G2, F5). A post refused because it is plaintext or not signed by a
// member's pinned key also warns the member its From names (distwarn.go). Committee posts go to every distributor; a distributor's post
// goes to the SRC only, never to the other distributors. A distributor's
// post that replies to a notice with /affected also answers it
// (distributorReply); answered is that incident.
func (s *Service) distributorPost(tx *bolt.Tx, d *delivery, warns *warnTally, answered *workflow.ID) (result string, refusal, err error) {
	dl := s.o.Roster.List(lists.Distributors)
	sec := s.o.Roster.List(lists.Security)
	msg, now := d.msg, d.now
	refuseWith := func(reply error, alert string) (string, error, error) {
		sender := d.env.From
		if msg != nil {
			sender = msg.From()
		}
		out, err := s.alertSRC(&workflow.Incident{ID: "distributors"}, workflow.AlertSRC{Template: "distributors-refused",
			Fields: map[string]string{"id": "distributors@", "sender": sender, "reason": alert}}, now)
		if err == nil {
			err = s.enqueue(tx, now, out...)
		}
		return "refused", reply, err
	}
	refuse := func(text, alert string) (string, error, error) {
		return refuseWith(&lists.Refusal{Code: 550, Enhanced: "5.7.1", Text: text}, alert)
	}
	// A post refused for its protection (G2) also warns the member its
	// From names, encrypted to their pinned key (distwarn.go).
	refuseWarn := func(text, alert string, fault func(lists.Member) postFault) (string, error, error) {
		if err := s.warnPoster(tx, d, fault, warns); err != nil {
			return "", nil, err
		}
		return refuse(text, alert)
	}
	if msg == nil {
		// The header itself could not be read (lists/message refused it:
		// duplicate fields, 8-bit, size): nobody can tell whom it names.
		return refuseWith(d.openErr, "a post whose header cannot be read was refused ("+detail(d.openErr)+"); it reached nobody")
	}
	// G1: every address in the recipient fields must be the list or a
	// committee member (distguard.go).
	if p := s.checkRecipientFields(msg.Outer().Header); p != nil {
		return refuse(p.reply, p.alert)
	}
	if d.openErr != nil {
		var r *lists.Refusal
		if errors.As(d.openErr, &r) {
			return "refused", d.openErr, nil
		}
		return "refused", s.cryptoRefusal(d.openErr, s.o.DistributorsKey), nil
	}
	if s.o.DistributorsKey == nil || !msg.Encrypted() {
		return refuseWarn("The embargo list takes only mail encrypted to its key ("+s.fingerprint(s.o.DistributorsKey)+") and signed with your pinned key",
			"a plaintext post was refused; it reached nobody", func(lists.Member) postFault { return s.plaintextFault() })
	}
	v := msg.Signature()
	badSignature := func(m lists.Member) postFault { return signatureFault(v, m) }
	if v.Status == keys.SigNone {
		return refuseWarn("The embargo list takes only mail signed with your pinned OpenPGP key",
			"an encrypted but unsigned post was refused", badSignature)
	}
	if !v.OK() {
		return refuseWarn("The embargo list takes only mail signed with a member's pinned OpenPGP key; this signature does not count ("+detail(v.Err)+")",
			"a post whose signature does not count ("+v.Status.String()+") was refused", badSignature)
	}
	author, ok, err := s.signerOf(tx, v)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return refuseWarn("The embargo list takes only mail signed by one of its members", "a post signed by a non-member was refused", badSignature)
	}
	// A distributor's reply to a notice that reached them may answer it
	// (/affected, answers.go): applied to that incident, with a receipt to
	// them and a copy to the SRC; the post goes on to the SRC as any.
	if *answered, err = s.distributorReply(tx, d, author); err != nil {
		return "", nil, err
	}
	subject := msg.Subject() // the protected Subject, else the outer one
	attachments := msg.Attachments()
	// Inert (intake.go): a member who answers a post to the committee keeps
	// its subject, and with it the tag of the incident it is about, so the
	// answer lands in that thread, where the member's signature would run
	// a "/" paragraph of the post carried along unquoted
	// (docs/threat-model.md E5). The distributors' copies share the body.
	body := inert(fmt.Sprintf("%s wrote to the embargo list at %s:\n\n%s", author.Email, workflow.FormatInstant(now), msg.Text()))
	inc := &workflow.Incident{ID: "distributors"}
	var out []queue.Msg
	if author.Has(workflow.RoleSRC) {
		out, err = s.toDistributors(inc, distMail{Kind: "distributors-post", Subject: subject, Body: body, Attachments: attachments}, now)
		if err != nil {
			return "", nil, err
		}
	}
	// The committee sees every post (a distributor's goes to it alone).
	var rcpts []recipient
	for _, rc := range s.committee() {
		if !strings.EqualFold(rc.Email, author.Email) {
			rcpts = append(rcpts, rc)
		}
	}
	copies, err := s.copyEach(sec, rcpts, outMail{
		From:        &mail.Address{Name: author.Email + " via " + dl.Local(), Address: dl.Address},
		ReplyTo:     &mail.Address{Address: dl.Address},
		Subject:     "[distributors] " + subject,
		Date:        now,
		ListID:      dl.ListID(),
		XLoop:       dl.Address,
		Body:        body,
		Attachments: attachments,
	}, queue.Msg{From: sec.SubAddress(lists.DetailBounces), Kind: "distributors-copy"})
	if err != nil {
		return "", nil, err
	}
	out = append(out, copies...)
	return "distributors", nil, s.enqueue(tx, now, out...)
}

func (s *Service) fingerprint(k *keys.Key) string {
	if k == nil {
		return "not configured"
	}
	return k.Fingerprint()
}
