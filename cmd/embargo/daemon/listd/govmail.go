package listd

import (
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/workflow"
)

// govMail renders one governance Mail (s is the view on the roster after
// the change; before, the one the message began with, whose keyring still
// holds the key of a member just removed or re-keyed). Everything goes out
// from the security list, signed by its key:
//
//   - the body is the template over the mail's fields and the daemon's
//     (govFields);
//   - with a Thread, the real Subject is tagged [GOV-…] inside the
//     encryption only (the outer one stays generic, docs/threat-model.md
//     D7), the copies are threaded by In-Reply-To under the proposal's
//     random anchor and filed under the proposal, and Reply-To is the
//     security list's plain address: a member's client finds the security
//     key by that user ID, and the reply threads by In-Reply-To;
//   - To goes encrypted to the attached Key, else to the pinned key
//     Fingerprint, else signed only (an applicant whose key was refused);
//   - ToSRC and CCSRC go to each SRC member, encrypted to their key (a
//     member without a usable key gets none), but those told has a mail of
//     their own in the same result.
func (s *Service) govMail(tx *bolt.Tx, before *Service, st governance.State, m governance.Mail, told map[string]bool, now time.Time) ([]queue.Msg, error) {
	sec := s.o.Roster.List(lists.Security)
	body, err := s.renderFields(m.Template, s.govFields(m.Fields))
	if err != nil {
		return nil, err
	}
	subject, anchor := m.Subject, ""
	if m.Thread != "" {
		subject = "[" + m.Thread + "] " + subject
		if p, ok := st.Proposal(m.Thread); ok {
			anchor = p.RootMsg
		}
	}
	var out []queue.Msg
	if m.To != "" {
		q, err := s.govTo(sec, before, m, subject, anchor, body, now)
		if err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	if m.ToSRC || m.CCSRC {
		var rcpts []recipient
		for _, rc := range s.committee() {
			if !told[strings.ToLower(rc.Email)] {
				rcpts = append(rcpts, rc)
			}
		}
		msgs, err := s.sealedEach(sec, rcpts, notice{Subject: subject, Body: body, Kind: "gov-" + m.Template,
			Incident: workflow.ID(m.Thread), Thread: anchor}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	if m.Thread != "" {
		// The anchor and every copy are filed under the proposal: a reply
		// that names any of them in In-Reply-To or References lands in its
		// thread (proposalOf).
		ids := []string{anchor}
		for _, q := range out {
			ids = append(ids, q.MessageID)
		}
		for _, id := range ids {
			if err := incidentdb.IndexMessageID(tx, id, workflow.ID(m.Thread)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// govTo is the one copy of a governance mail To one address: the applicant,
// the member concerned.
func (s *Service) govTo(sec lists.List, before *Service, m governance.Mail, subject, anchor, body string, now time.Time) (queue.Msg, error) {
	mid, err := s.newMessageID(sec.Domain())
	if err != nil {
		return queue.Msg{}, err
	}
	om := outMail{
		From:       s.listAddress(sec),
		To:         []*mail.Address{{Address: m.To}},
		ReplyTo:    &mail.Address{Address: sec.Address},
		Subject:    subject,
		MessageID:  mid,
		Date:       now,
		AutoSubmit: "auto-generated",
		XLoop:      sec.Address,
		Body:       body,
	}
	if anchor != "" {
		om.InReplyTo, om.References = anchor, []string{anchor}
	}
	q := queue.Msg{From: sec.SubAddress(lists.DetailBounces), To: []string{m.To}, MessageID: mid,
		Kind: "gov-" + m.Template, Incident: m.Thread}
	if s.o.ListKey == nil {
		q.Data, err = om.plain() // development: no list key, nothing is signed
		return q, err
	}
	if q.Body, err = om.entity(); err != nil {
		return queue.Msg{}, err
	}
	key := s.govKey(before, m, now)
	if key == nil {
		s.log.Info("governance mail signed only: no usable key for its recipient", "template", m.Template)
		q.Seal, err = signSpec(lists.Security, &om)
		return q, err
	}
	if q.Seal, err = sealSpec(lists.Security, key, s.outerHeader(sec, &om), &om); err != nil {
		return queue.Msg{}, err
	}
	// The key travels with the row: an applicant's or a removed member's
	// key is pinned nowhere the Sealer looks at delivery.
	q.Seal.Key, err = key.ArmoredPublic()
	return q, err
}

// govKey is the key a governance mail To one address is encrypted to: the
// armored Key it carries (a new member's, an applicant's), else the key
// pinned under Fingerprint in either keyring (before the change: a member
// just removed is told with the key they had). Only a key usable at now.
func (s *Service) govKey(before *Service, m governance.Mail, now time.Time) *keys.Key {
	if m.Key != "" {
		ks, err := keys.ReadPublicKeys(strings.NewReader(m.Key))
		if err == nil {
			for _, k := range ks {
				if k.Check(now) == nil {
					return k
				}
			}
		}
	}
	if m.Fingerprint == "" {
		return nil
	}
	for _, ring := range []*keys.Keyring{s.o.Members, before.o.Members} {
		if k, ok := ring.Lookup(m.Fingerprint); ok && k.Check(now) == nil {
			return k
		}
	}
	return nil
}

// govTick decides what time alone decides (governance.Tick): applications
// that pass by lazy consensus, proposals that lapse. A tick with nothing due
// reads the record and writes nothing. The decision, its record and its mail
// commit in one transaction; a roster change is swapped in after it.
func (s *Service) govTick(now time.Time) (int, error) {
	cfg := s.govConfig(now, false)
	var due bool
	err := s.o.DB.View(func(tx *bolt.Tx) error {
		st, err := govdb.Load(tx)
		due = err == nil && governance.Tick(st, now, cfg).Applied
		return err
	})
	if err != nil || !due {
		return 0, err
	}
	var g govOutcome
	var applied bool
	err = s.o.DB.Update(func(tx *bolt.Tx) error {
		g, applied = govOutcome{}, false
		st, err := govdb.Load(tx)
		if err != nil {
			return err
		}
		r := governance.Tick(st, now, cfg)
		if !r.Applied {
			return nil
		}
		if err := govdb.Save(tx, r.State); err != nil {
			return err
		}
		s.jobStep(JobGov, "saved") // a failpoint of the tests alone (testhooks.go)
		if g, err = s.govResult(tx, r, lists.Member{}, "", now); err != nil {
			return err
		}
		if err := s.enqueue(tx, now, g.out...); err != nil {
			return err
		}
		s.jobStep(JobGov, "queued")
		applied = true
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("governance: %w", err)
	}
	if !applied {
		return 0, nil
	}
	s.jobStep(JobGov, "committed")
	if g.roster {
		s.refresh()
	}
	s.jobStep(JobGov, "refreshed")
	s.log.Info("governance tick", "messages", len(g.out), "roster_changed", g.roster)
	return len(g.out), nil
}
