package listd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// recipient is one committee copy to make: the member and, if usable, their key.
type recipient struct {
	lists.Member
	key *keys.Key
	// replyTo, when set, is this copy's Reply-To in place of the message's
	// (a header of the copy, not of the shared body).
	replyTo *mail.Address
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

// seal makes q a committee copy of om: sealed at delivery, encrypted to key
// and signed by the list when key is set (seal.go), else plaintext, which
// only a list that allows it sends. q.Body must be om's entity, or with
// text its text (om.Body), whose entity the Sealer writes (composed.go).
func (s *Service) seal(q *queue.Msg, sec lists.List, om *outMail, key *keys.Key, text bool) error {
	if key == nil || s.o.ListKey == nil {
		if sec.EncryptionRequired() {
			return errors.New("listd: plaintext copy on a list that requires encryption")
		}
		head, err := om.plainHead(q.Body)
		q.Data = head
		return err
	}
	outer := s.outerMail(sec, om)
	spec, err := compose(om, &outer, text, false) // headers (and entity) written at delivery
	switch {
	case err == nil:
		q.Seal = &queue.Seal{Signer: string(lists.Security), To: key.Fingerprint(), Compose: spec}
		return nil
	case !errors.Is(err, errNotComposable):
		return err
	}
	if text { // this copy's own entity, rendered now
		if q.Body, err = om.entity(); err != nil {
			return err
		}
	}
	q.Seal, err = sealSpec(lists.Security, key, outer.header(), om)
	return err
}

// outerHeader is what relays see of an encrypted message: the list address,
// the recipient, a generic subject, random identifiers. Reply-To is the plain
// list address: replies thread by In-Reply-To, and the incident ID stays
// inside (docs/threat-model.md D7).
func (s *Service) outerHeader(sec lists.List, om *outMail) mail.Header {
	outer := s.outerMail(sec, om)
	return outer.header()
}

// outerMail is the outer header's fields (outerHeader).
func (s *Service) outerMail(sec lists.List, om *outMail) outMail {
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
	return outer
}

func (s *Service) listAddress(sec lists.List) *mail.Address {
	return &mail.Address{Name: s.o.Project + " Security Response", Address: sec.Address}
}

func (s *Service) random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		return "", fmt.Errorf("listd: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// newMessageID makes a random Message-ID: nothing in it links copies to one
// another or to the reporter's identifiers, and nothing says what kind of
// mail it names (an "embargo-lifted" or "distributor-final" in a header
// that travels in clear would tell whoever watches the relay how far an
// embargo has come): the token alone (docs/threat-model.md D7). The queue
// row keeps the kind, for the logs and the operator.
func (s *Service) newMessageID(domain string) (string, error) {
	r, err := s.token()
	if err != nil {
		return "", err
	}
	return r + "@" + domain, nil
}

// token is the unique part of a Message-ID or a thread anchor: the
// millisecond it was made (11 hex digits) and 64 random bits. The
// message-ID index files each Message-ID the service makes (four or five a
// report); a token that grows with time, leading the ID, files them all at
// the end of the index: one leaf per commit, where a kind before the token
// kept one end per kind (three or four leaves), and the second alone, as
// before that, put the Message-IDs of one second (thousands under load) at
// random places in that second's range, some twenty leaves per commit. The
// instant says no more than the relay that carries the message logs
// anyway; the random bits keep the ID unguessable (docs/threat-model.md
// D7).
func (s *Service) token() (string, error) {
	r, err := s.random(8)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%011x", max(s.o.Now().UnixMilli(), 0)) + r, nil
}

// Alert queues a notice to the committee that a message could not be delivered.
// The delivery worker calls it inside the transaction that marks the row failed.
// It is never sent to the author of the triggering mail (docs/threat-model.md B8), and
// failures of alerts raise no further alerts. The reason quotes the relay's
// reply, whose text the relay or a remote MX behind it chose: quoteOutside.
func (s *Service) Alert(tx *bolt.Tx, r queue.Row, reason string) error {
	s = s.current()
	sec := s.o.Roster.List(lists.Security)
	now := s.o.Now().UTC()
	body, err := s.o.Templates.Render("alert", map[string]any{
		"Row": r.ID, "Kind": r.Kind, "Incident": r.Incident, "To": r.To, "MessageID": r.MessageID,
		"Created": r.Created, "Attempts": r.Attempts, "Reason": quoteOutside(reason, "            "),
	})
	if err != nil {
		return err
	}
	// It says nothing of an incident: plaintext where the list allows it.
	rcpts, _ := s.sealRecipients(sec, s.o.Roster.WithRole(workflow.RoleSRC), false)
	om := outMail{
		From:       &mail.Address{Name: s.o.Project + " embargo", Address: sec.Address},
		Subject:    "[embargo] delivery failed",
		Date:       now,
		AutoSubmit: "auto-generated",
		XLoop:      sec.Address,
		Body:       body,
	}
	out, err := s.copyEach(sec, rcpts, om, queue.Msg{Kind: "alert", Incident: r.Incident, NoAlert: true})
	if err != nil {
		return err
	}
	s.log.Warn("delivery failed", "row", r.ID, "kind", r.Kind, "incident", r.Incident, "reason", reason)
	return s.enqueue(tx, now, out...)
}

// quoteOutside makes text an outsider chose (a relay's or a remote MX's
// reply to a command, quoted in an alert) safe to show the committee as it
// was written. Each line break (errors.Join writes them) starts a line
// indented by indent, which must not be empty, so that no line starts
// with "/" (docs/threat-model.md E5); the rest is EscapeLine's.
func quoteOutside(s, indent string) string {
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		lines[i] = EscapeLine(line)
	}
	return strings.Join(lines, "\n"+indent)
}

// EscapeLine writes every rune of s that is not printable as Go writes it
// in a quoted string: a CR as \r (a lone CR is a line end to compose and
// to many a reader, which would start a line there), an escape sequence as
// \x1b, a bidi override as \u202e, an invalid byte as \xff. Spaces and
// tabs stay. Text an outsider chose, shown to the committee in mail or to
// the operator on a terminal (`embargo queue list`, `embargo release
// list`), cannot drive what shows it.
func EscapeLine(s string) string {
	var b strings.Builder
	for s != "" {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == ' ' || r == '\t' || strconv.IsPrint(r):
			b.WriteString(s[:n])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\r', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[n:]
	}
	return b.String()
}

// maxQuotedLine is the most bytes, escaped, of one line of the operator's
// or an outsider's text an alert of the service's own quotes (cutLine):
// an address from the envelope (at most 254 bytes through smtpd), a line
// of a configuration's problems.
const maxQuotedLine = 400

// cutLine cuts s, valid UTF-8 (as EscapeLine writes it), to at most n
// bytes on a rune boundary, marking the cut.
func cutLine(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// committee is the SRC as recipients of mail that speaks of an incident:
// members without a usable key get none.
func (s *Service) committee() []recipient {
	rcpts, _ := s.sealRecipients(s.o.Roster.List(lists.Security), s.o.Roster.WithRole(workflow.RoleSRC), true)
	return rcpts
}

// copyEach makes one copy of om for each recipient: To that recipient alone,
// under its own random Message-ID, sealed to the
// recipient's key (seal). Each becomes a copy of row with To, MessageID and
// the content set. It is the one loop behind every per-member copy; the
// copies share one body, which the queue stores once: the text when every
// copy is sealed and nothing is attached (the Sealer writes the entity),
// else the entity rendered here.
func (s *Service) copyEach(sec lists.List, rcpts []recipient, om outMail, row queue.Msg) ([]queue.Msg, error) {
	if len(rcpts) == 0 {
		return nil, nil
	}
	text := om.Body != "" && len(om.Attachments) == 0 && s.o.ListKey != nil
	for _, rc := range rcpts {
		text = text && rc.key != nil // a plaintext copy carries the entity
	}
	var body []byte
	var err error
	if text {
		body = []byte(om.Body)
	} else if body, err = om.entity(); err != nil {
		return nil, err
	}
	var out []queue.Msg
	for _, rc := range rcpts {
		mid, err := s.newMessageID(sec.Domain())
		if err != nil {
			return nil, err
		}
		c := om
		c.To, c.MessageID = []*mail.Address{{Name: rc.Name, Address: rc.Email}}, mid
		if rc.replyTo != nil {
			c.ReplyTo = rc.replyTo
		}
		q := row
		q.To, q.MessageID, q.Body = []string{rc.Email}, mid, body
		if err := s.seal(&q, sec, &c, rc.key, text); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, nil
}

// notice is an automatic message from the security list to committee
// members: a receipt, an alert, a reminder, a digest.
type notice struct {
	Subject string
	Body    string
	Kind    string // the queue row's kind, and the Message-ID's prefix
	// Incident names the incident on the queue row; receipts and answers
	// to a member leave it empty.
	Incident workflow.ID
	// Thread is the Message-ID the notice is filed under (an incident's
	// root message), or "".
	Thread string
	// Reply marks an answer to the member's own message (RFC 3834 §5:
	// Auto-Submitted auto-replied, else auto-generated).
	Reply bool
}

// sealedEach sends n to each recipient from the list address, each copy
// encrypted to its recipient and signed by the list (copyEach).
func (s *Service) sealedEach(sec lists.List, rcpts []recipient, n notice, now time.Time) ([]queue.Msg, error) {
	om := outMail{
		From:       s.listAddress(sec),
		Subject:    n.Subject,
		Date:       now,
		AutoSubmit: "auto-generated",
		XLoop:      sec.Address,
		Body:       n.Body,
	}
	if n.Reply {
		om.AutoSubmit = "auto-replied"
	}
	if n.Thread != "" {
		om.InReplyTo, om.References = n.Thread, []string{n.Thread}
	}
	row := queue.Msg{Kind: n.Kind, Incident: string(n.Incident)}
	if !n.Reply {
		// Automatic mail that answers nothing (an alert, a reminder, a
		// digest) has the list's bounce address, so that a member's server
		// refusing it is heard of (verp.go); an answer to a member keeps
		// the null sender (RFC 3834 §3.3).
		row.From = sec.SubAddress(lists.DetailBounces)
	}
	return s.copyEach(sec, rcpts, om, row)
}

// toMember answers one committee member, encrypted to their key (receipts,
// refusals, /status and /help). A member without a usable key gets nothing:
// these messages talk about the incident.
func (s *Service) toMember(sec lists.List, mem lists.Member, n notice, now time.Time) ([]queue.Msg, error) {
	key, err := s.memberKey(mem)
	if err != nil || s.o.ListKey == nil {
		s.log.Info("no usable key for a reply to a member", "kind", n.Kind)
		return nil, nil
	}
	n.Reply, n.Incident = true, ""
	n.Body = withReplyLine(sec, n)
	return s.sealedEach(sec, []recipient{{Member: mem, key: key}}, n, now)
}

// alertSRC renders an alert template to the committee, sealed. Alerts speak
// of an incident (inc; a placeholder such as "distributors" for list-wide
// ones): members without a usable key get none.
func (s *Service) alertSRC(inc *workflow.Incident, a workflow.AlertSRC, now time.Time) ([]queue.Msg, error) {
	return s.alertTo(s.committee(), inc, a, now)
}

// alertTo renders an alert template to rcpts, sealed, in the incident's thread.
func (s *Service) alertTo(rcpts []recipient, inc *workflow.Incident, a workflow.AlertSRC, now time.Time) ([]queue.Msg, error) {
	body, err := s.renderFields(a.Template, a.Fields)
	if err != nil {
		return nil, err
	}
	return s.sealedEach(s.o.Roster.List(lists.Security), rcpts, notice{
		Subject: fmt.Sprintf("[%s] %s", inc.ID, a.Template), Body: body,
		Kind: "alert-" + a.Template, Incident: inc.ID, Thread: inc.RootMsg,
	}, now)
}

// renderFields renders a template whose data is the project's name and fields,
// and ReplyAddress: where a member sends commands about the mail's incident
// or proposal (fields["id"]), the address that names both the list and the
// ID; the list address for any other mail (replyAddress).
func (s *Service) renderFields(tmpl string, fields map[string]string) (string, error) {
	sec := s.o.Roster.List(lists.Security)
	data := map[string]any{"Project": s.o.Project, "ReplyAddress": replyAddress(sec, fields["id"])}
	for k, v := range fields {
		data[k] = v
	}
	return s.o.Templates.Render(tmpl, data)
}

// replyAddress is the address a member's commands about id go to, which
// names the list and the incident (SEC-…) or proposal (GOV-…) at once:
// the mail the committee gets says "Reply to <it> with signed commands."
// in its body, so that a reply quoting it binds the commands to this list
// and this thread ([commands] require_binding, binding.go). For any other
// id, the list address.
func replyAddress(sec lists.List, id string) string {
	if i, ok := workflow.ParseID(id); ok {
		return sec.SubAddress(string(i))
	}
	if p, ok := workflow.ParseProposalID(id); ok {
		return sec.SubAddress(p)
	}
	return sec.Address
}

// withReplyLine is the body of an answer to a member (a receipt, /status,
// /help, a governance reply) with, at its end, the line that names where
// commands about it go: the thread its subject's leading [TAG] names
// (every answer's subject starts with one), the list for a tag that is no
// incident or proposal ID ([on-call], [roster]). A reply quoting the
// answer then names the list and the thread (binding.go).
func withReplyLine(sec lists.List, n notice) string {
	tag := ""
	if rest, ok := strings.CutPrefix(n.Subject, "["); ok {
		tag, _, _ = strings.Cut(rest, "]")
	}
	return strings.TrimRight(n.Body, "\n") + "\n\nReply to " + replyAddress(sec, tag) + " with signed commands.\n"
}
