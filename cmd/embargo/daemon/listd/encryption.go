package listd

import (
	"fmt"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// Commands that must be encrypted as well as signed ([commands]
// require_encryption; docs/threat-model.md E1, E3). A signature authorises
// a member's commands; encryption to the security list's key keeps their
// text (embargoed details in /set, /reply) off every relay, and binds the
// message to this list: another daemon, with another key, cannot read it,
// so a signed command seen on one committee cannot be replayed on another
// where the same member sits, whose replay cache is its own.
//
// Every entry point that authorises commands by a signature asks
// encryptionMissing after the signature counted and before the replay
// cache records it: the incident thread (commands.go), roster commands in
// any thread, in a proposal's thread or to the list alone (governance.go
// rosterCommands), and /oncall (tick.go). A refused message records
// nothing, so the member can send the same signed text again, encrypted.
// The message itself is stored and copied as any other message there: only
// its commands are refused. Distributor posts have their own, stricter rule
// (distributors.go).

// encryptionMissing reports whether a message's commands must be refused
// for want of encryption: the committee requires it, and the message was
// not encrypted to the list key.
//
// inbound.Message.Encrypted is keys.Opened.Encrypted: true only when the
// whole top level of the message is one OpenPGP message (PGP/MIME, or a
// text/plain body that is exactly one armored message) encrypted to the
// list key and decrypted with its integrity intact. A ciphertext beside or
// inside other content (an encrypted attachment, a signed message with an
// encrypted part) is never decrypted and never counts. For an encrypted
// message the signature is looked for only inside the plaintext (RFC 3156
// §6.1 and §6.2), and a good one covers the whole decrypted entity (one
// that covers part of it is SigPartial): so when the signature counts and
// the message is encrypted, everything signed was inside the encryption.
func (s *Service) encryptionMissing(msg *inbound.Message) bool {
	return s.o.RequireEncryption && !msg.Encrypted()
}

// encryptionRefusal is the receipt for a member's message whose signature
// counts but which was not encrypted to the list key while the committee
// requires it: nothing applied, why, and how to send it again. Like every
// receipt it is encrypted to the member's pinned key. The log line names
// the thread and the signer's fingerprint only.
func (s *Service) encryptionRefusal(sec lists.List, mem lists.Member, id workflow.ID, thread string, msg *inbound.Message, now time.Time) ([]queue.Msg, error) {
	v := msg.Signature()
	s.log.Info("commands refused: not encrypted to the list key ([commands] require_encryption)", "thread", id, "signer", v.Fingerprint)
	list := s.fingerprint(s.o.ListKey)
	why := fmt.Sprintf("Nothing applied: this committee requires commands to be encrypted to the list key %s as well as signed ([commands] require_encryption). "+
		"Your message was signed by your pinned key %s, but not encrypted.", list, v.Fingerprint)
	fix := fmt.Sprintf("Send the same commands again, signed and encrypted to %s: in mutt, p then b (sign and encrypt); "+
		"in Thunderbird, Security, Require Encryption and Digitally Sign; or gpg --sign --encrypt --armor -u %s -r %s. "+
		"Your signature was not recorded as used: the same signed text, sent again encrypted within 24 hours of signing, counts.",
		sec.Address, v.Fingerprint, list)
	return s.commandRefusal(sec, mem, id, thread, msg, now, why, fix)
}
