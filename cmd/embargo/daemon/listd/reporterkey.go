package listd

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/inbound"
	"github.com/embargo-project/embargo/workflow"
)

// The reporter's OpenPGP key (docs/threat-model.md D5). Mail to the reporter
// (the acknowledgement, updates, /reply) is encrypted to the key pinned to
// the incident. Anyone can write From: the reporter's address and attach a
// key, so a key is pinned by itself only from mail whose sender is
// authenticated:
//
//	the report itself                      its sender is the reporter, by definition
//	a trusted MTA's Authentication-Results DMARC, or DKIM or SPF aligned with From ([intake] trusted_authserv_ids), when no key is pinned
//	embargo's own checks at arrival         the same, found by us on the SMTP listener ([intake] verify = "own"), when no key is pinned
//	a signature by the pinned key          the reporter moves to a new key: it replaces the old one
//
// Every other key that arrives from the reporter's address is kept with the
// incident, not used, and the SRC is told (encrypted) both fingerprints; it
// chooses with /reporter-key FINGERPRINT|none. Nothing is replaced silently:
// the SRC hears of every key but the report's own.

// reporterKeys records the key a message from the reporter carries and
// pins it when its sender is authenticated, after the message's commands
// ran on inc (intake). It changes inc in place, stores it when it changed,
// and queues the SRC's alert. Members' keys, a distributor's as a
// committee member's, are pinned in the configuration and never taken from
// mail (docs/threat-model.md D5): a key attached to a member's report is
// neither pinned nor kept, so mail to them is never encrypted to it.
func (s *Service) reporterKeys(tx *bolt.Tx, d *delivery, inc *workflow.Incident, isNew bool) error {
	changed, err := s.migrateReporterKey(tx, inc)
	if err != nil {
		return err
	}
	msg := d.msg
	_, member := s.o.Roster.Member(msg.From())
	if !strings.EqualFold(msg.From(), inc.Reporter) || member {
		return s.putIf(tx, inc, changed)
	}
	k, pub := attachedKey(msg, d.now)
	if k == nil || strings.EqualFold(k.Fingerprint(), inc.PinnedReporterKey) {
		return s.putIf(tx, inc, changed)
	}
	fpr := k.Fingerprint()
	if _, known := inc.SeenReporterKey(fpr); known {
		// The SRC was told when it first arrived, and chooses.
		return s.putIf(tx, inc, changed)
	}
	if err := incidentdb.AddReporterKeySeen(tx, inc.ID, fpr, pub); err != nil {
		return err
	}
	pinned := inc.PinnedReporterKey
	how := ""
	switch {
	case isNew:
		how = "the report"
	case pinned != "":
		if old := s.reporterKeyOf(tx, inc, d.now); old != nil && s.signedBy(d, old) {
			how = "signed by the pinned key " + pinned
		}
	default:
		how = s.senderAuthenticated(d)
	}
	seen := workflow.ReporterKey{Fingerprint: fpr, At: d.now, Authenticated: how}
	inc.ReporterKeys = append(inc.ReporterKeys, seen)
	event := "kept"
	if how != "" {
		inc.PinnedReporterKey = fpr
		if isNew {
			return s.putIf(tx, inc, true)
		}
		event = "pinned"
	}
	s.log.Warn("reporter key arrived", "incident", inc.ID, "fingerprint", fpr, "authenticated", how != "", "result", event)
	if err := s.putIncident(tx, inc); err != nil {
		return err
	}
	return s.reporterKeyAlert(tx, inc, seen, how, pinned, event, d.now)
}

// reporterKeyAlert tells the SRC, encrypted, in the incident's thread,
// which key arrived and what became of it.
func (s *Service) reporterKeyAlert(tx *bolt.Tx, inc *workflow.Incident, k workflow.ReporterKey, how, pinned, event string, now time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "A new OpenPGP key arrived in mail from the reporter's address of %s (%s),\n%s:\n\n    %s\n\n", inc.ID, inc.Reporter, workflow.FormatInstant(now), k.Fingerprint)
	switch {
	case event == "pinned" && pinned != "":
		fmt.Fprintf(&b, "%s\n\n", wrap("The message was signed by the key pinned before, "+pinned+": the reporter moved to the new key, and mail to the reporter is now encrypted to it. If that is wrong, pin the old one again with /reporter-key "+pinned+".", 72))
	case event == "pinned":
		fmt.Fprintf(&b, "%s\n\n", wrap("No key was pinned, and the sender is authenticated ("+how+"): mail to the reporter is now encrypted to this key. To undo it: /reporter-key none.", 72))
	case pinned != "":
		fmt.Fprintf(&b, "%s\n\n", wrap("It is NOT used. Mail to the reporter stays encrypted to the pinned key "+pinned+". The sender of this message is not authenticated: anyone can write the reporter's address in From. If the reporter really changed keys (ask them over the old key), pin the new one with /reporter-key "+k.Fingerprint+".", 72))
	default:
		fmt.Fprintf(&b, "%s\n\n", wrap("It is NOT used: no key is pinned, and the sender of this message is not authenticated (anyone can write the reporter's address in From). Mail to the reporter stays signed and unencrypted. To encrypt to this key: /reporter-key "+k.Fingerprint+".", 72))
	}
	b.WriteString("Keys that arrived for this incident:\n")
	for _, x := range inc.ReporterKeys {
		mark := "  "
		if strings.EqualFold(x.Fingerprint, inc.PinnedReporterKey) {
			mark = "* "
		}
		fmt.Fprintf(&b, "%s%s\n", mark, x.Describe())
	}
	b.WriteString("(* pinned)\n")
	// It asks for /reporter-key: a reply quoting this binds (binding.go).
	fmt.Fprintf(&b, "\nReply to %s with signed commands.\n", replyAddress(s.o.Roster.List(lists.Security), string(inc.ID)))
	msgs, err := s.sealedEach(s.o.Roster.List(lists.Security), s.committee(), notice{
		Subject: fmt.Sprintf("[%s] reporter key %s", inc.ID, event), Body: b.String(),
		Kind: "alert-reporter-key", Incident: inc.ID, Thread: inc.RootMsg,
	}, now)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := incidentdb.IndexMessageID(tx, m.MessageID, inc.ID); err != nil {
			return err
		}
	}
	return s.enqueue(tx, now, msgs...)
}

func (s *Service) putIf(tx *bolt.Tx, inc *workflow.Incident, changed bool) error {
	if !changed {
		return nil
	}
	return s.putIncident(tx, inc)
}

// migrateReporterKey brings the one key of an incident from before keys
// were tracked (first key wins, whoever sent it) into the incident's list,
// pinned as it was.
func (s *Service) migrateReporterKey(tx *bolt.Tx, inc *workflow.Incident) (bool, error) {
	if len(inc.ReporterKeys) > 0 || inc.PinnedReporterKey != "" {
		return false, nil
	}
	pub, ok := incidentdb.ReporterKey(tx, inc.ID)
	if !ok {
		return false, nil
	}
	ks, err := keys.ReadPublicKeys(bytes.NewReader(pub))
	if err != nil || len(ks) == 0 {
		return false, nil
	}
	fpr := ks[0].Fingerprint()
	if err := incidentdb.AddReporterKeySeen(tx, inc.ID, fpr, pub); err != nil {
		return false, err
	}
	inc.ReporterKeys = []workflow.ReporterKey{{Fingerprint: fpr, At: inc.Opened, Authenticated: "pinned before keys were tracked"}}
	inc.PinnedReporterKey = fpr
	return true, nil
}

// reporterKeyOf is the reporter key pinned to inc, if usable now: the
// incident names it (inc.PinnedReporterKey, which /reporter-key changes in the
// same message's transaction), or, for an incident from before keys were
// tracked, the one key stored for it.
func (s *Service) reporterKeyOf(tx *bolt.Tx, inc *workflow.Incident, now time.Time) *keys.Key {
	var pub []byte
	var ok bool
	switch {
	case inc.PinnedReporterKey != "":
		pub, ok = incidentdb.ReporterKeySeen(tx, inc.ID, inc.PinnedReporterKey)
	case len(inc.ReporterKeys) == 0:
		pub, ok = incidentdb.ReporterKey(tx, inc.ID)
	}
	if !ok {
		return nil
	}
	ks, err := keys.ReadPublicKeys(bytes.NewReader(pub))
	if err != nil || len(ks) == 0 || ks[0].Check(now) != nil {
		return nil
	}
	return ks[0]
}

// signedBy reports whether the message carries a good signature by k over
// its whole content. It opens the raw message once more, with k as the one
// trusted key: only for a key that differs from the pinned one.
func (s *Service) signedBy(d *delivery, k *keys.Key) bool {
	ko := s.keyOptions()
	now := d.now
	ko.Now = func() time.Time { return now }
	op, err := keys.Open(d.raw, s.o.ListKey, keys.NewKeyring(k), ko)
	if err != nil {
		return false
	}
	v := op.Signature()
	return v.OK() && strings.EqualFold(v.Fingerprint, k.Fingerprint())
}

// attachedKey returns the first usable public key attached to a message
// (application/pgp-keys), with its armored form.
func attachedKey(msg *inbound.Message, now time.Time) (*keys.Key, []byte) {
	for _, a := range msg.Attachments() {
		if a.Type != "application/pgp-keys" {
			continue
		}
		ks, err := keys.ReadPublicKeys(bytes.NewReader(a.Data))
		if err != nil {
			continue
		}
		for _, k := range ks {
			if k.Check(now) != nil {
				continue
			}
			if pub, err := k.ArmoredPublic(); err == nil {
				return k, pub
			}
		}
	}
	return nil, nil
}
