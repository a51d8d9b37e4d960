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
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// intake applies a message for security@ to its incident and queues the
// mail. It reads d and the transaction only (store: it may run twice).
// roster reports that the message's signed roster commands changed the
// roster (governance.go).
// tally counts the acknowledgements held back (ackcap.go).
func (s *Service) intake(tx *bolt.Tx, d *delivery, detail string, tally *ackTally) (_ workflow.Received, roster bool, _ error) {
	msg, now := d.msg, d.now
	sec := s.o.Roster.List(lists.Security)
	in := inboundOf(d, detail, s.o.Roster)
	inc, err := s.thread(tx, d, detail)
	if err != nil {
		return workflow.Received{}, false, err
	}
	inc, note, firstSeen, err := s.resubmitted(tx, msg, inc)
	if err != nil {
		return workflow.Received{}, false, err
	}
	if note != "" {
		in.Auto = true // its sender gets nothing back
	}
	if inc == nil {
		// Signed roster commands (governance.go) and /oncall commands
		// (tick.go) outside any thread are no report.
		if took, g, err := s.rosterMessage(tx, sec, d); took || err != nil {
			return workflow.Received{}, g.roster, err
		}
		if took, err := s.onCallMessage(tx, sec, msg, now); took || err != nil {
			return workflow.Received{}, false, err
		}
	}
	var id workflow.ID
	if inc == nil {
		// A new incident: within the intake limits (limits.go), counted.
		if err := s.admitNew(tx, d); err != nil {
			return workflow.Received{}, false, err
		}
		if id, err = incidentdb.NextID(tx, now.Year()); err != nil {
			return workflow.Received{}, false, err
		}
	}
	r := workflow.Receive(inc, id, in, now)
	if r.New {
		r.Incident.Commander = s.onCallNow(tx, now) // the on-call is the default incident commander
	}
	if sum, ok := msg.Protection().CiphertextHash(); ok && !firstSeen {
		if err := incidentdb.SetCiphertext(tx, sum, r.Incident.ID, msg.From(), now); err != nil {
			return r, roster, err
		}
	}
	var cmdMail []queue.Msg
	if !r.New {
		// Signed commands in the thread (docs/design.md §3): applied with
		// the message, in its transaction.
		after, msgs, changed, err := s.commands(tx, sec, r.Incident, d)
		if err != nil {
			return r, roster, err
		}
		r.Incident, cmdMail, roster = after, msgs, changed
	}
	if r.New {
		// A random anchor: threading headers name no incident (docs/threat-model.md
		// D7). It is filed under the incident, so that a reply whose
		// References carry only the anchor still finds its thread.
		anchor, err := s.newMessageID(sec.Domain())
		if err != nil {
			return r, roster, err
		}
		r.Incident.RootMsg = anchor
		if err := incidentdb.IndexMessageID(tx, r.Incident.RootMsg, r.Incident.ID); err != nil {
			return r, roster, err
		}
	}
	if err := s.putIncident(tx, &r.Incident); err != nil {
		return r, roster, err
	}
	// The reporter's key, pinned only from an authenticated sender
	// (reporterkey.go); before the acknowledgement is rendered.
	if err := s.reporterKeys(tx, d, &r.Incident, r.New); err != nil {
		return r, roster, err
	}
	var out []queue.Msg
	for _, m := range r.Mail {
		msgs, err := s.render(tx, sec, &r.Incident, m, d, note, tally)
		if err != nil {
			return r, roster, err
		}
		out = append(out, msgs...)
	}
	out = append(out, cmdMail...)
	for _, q := range out {
		if err := incidentdb.IndexMessageID(tx, q.MessageID, r.Incident.ID); err != nil {
			return r, roster, err
		}
	}
	if err := s.enqueue(tx, now, out...); err != nil {
		return r, roster, err
	}
	return r, roster, nil
}

// inboundOf is what workflow needs to know of a message to security@.
func inboundOf(d *delivery, detail string, r *lists.Roster) workflow.Inbound {
	msg := d.msg
	return workflow.Inbound{
		Sender:    msg.From(),
		Detail:    detail,
		Subject:   msg.Subject(),
		MessageID: msg.MessageID(),
		Refs:      msg.Refs(),
		Auto:      msg.Auto() || d.env.From == "" || r.IsOurs(d.env.From),
	}
}

// thread finds the incident a message to security@ belongs to
// (workflow.Thread), or nil for a new report. It only reads.
func (s *Service) thread(tx *bolt.Tx, d *delivery, detail string) (*workflow.Incident, error) {
	var lookErr error
	inc := workflow.Thread(inboundOf(d, detail, s.o.Roster), s.lookup(tx, &lookErr))
	return inc, lookErr
}

// resubmitted applies docs/threat-model.md D3: a captured ciphertext
// resubmitted by someone else is no new report. It joins the incident it
// first arrived on (inc is replaced), with a note for the SRC; its sender
// is not made a reporter and gets nothing back, so no automatic mail can
// become a decryption oracle. The note is data of its own, shown above the
// text: the message itself is never changed. firstSeen reports whether the
// ciphertext was known.
func (s *Service) resubmitted(tx *bolt.Tx, msg *inbound.Message, inc *workflow.Incident) (_ *workflow.Incident, note string, firstSeen bool, _ error) {
	sum, ok := msg.Protection().CiphertextHash()
	if !ok {
		return inc, "", false, nil
	}
	first, ok, err := incidentdb.Ciphertext(tx, sum)
	if err != nil || !ok {
		return inc, "", false, err
	}
	if strings.EqualFold(first.Sender, msg.From()) {
		return inc, "", true, nil
	}
	orig, err := incidentdb.Get(tx, first.Incident)
	if err != nil {
		return inc, "", true, nil
	}
	s.log.Warn("resubmitted ciphertext flagged", "incident", orig.ID)
	note = fmt.Sprintf("[embargo] This encrypted message was first received from %s on %s; it came again from %s, "+
		"who is not made a reporter and was sent nothing (a possible decryption-oracle attempt).",
		first.Sender, workflow.FormatInstant(first.At), msg.From())
	return orig, note, true, nil
}

// render turns one workflow mail action into queue rows, one per recipient.
func (s *Service) render(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, m workflow.Mail, d *delivery, note string, tally *ackTally) ([]queue.Msg, error) {
	switch m.To {
	case workflow.AudienceReporter:
		return s.renderAck(tx, sec, inc, m, d, tally)
	case workflow.AudienceSRC:
		return s.renderCopies(sec, inc, m, d.msg, note, d.now)
	}
	return nil, fmt.Errorf("listd: no recipients for audience %d", m.To)
}

// renderAck answers the reporter: signed by the list key, with the key
// attached, and encrypted to the reporter's own key when one is pinned to the
// incident; within the acknowledgement limits (ackcap.go), which count in
// tally what they hold back.
func (s *Service) renderAck(tx *bolt.Tx, sec lists.List, inc *workflow.Incident, m workflow.Mail, d *delivery, tally *ackTally) ([]queue.Msg, error) {
	env, msg, now := d.env, d.msg, d.now
	// RFC 3834 §4: the response goes to the envelope sender (Return-Path).
	to := env.From
	if to == "" || s.o.Roster.IsOurs(to) {
		return nil, nil
	}
	// docs/threat-model.md B8: per address first, then all addresses
	// together; a report whose acknowledgement is held back is still
	// taken and copied to the committee.
	if ok, err := s.allowAck(tx, to, inc.ID, now, tally); err != nil || !ok {
		return nil, err
	}
	incAddr := sec.SubAddress(string(inc.ID))
	fpr := listFingerprint(s.o.ListKey) // the key is attached at delivery (reporterCopy)
	body, err := s.o.Templates.Render(m.Template, map[string]any{
		"Project":         s.o.Project,
		"ID":              inc.ID,
		"IncidentAddress": incAddr, // for templates overridden before the list address took its place
		"ListAddress":     sec.Address,
		"KeyFingerprint":  fpr,
	})
	if err != nil {
		return nil, err
	}
	mid, err := s.newMessageID(sec.Domain())
	if err != nil {
		return nil, err
	}
	om := outMail{
		From:       s.listAddress(sec),
		To:         []*mail.Address{{Address: to}},
		ReplyTo:    s.reporterReplyTo(sec, inc),
		Subject:    fmt.Sprintf("[%s] Vulnerability report received", inc.ID),
		MessageID:  mid,
		InReplyTo:  msg.MessageID(), // RFC 3834 §3.1.5
		Date:       now,
		AutoSubmit: "auto-replied", // RFC 3834 §5.2
		XLoop:      sec.Address,
		Body:       body,
	}
	if msg.MessageID() != "" {
		om.References = []string{msg.MessageID()}
	}
	// The null sender: nothing may answer an automatic reply (RFC 3834 §3.3).
	q := queue.Msg{From: "", To: []string{to}, MessageID: mid, Kind: "ack", Incident: string(inc.ID)}
	if err := s.reporterCopy(tx, sec, inc, &om, to, now, &q, s.o.ListKey != nil); err != nil {
		return nil, err
	}
	// The reporter's reply threads by In-Reply-To this ID.
	if err := incidentdb.IndexMessageID(tx, mid, inc.ID); err != nil {
		return nil, err
	}
	return []queue.Msg{q}, nil
}

// listKeyArmored is the security list's public key, armored, as every
// acknowledgement attaches it: made once (the list key never changes while
// the daemon runs), not in every report's transaction. The slice is shared:
// it is never changed.
func (s *Service) listKeyArmored() ([]byte, error) {
	sh := s.sh
	sh.pubOnce.Do(func() { sh.pub, sh.pubErr = s.o.ListKey.ArmoredPublic() })
	return sh.pub, sh.pubErr
}

// renderCopies makes one copy per committee member (and fix-team member),
// each encrypted to that member's pinned key where one is usable. note is
// the SRC's note about the message (resubmitted), shown above its text.
func (s *Service) renderCopies(sec lists.List, inc *workflow.Incident, m workflow.Mail, msg *inbound.Message, note string, now time.Time) ([]queue.Msg, error) {
	var members []lists.Member
	for _, mem := range s.o.Roster.WithRole("src") {
		if !strings.EqualFold(mem.Email, m.Except) {
			members = append(members, mem)
		}
	}
	for _, a := range inc.FixTeam {
		if !strings.EqualFold(a, m.Except) && !containsMember(members, a) {
			mem, ok := s.o.Roster.Member(a)
			if !ok {
				mem = lists.Member{Email: a}
			}
			members = append(members, mem)
		}
	}
	encrypted := msg.Encrypted()
	if pn := partlyEncryptedNote(msg); pn != "" {
		s.log.Info("ciphertext beside other content: read as plaintext, nothing decrypted", "incident", inc.ID)
		note = strings.TrimPrefix(note+"\n\n"+pn, "\n\n")
	}
	rcpts, skipped := s.sealRecipients(sec, members, encrypted)
	if len(skipped) > 0 {
		s.log.Warn("committee copies withheld: no usable key", "incident", inc.ID, "count", len(skipped))
	}
	attachments := msg.Attachments()
	var names []string
	for _, a := range attachments {
		n := a.Name
		if n == "" {
			n = "(unnamed " + a.Type + ")"
		}
		names = append(names, n)
	}
	sender := msg.From()
	if msg.FromName() != "" {
		sender = msg.FromName() + " <" + msg.From() + ">"
	}
	date := "(none)"
	if !msg.Date().IsZero() {
		date = msg.Date().Format(time.RFC1123Z)
	}
	body, err := s.o.Templates.Render(m.Template, map[string]any{
		"ID":             inc.ID,
		"Received":       now,
		"SenderLine":     sender,
		"Subject":        msg.Subject(),
		"DateLine":       date,
		"Text":           msg.Text(),
		"Note":           note,
		"HTMLOmitted":    msg.HTMLOmitted(),
		"Attachments":    names,
		"FromReporter":   strings.EqualFold(msg.From(), inc.Reporter),
		"Encrypted":      encrypted,
		"Withheld":       skipped,
		"ListAddress":    sec.Address,
		"ReplyAddress":   sec.SubAddress(string(inc.ID)),
		"KeyFingerprint": listFingerprint(s.o.ListKey),
	})
	if err != nil {
		return nil, err
	}
	body = inert(body)
	subject := msg.Subject()
	if _, tagged := workflow.SubjectTag(subject); !tagged && !strings.Contains(subject, "["+string(inc.ID)+"]") {
		subject = "[" + string(inc.ID) + "] " + subject
	}
	who := msg.FromName()
	if who == "" {
		who = msg.From()
	}
	om := outMail{
		From:        &mail.Address{Name: who + " via " + sec.Local(), Address: sec.Address},
		Subject:     subject,
		References:  []string{inc.RootMsg},
		InReplyTo:   inc.RootMsg,
		Date:        now,
		ListID:      sec.ListID(),
		XLoop:       sec.Address,
		Body:        body,
		Attachments: attachments,
	}
	row := queue.Msg{From: sec.SubAddress(lists.DetailBounces), Kind: m.Template + "-copy", Incident: string(inc.ID)}
	for i := range rcpts {
		rcpts[i].replyTo = s.copyReplyTo(sec, inc, rcpts[i])
	}
	// One call: the copies share one rendered body, stored once.
	return s.copyEach(sec, rcpts, om, row)
}

// partlyEncryptedNote is the committee's note on a message that carries
// OpenPGP ciphertext beside other content or inside it, the layouts of
// EFAIL's direct exfiltration (docs/threat-model.md D2): only a message
// whose whole top level is encrypted counts as encrypted, so nothing in it
// was decrypted and it was read as plaintext. A copy without a word on it
// would look like any plaintext report, and its reader's mail client may
// offer to decrypt the ciphertext it forwards: the attack is aimed there.
// "" for every other message.
func partlyEncryptedNote(msg *inbound.Message) string {
	if !errors.Is(msg.Protection().NotDecrypted(), keys.ErrPartiallyEncrypted) {
		return ""
	}
	return wrap("[embargo] This message was not encrypted as a whole, so it was read as plaintext and nothing in it was decrypted: "+
		"it carries OpenPGP ciphertext beside other content. That is how EFAIL attacks wrap a captured ciphertext in parts of "+
		"their own, to make a mail client decrypt it and send the plaintext out. Do not decrypt what it carries unless you know "+
		"its sender and what it is.", 72)
}

// inert indents each line of a copy that starts with "/" by one space.
// The command grammar reads a "/" paragraph anywhere outside quoted text
// (workflow.Extract), so a copied report, command mail or display name
// would run as the commands of the member whose signed reply carries the
// copy along unquoted, as some mail clients put the original below the
// answer; commands start at column 0 only (docs/threat-model.md E5).
func inert(text string) string {
	if strings.HasPrefix(text, "/") {
		text = " " + text
	}
	// A lone CR ends a line too, once the copy is rendered (compose.go).
	return strings.ReplaceAll(strings.ReplaceAll(text, "\n/", "\n /"), "\r/", "\r /")
}

// copyReplyTo is the Reply-To of a committee copy. An encrypted copy
// replies to the list address, inside the encryption as outside it: the
// reply threads by In-Reply-To (the copy's Message-ID and the incident's
// anchor are filed under the incident), the incident ID stays out of the
// clear (docs/threat-model.md D7), and the member's mail client finds the
// security key by that address, its user ID, when it encrypts the reply;
// no key has security+ID@ as a user ID, so a client would stop and ask. A
// plaintext copy (a member without a usable key, on a list that allows it)
// replies to the incident address.
func (s *Service) copyReplyTo(sec lists.List, inc *workflow.Incident, rc recipient) *mail.Address {
	if rc.key != nil && s.o.ListKey != nil {
		return &mail.Address{Name: s.o.Project + " Security", Address: sec.Address}
	}
	return &mail.Address{Name: s.o.Project + " Security " + string(inc.ID), Address: sec.SubAddress(string(inc.ID))}
}

// reporterReplyTo is the Reply-To of what the reporter is sent (the
// acknowledgement, stage updates, /reply texts). As for an encrypted
// committee copy it is the list address, whose key the acknowledgement
// carries: the reporter's mail client finds that key by the address when it
// encrypts the reply, where security+ID@ is no key's user ID and makes it
// stop and ask. The reply threads by In-Reply-To (the message's ID is filed
// under the incident), and only for the incident's own people
// (workflow.Belongs). Without a list key (development) nothing is
// encrypted: the incident address.
func (s *Service) reporterReplyTo(sec lists.List, inc *workflow.Incident) *mail.Address {
	if s.o.ListKey != nil {
		return &mail.Address{Name: s.o.Project + " Security", Address: sec.Address}
	}
	return &mail.Address{Name: s.o.Project + " Security " + string(inc.ID), Address: sec.SubAddress(string(inc.ID))}
}

func containsMember(ms []lists.Member, addr string) bool {
	for _, m := range ms {
		if strings.EqualFold(m.Email, addr) {
			return true
		}
	}
	return false
}

// listFingerprint is the fingerprint of a list key, "" without one (a
// development setup: nothing is encrypted).
func listFingerprint(k *keys.Key) string {
	if k == nil {
		return ""
	}
	return k.Fingerprint()
}
