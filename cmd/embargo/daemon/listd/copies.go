package listd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
)

// recipient is one committee copy to make: the member and, if usable, their key.
type recipient struct {
	lists.Member
	key *keys.Key
}

// sealRecipients splits members into those who get a copy and those who do
// not. A member without a usable key gets no copy when the list requires
// encryption or the content arrived encrypted: what a reporter encrypted is
// never re-sent in plaintext.
func (s *Service) sealRecipients(sec lists.List, ms []lists.Member, sensitive bool) (send []recipient, skipped []string) {
	for _, mem := range ms {
		k, err := s.memberKey(mem)
		if err != nil && (sec.EncryptionRequired() || sensitive) {
			skipped = append(skipped, fmt.Sprintf("%s (%v)", mem.Email, err))
			continue
		}
		send = append(send, recipient{Member: mem, key: k})
	}
	return send, skipped
}

// seal renders a committee copy: encrypted to key and signed by the list when
// key is set, else plaintext (only where the list allows it).
func (s *Service) seal(sec lists.List, om *outMail, key *keys.Key) ([]byte, error) {
	if key == nil || s.o.ListKey == nil {
		if sec.EncryptionRequired() {
			return nil, errors.New("listd: plaintext copy on a list that requires encryption")
		}
		return om.plain()
	}
	return om.sealed(s.outerHeader(sec, om), key, s.o.ListKey, s.keyOptions())
}

// outerHeader is what relays see of an encrypted message: the list address,
// the recipient, a generic subject, random identifiers. Reply-To is the plain
// list address: replies thread by In-Reply-To, and the incident ID stays
// inside (threats.md D7).
func (s *Service) outerHeader(sec lists.List, om *outMail) mail.Header {
	outer := outMail{
		From:       s.listAddress(sec),
		To:         om.To,
		ReplyTo:    &mail.Address{Address: sec.Address},
		Subject:    sec.OuterSubject,
		MessageID:  om.MessageID,
		InReplyTo:  om.InReplyTo,
		References: om.References,
		Date:       om.Date,
		AutoSubmit: om.AutoSubmit,
		ListID:     om.ListID,
		XLoop:      om.XLoop,
	}
	if om.AutoSubmit == "auto-replied" {
		// The reporter's own Message-ID is not ours to repeat in clear.
		outer.InReplyTo, outer.References = "", nil
	}
	return outer.header()
}

func (s *Service) listAddress(sec lists.List) *mail.Address {
	return &mail.Address{Name: s.o.Project + " Security Response", Address: sec.Address}
}

func listID(sec lists.List) string { return "<" + sec.Local() + "." + sec.Domain() + ">" }

func (s *Service) random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		return "", fmt.Errorf("listd: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// newMessageID makes a random Message-ID: nothing in it links copies to one
// another or to the reporter's identifiers (threats.md D7).
func (s *Service) newMessageID(kind, domain string) (string, error) {
	r, err := s.random(12)
	if err != nil {
		return "", err
	}
	return kind + "." + r + "@" + domain, nil
}

// Alert queues a notice to the committee that a message could not be delivered.
// The delivery worker calls it inside the transaction that marks the row failed.
// It is never sent to the author of the triggering mail (threats.md B8), and
// failures of alerts raise no further alerts.
func (s *Service) Alert(tx *bolt.Tx, r queue.Row, reason string) error {
	sec := s.o.Roster.List(lists.Security)
	now := s.o.Now().UTC()
	body, err := s.o.Templates.Render("alert", map[string]any{
		"Row": r.ID, "Kind": r.Kind, "Incident": r.Incident, "To": r.To, "MessageID": r.MessageID,
		"Created": r.Created, "Attempts": r.Attempts, "Reason": reason,
	})
	if err != nil {
		return err
	}
	rcpts, _ := s.sealRecipients(sec, s.o.Roster.WithRole("src"), false)
	var out []queue.Msg
	for _, rc := range rcpts {
		mid, err := s.newMessageID("alert", sec.Domain())
		if err != nil {
			return err
		}
		om := outMail{
			From:       &mail.Address{Name: s.o.Project + " embargo", Address: sec.Address},
			To:         []*mail.Address{{Name: rc.Name, Address: rc.Email}},
			Subject:    "[embargo] delivery failed",
			MessageID:  mid,
			Date:       now,
			AutoSubmit: "auto-generated",
			XLoop:      sec.Address,
			Body:       body,
		}
		data, err := s.seal(sec, &om, rc.key)
		if err != nil {
			return err
		}
		out = append(out, queue.Msg{From: "", To: []string{rc.Email}, Data: data, MessageID: mid, Kind: "alert", Incident: r.Incident, NoAlert: true})
	}
	s.log.Warn("delivery failed", "row", r.ID, "kind", r.Kind, "incident", r.Incident, "reason", reason)
	return queue.Enqueue(tx, now, out...)
}
