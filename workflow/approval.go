package workflow

import (
	"fmt"
	"strings"
	"time"
)

// The two-person rule (docs/design.md §1; docs/threat-model.md G4, G5): what
// cannot be undone — releasing now (/disclose now), recording a broken
// embargo (/embargo-break) and marking the issue public (/public) — completes
// only when Env.Quorum distinct SRC members have signed the same command in
// the incident's thread within ApprovalWindow of the first signature. Until
// then the incident carries a pending Approval: the receipt and /status say
// whose signature is awaited and until when, and the SRC is sent the
// two-person-pending notice. A quorum of 1 turns the rule off (a committee
// of one): the command runs at once, as it always did.
//
// The same command means the same normalised form (approvalKey): "/disclose
// now" and "/disclose now emergency" are one command, because "emergency"
// changes nothing about a release that happens now (it only waives the
// 7-day notice rule for a future T); the incident records the emergency flag
// when any signer gave it.
//
// One person never counts twice: a signature counts once per roster address
// and once per key, so a second message from the same member (even signed
// with a rotated key) adds nothing. Replayed signatures never reach Apply:
// the daemon's replay cache refuses them (ReplayKey). A signer who is no
// longer on the SRC when the quorum is counted does not count.

// ApprovalWindow is how long a pending irreversible command waits for the
// other signatures, from the first one.
const ApprovalWindow = 24 * time.Hour

// Approval is an irreversible command waiting for more SRC signatures.
type Approval struct {
	Command string      `json:"cmd"`     // the normalised command: "/disclose now", "/public", "/embargo-break"
	Signers []Signature `json:"signers"` // distinct SRC members, in the order they signed
	Expires time.Time   `json:"expires"` // the first signature plus ApprovalWindow
	Quorum  int         `json:"quorum"`  // the quorum when it was first signed (for /status; the count uses the current one)
	// Emergency records that a signer of "/disclose now" said emergency.
	Emergency bool `json:"emergency,omitempty"`
}

// Signature is one member's signature of a pending command.
type Signature struct {
	Email       string    `json:"email"`
	Fingerprint string    `json:"fpr"`
	At          time.Time `json:"at"` // when the message was processed
	MessageID   string    `json:"msgid,omitempty"`
}

// quorum is the number of distinct SRC signatures an irreversible command
// needs: Env.Quorum, where 0 (unset) means 1.
func (e Env) quorum() int {
	if e.Quorum < 1 {
		return 1
	}
	return e.Quorum
}

// approvalKey is the normalised form of an irreversible command, "" for
// every other command.
func approvalKey(c Command) string {
	switch {
	case c.Name == "disclose" && c.arg(0) == "now":
		return "/disclose now"
	case c.Name == "public", c.Name == "embargo-break":
		return "/" + c.Name
	}
	return ""
}

// pending returns the index of the live pending approval of key at now, or -1.
func (inc *Incident) pending(key string, now time.Time) int {
	for i, a := range inc.Pending {
		if a.Command == key && now.Before(a.Expires) {
			return i
		}
	}
	return -1
}

// PendingAt lists the approvals still open at now (expired ones are kept in
// the record until the command completes or is signed afresh, but no longer
// count).
func (inc *Incident) PendingAt(now time.Time) []Approval {
	var out []Approval
	for _, a := range inc.Pending {
		if now.Before(a.Expires) {
			out = append(out, a)
		}
	}
	return out
}

// counted returns the signers of a that count at the time of the check:
// members of the SRC now.
func counted(a Approval, src []string) []Signature {
	var out []Signature
	for _, s := range a.Signers {
		if containsFold(src, s.Email) {
			out = append(out, s)
		}
	}
	return out
}

// sameSigner reports whether s is the member by: the same roster address or
// the same key.
func sameSigner(s Signature, by Signer) bool {
	return strings.EqualFold(s.Email, by.Email) || (s.Fingerprint != "" && strings.EqualFold(s.Fingerprint, by.Fingerprint))
}

// twoPerson records the running command's signature when it is irreversible
// and the quorum is more than one. It reports done when the command may run
// now (the quorum is reached, or the rule is off). Otherwise what is the
// receipt's text (whose signature is awaited, until when), changed says
// whether the incident took a new signature, and the incident carries the
// pending approval. Callers run the command's own guards first, so nobody is
// asked to co-sign a command that would fail.
func (m *machine) twoPerson(c Command) (done bool, what string, changed bool, err error) {
	key := approvalKey(c)
	q := m.env.quorum()
	if key == "" || q <= 1 {
		return true, "", false, nil
	}
	if !m.by.has(RoleSRC) {
		return false, "", false, argErr(ErrNotAllowed, "%s needs the signatures of %d SRC members; only SRC members may sign it", key, q)
	}
	if len(m.env.SRC) < q {
		return false, "", false, argErr(ErrGuard, "%s needs %d SRC signatures, but the SRC has %d member(s): lower [governance] quorum", key, q, len(m.env.SRC))
	}
	emergency := c.Name == "disclose" && c.arg(1) == "emergency"
	i := m.inc.pending(key, m.now)
	if i < 0 {
		m.inc.Pending = dropApproval(m.inc.Pending, key) // an expired one starts afresh
		m.inc.Pending = append(m.inc.Pending, Approval{Command: key, Expires: m.now.Add(ApprovalWindow), Quorum: q})
		i = len(m.inc.Pending) - 1
	}
	a := &m.inc.Pending[i]
	a.Emergency = a.Emergency || emergency
	already := false
	for _, s := range a.Signers {
		already = already || sameSigner(s, m.by)
	}
	if !already {
		a.Signers = append(a.Signers, Signature{Email: strings.ToLower(m.by.Email), Fingerprint: m.by.Fingerprint, At: m.now, MessageID: m.env.MessageID})
	}
	have := counted(*a, m.env.SRC)
	if len(have) >= q {
		if a.Emergency && c.Name == "disclose" {
			m.inc.Emergency = true
		}
		m.inc.Pending = dropApproval(m.inc.Pending, key)
		return true, "", true, nil
	}
	m.waiting = true
	if already {
		// Nothing changed: the receipt still says what is awaited.
		return false, "you already signed " + key + "; " + awaiting(*a, q, m.env.SRC, have), false, nil
	}
	m.emit(AlertSRC{Template: "two-person-pending", Fields: map[string]string{
		"id": string(m.inc.ID), "command": key, "by": strings.ToLower(m.by.Email),
		"signed": signedList(have), "needed": fmt.Sprint(q - len(have)), "quorum": fmt.Sprint(q),
		"awaited": strings.Join(awaited(have, m.env.SRC), ", "), "expires": FormatInstant(a.Expires),
		"how": "To complete it, send " + key + ", signed, in the thread of " + string(m.inc.ID) + " (reply to any of its messages); to stop it, do nothing.",
	}})
	return false, fmt.Sprintf("signature %d of %d recorded; nothing done yet: %s", len(have), q, awaiting(*a, q, m.env.SRC, have)), true, nil
}

func dropApproval(as []Approval, key string) []Approval {
	var out []Approval
	for _, a := range as {
		if a.Command != key {
			out = append(out, a)
		}
	}
	return out
}

// awaited lists the SRC members whose signature could still complete it.
func awaited(have []Signature, src []string) []string {
	var out []string
	for _, s := range src {
		signed := false
		for _, h := range have {
			signed = signed || strings.EqualFold(h.Email, s)
		}
		if !signed {
			out = append(out, strings.ToLower(s))
		}
	}
	return out
}

func signedList(have []Signature) string {
	var out []string
	for _, h := range have {
		out = append(out, h.Email+" at "+FormatInstant(h.At))
	}
	return strings.Join(out, ", ")
}

// awaiting is the sentence of a receipt or /status about a pending command:
// q signatures are needed, have count, src may still sign.
func awaiting(a Approval, q int, src []string, have []Signature) string {
	who := "another SRC member"
	if names := awaited(have, src); len(names) > 0 {
		who = orList(names)
	}
	n := q - len(have)
	sig := "signature"
	if n != 1 {
		sig = "signatures"
	}
	return fmt.Sprintf("awaiting %d more SRC %s (quorum %d) from %s, who must send %s signed in this thread before %s; signed by %s",
		n, sig, q, who, a.Command, FormatInstant(a.Expires), signedList(have))
}

// pendingLines is the /status section on pending approvals. Without the
// SRC (env.SRC empty: StatusText) every signer counts and the quorum is the
// one recorded with the first signature.
func pendingLines(inc Incident, now time.Time, env Env) []string {
	var out []string
	for _, a := range inc.PendingAt(now) {
		q, have := a.Quorum, a.Signers
		if len(env.SRC) > 0 {
			q, have = env.quorum(), counted(a, env.SRC)
		}
		out = append(out, a.Command+": "+awaiting(a, q, env.SRC, have))
	}
	return out
}
