package listd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// commandAuthor is the member a message's From names, when that member
// takes part in the incident's private thread (the SRC, its fix team): the
// one who may be told that their commands did not count. A stranger gets
// nothing (docs/threat-model.md E1). inc is nil outside any thread.
func (s *Service) commandAuthor(from string, inc *workflow.Incident) (lists.Member, bool) {
	mem, ok := s.o.Roster.Member(from)
	if !ok {
		return lists.Member{}, false
	}
	if s.o.Roster.IsCommittee(mem.Email) || (inc != nil && inc.HasFixTeamMember(mem.Email)) {
		return mem, true
	}
	return lists.Member{}, false
}

// signatureRefusal is the one receipt for a member's message whose command
// lines did not count because of its signature: nothing applied, because
// of what, and how to fix it, encrypted to the member's pinned key (no
// receipt without one: it speaks of the incident).
func (s *Service) signatureRefusal(sec lists.List, mem lists.Member, id workflow.ID, thread string, msg *inbound.Message, now time.Time) ([]queue.Msg, error) {
	why, fix := signatureProblem(msg.Signature(), mem)
	return s.commandRefusal(sec, mem, id, thread, msg, now, "Your message has command lines, but nothing was applied, because "+why+".", fix)
}

// commandRefusal is the receipt of a message none of whose commands was
// applied for a reason that is the message's, not a command's: the
// paragraph that says what was wrong, the one that says how to fix it,
// each command quoted as not applied, and how to send commands.
func (s *Service) commandRefusal(sec lists.List, mem lists.Member, id workflow.ID, thread string, msg *inbound.Message, now time.Time, why, fix string) ([]queue.Msg, error) {
	body := refusedReceipt(id, now, wrap(why, 72)+"\n\n"+wrap(fix, 72), msg, s.howToSend(sec))
	return s.toMember(sec, mem, notice{Subject: fmt.Sprintf("[%s] receipt: refused", id), Body: body, Kind: "receipt", Thread: thread}, now)
}

// refusedReceipt is the text of a receipt that applied nothing: the
// header, what was wrong (why, wrapped), each command quoted as not
// applied, and how to send them (howTo).
func refusedReceipt(id workflow.ID, now time.Time, why string, msg *inbound.Message, howTo string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Commands for %s, processed %s.\n\n%s\n", id, workflow.FormatInstant(now), why)
	// The lines as read, quoted, so that the receipt can never be taken for
	// commands (docs/threat-model.md E5).
	cmds, _ := msg.Commands()
	for _, c := range cmds {
		b.WriteString("\n")
		for _, q := range strings.Split(c.String(), "\n") {
			b.WriteString(strings.TrimRight("> "+q, " ") + "\n")
		}
		b.WriteString("not applied\n")
	}
	b.WriteString("\n" + howTo)
	return b.String()
}

// howToSend is the paragraph every refusal ends with: the path a member's
// mail client takes without being told a key ID.
func (s *Service) howToSend(sec lists.List) string {
	if s.o.RequireEncryption {
		return fmt.Sprintf("To send commands, reply to this message or to your copy of the thread: the\n"+
			"reply goes to %s and is filed under the incident by its\n"+
			"In-Reply-To. Sign it with your pinned key and encrypt it: this committee\n"+
			"requires both. Your mail client finds the security key by that address\n"+
			"(%s).\n", sec.Address, s.fingerprint(s.o.ListKey))
	}
	return fmt.Sprintf("To send commands, reply to this message or to your copy of the thread: the\n"+
		"reply goes to %s and is filed under the incident by its\n"+
		"In-Reply-To. Sign it with your pinned key; encrypt it too, and your mail\n"+
		"client finds the security key by that address (%s).\n", sec.Address, s.fingerprint(s.o.ListKey))
}

// signatureProblem says why a signature does not count, and how the member
// fixes it: one sentence each, for every keys.SigStatus but SigGood.
func signatureProblem(v keys.Verdict, mem lists.Member) (why, fix string) {
	pinned := mem.Fingerprint
	if pinned == "" {
		pinned = "(none: ask the SRC to pin your key)"
	}
	d := detail(v.Err)
	switch v.Status {
	case keys.SigNone:
		return "the message is not signed",
			"Sign it with your pinned OpenPGP key " + pinned + ": as PGP/MIME (mutt: set crypt_autosign, or p then s in the compose menu; Thunderbird: Security, Digitally Sign) or with gpg --clearsign."
	case keys.SigBad:
		return "the signature does not match the message (" + d + "): the text was changed after it was signed",
			"Send it again straight to the list, signed as PGP/MIME; a mailing list, a forwarder or a client that re-encodes the text after signing breaks the signature."
	case keys.SigUnknownKey:
		return "your key is not the one pinned for you: the message was signed by " + d + ", and the key pinned for " + mem.Email + " is " + pinned,
			"Sign with that key, or ask the SRC to rotate it: your new public key in the keys directory and its fingerprint in your [[members]] entry."
	case keys.SigExpired:
		return "the signature, or the key that made it, has expired (" + d + ")",
			"Sign again with a current key; if your key expired, extend it (gpg --quick-set-expire " + mem.Fingerprint + " 1y, and its subkeys with gpg --quick-set-expire " + mem.Fingerprint + " 1y '*') and send the SRC the updated public key."
	case keys.SigRevoked:
		return "the key that made the signature is revoked (" + d + ")",
			"Sign with a key that is not revoked, your pinned key " + pinned + " if it still is, or ask the SRC to pin your new key."
	case keys.SigWeakHash:
		return "the signature uses a weak hash (" + d + ")",
			"Sign with SHA-256 or better: add \"personal-digest-preferences SHA512 SHA384 SHA256\" to gpg.conf, or pass --digest-algo SHA256."
	case keys.SigWeakKey:
		return "the key that made the signature is too weak (" + d + ")",
			"Make a new key (ed25519, or RSA of at least 3072 bits, bound with SHA-256) and ask the SRC to pin it."
	case keys.SigPartial:
		return "only part of the message is signed (" + d + ")",
			"Sign the whole message as PGP/MIME and send it straight to the list: no list footer, no forwarded part, no text outside the signature."
	case keys.SigForwarded:
		return "the only signature is inside a forwarded message",
			"Forwarded commands never count: write the commands in a message of your own and sign it."
	case keys.SigMultiple:
		return "the message carries more than one signature (" + d + ")",
			"Sign it once, with your pinned key " + pinned + "."
	}
	return "the signature cannot be read (" + d + ")",
		"Sign it as PGP/MIME (RFC 3156) or with gpg --clearsign, and send it again."
}

// detail is the part of a keys error after its sentinel ("keys: signer is
// not a trusted key: 0123…" gives "0123…"), or the sentinel itself, without
// its package prefix.
func detail(err error) string {
	if err == nil {
		return "no reason given"
	}
	msg := err.Error()
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		if rest, ok := strings.CutPrefix(msg, e.Error()+": "); ok && rest != "" {
			return rest
		}
	}
	return strings.TrimPrefix(msg, "keys: ")
}

// wrap breaks a paragraph into lines of at most width columns, at spaces
// (a longer word stays whole).
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		switch {
		case i == 0:
		case n+1+len([]rune(w)) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len([]rune(w))
	}
	return b.String()
}
