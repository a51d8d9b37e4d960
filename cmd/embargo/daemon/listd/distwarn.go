package listd

import (
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

// The warning to a member whose post to distributors@ was refused for its
// protection: sent in plaintext, or encrypted but not signed by a pinned
// member key (docs/threat-model.md G2). The SMTP refusal alone reaches the
// sender as a bounce of their own MTA, which may quote the embargoed text
// in plaintext once more and which many never read; the warning is
// encrypted to the member's pinned key, says what happened and how to
// post, and quotes nothing of the refused post, not even its subject.
//
// Who is warned is read from From, not from the envelope sender. Both are
// unauthenticated; From is the address the member's mail client writes and
// the roster holds, where a genuine post's envelope sender is often a
// provider's bounce address (VERP, SRS) that names no member. Since the
// warning goes to the roster's address, encrypted to the key pinned there,
// a forged From makes the real member read that their address was used,
// and tells the forger nothing. A forger may still repeat it, so one
// member gets at most one warning per WarnWindow.
//
// Nobody else is warned: not a non-member, not a member without a usable
// pinned key or outside the list and the SRC, not one of our own addresses
// (docs/threat-model.md B9), and not the null sender or automatic mail
// (RFC 3834 §2).

// WarnWindow is the period in which one member gets at most one warning.
const WarnWindow = time.Hour

// The results of a warning, as Options.DistributorWarning and /metrics
// name them.
const (
	WarningSent = "sent" // queued, encrypted to the member
	WarningHeld = "held" // held back: the member was warned in the last WarnWindow
)

// limitWarn is the kind of the warnings' key in the limits' record
// (incidentdb.LimitKey): "distwarn/" and the member's address.
const limitWarn = "distwarn"

// warnTally counts the warnings one message's transaction queued and held
// back; like ackTally it belongs to one run of the transaction and is
// reported after the commit.
type warnTally struct{ sent, held int }

// postFault is why a post was refused, for the warning: the reason and the
// fix, one sentence each, and whether its text travelled in plaintext.
type postFault struct {
	plaintext bool
	why, fix  string
}

// plaintextFault is the fault of a post that was not encrypted.
func (s *Service) plaintextFault() postFault {
	return postFault{plaintext: true,
		why: "it was not encrypted to the list key " + s.fingerprint(s.o.DistributorsKey),
		fix: "Encrypt it to the list key and sign it with your pinned OpenPGP key, as PGP/MIME (mutt: set crypt_autoencrypt and crypt_autosign, or p then b in the compose menu; Thunderbird: Security, Require Encryption and Digitally Sign) or with gpg --sign --encrypt --armor.",
	}
}

// signatureFault is the fault of an encrypted post whose signature does not
// count for mem (signatureProblem), or, with a good signature by a key that
// is no member's, of a post signed by the wrong key.
func signatureFault(v keys.Verdict, mem lists.Member) postFault {
	if v.OK() {
		return postFault{why: "it was signed by the key " + v.Fingerprint + ", which is not the key pinned for you (" + mem.Fingerprint + ")",
			fix: "Sign with your pinned key, or ask the SRC to pin your new one."}
	}
	why, fix := signatureProblem(v, mem)
	if v.Status == keys.SigNone {
		fix = "Sign it with your pinned OpenPGP key as well as encrypting it, as PGP/MIME (mutt: set crypt_autosign, or p then b in the compose menu; Thunderbird: Security, Digitally Sign) or with gpg --sign --encrypt --armor."
	}
	return postFault{why: why, fix: fix}
}

// warnPoster queues the warning to the member the From of d names, when
// that member may be warned and was not warned in the last WarnWindow.
// faultFor gives the reason, for that member (a signature's depends on the
// key pinned for them).
func (s *Service) warnPoster(tx *bolt.Tx, d *delivery, faultFor func(lists.Member) postFault, tally *warnTally) error {
	msg := d.msg
	if msg == nil || msg.Auto() || d.env.From == "" || s.ownAddress(d.env.From) || s.ownAddress(msg.From()) || s.o.DistributorsKey == nil {
		return nil
	}
	mem, ok := s.o.Roster.Member(msg.From())
	if !ok || !(mem.Has(workflow.RoleDistributor) || s.o.Roster.IsCommittee(mem.Email)) {
		return nil
	}
	key, err := s.memberKey(mem)
	if err != nil {
		return nil // no usable pinned key: nothing is sent unencrypted (docs/threat-model.md D6)
	}
	lk := incidentdb.LimitKey(limitWarn, strings.ToLower(mem.Email))
	since := d.now.Add(-WarnWindow)
	if n, _ := incidentdb.OpenedSince(tx, lk, since); n > 0 {
		tally.held++
		s.log.Info("distributor warning held back: one a member per hour", "window", WarnWindow)
		return nil
	}
	if err := incidentdb.CountOpened(tx, lk, d.now, since, 1); err != nil {
		return err
	}
	out, err := s.distributorWarning(mem, key, faultFor(mem), d.now)
	if err != nil {
		return err
	}
	tally.sent++
	return s.enqueue(tx, d.now, out)
}

// distributorWarning renders the warning and seals it to key, from the
// distributors list and signed by its key, under the generic outer Subject
// (docs/threat-model.md D7), from the null sender (RFC 3834 §3.3).
func (s *Service) distributorWarning(mem lists.Member, key *keys.Key, f postFault, now time.Time) (queue.Msg, error) {
	dl := s.o.Roster.List(lists.Distributors)
	sec := s.o.Roster.List(lists.Security)
	plain := ""
	if f.plaintext {
		plain = "yes"
	}
	body, err := s.renderFields("distributors-warning", map[string]string{
		"member": mem.Email, "list": dl.Address, "at": workflow.FormatInstant(now),
		"why": f.why, "fix": wrap(f.fix, 72), "plaintext": plain, "security": sec.Address,
		"listkey": s.fingerprint(s.o.DistributorsKey), "pinned": key.Fingerprint(),
	})
	if err != nil {
		return queue.Msg{}, err
	}
	const kind = "distributors-warning"
	mid, err := s.newMessageID(dl.Domain())
	if err != nil {
		return queue.Msg{}, err
	}
	// Replies go to the SRC: "I did not send it" is theirs to hear, and a
	// reply to distributors@ would be another post.
	om := outMail{
		From:       &mail.Address{Name: s.o.Project + " Security Response", Address: dl.Address},
		To:         []*mail.Address{{Name: mem.Name, Address: mem.Email}},
		ReplyTo:    &mail.Address{Address: sec.Address},
		Subject:    "[embargo] a post from your address to " + dl.Address + " was refused",
		MessageID:  mid,
		Date:       now,
		AutoSubmit: "auto-replied",
		XLoop:      dl.Address,
		Body:       body,
	}
	entity, err := om.entity()
	if err != nil {
		return queue.Msg{}, err
	}
	outer := om // what relays see: the same fields under the generic Subject
	outer.Subject = dl.OuterSubject
	spec, err := sealSpec(lists.Distributors, key, outer.header(), &om)
	if err != nil {
		return queue.Msg{}, err
	}
	return queue.Msg{To: []string{mem.Email}, Body: entity, Seal: spec, MessageID: mid, Kind: kind}, nil
}

// ownAddress reports whether addr is one of our list addresses or their
// sub-addresses. Roster.IsOurs also counts every address of the security
// list's domain, which would take the SRC's own addresses for ours.
func (s *Service) ownAddress(addr string) bool {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return false
	}
	base, _, _ := strings.Cut(local, "+")
	for _, l := range s.o.Roster.Lists {
		if strings.EqualFold(domain, l.Domain()) && strings.EqualFold(base, l.Local()) {
			return true
		}
	}
	return false
}

// countWarnings reports a committed message's warnings.
func (s *Service) countWarnings(t warnTally) {
	if s.o.DistributorWarning == nil {
		return
	}
	for range t.sent {
		s.o.DistributorWarning(WarningSent)
	}
	for range t.held {
		s.o.DistributorWarning(WarningHeld)
	}
}
