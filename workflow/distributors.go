package workflow

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Each distributor the embargoed notice reached has a status per incident,
// as CERT/CC keeps one per vendor (docs/process.md §9): affected, not
// affected, unknown, or fixed, given with /affected by the distributor
// alone, the latest answer winning. The record lives in the incident
// (Incident.Distributors); the SRC reads it in /status, the weekly digest and
// `embargo incident show`. Nothing of one distributor's answer is sent to
// another distributor: the answer goes to the SRC, and its receipt to the
// distributor who gave it.

// Affected is a distributor's answer to the notice. The zero value is no
// answer.
type Affected int

// The answers, by their /affected argument.
const (
	AffectedUnset   Affected = iota // no answer yet
	AffectedYes                     // yes: their product is affected
	AffectedNo                      // no: not affected
	AffectedUnknown                 // unknown: they cannot tell yet
	AffectedFixed                   // fixed: affected, and their fix is ready
)

var affectedNames = [...]string{"", "yes", "no", "unknown", "fixed"}

// affectedWords says each answer in a sentence's words.
var affectedWords = [...]string{"no answer", "affected", "not affected", "unknown", "affected, fix ready"}

// String is the /affected argument ("" for no answer).
func (a Affected) String() string {
	if a < 0 || int(a) >= len(affectedNames) {
		return fmt.Sprintf("Affected(%d)", int(a))
	}
	return affectedNames[a]
}

// Words is the answer as /status and the SRC's copy say it.
func (a Affected) Words() string {
	if a < 0 || int(a) >= len(affectedWords) {
		return a.String()
	}
	return affectedWords[a]
}

// ParseAffected reads an /affected argument in any letter case.
func ParseAffected(s string) (Affected, bool) {
	s = strings.ToLower(s)
	for i, n := range affectedNames {
		if i > 0 && n == s {
			return Affected(i), true
		}
	}
	return AffectedUnset, false
}

// MarshalText stores answers by name, so the store stays readable.
func (a Affected) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (a *Affected) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = AffectedUnset
		return nil
	}
	v, ok := ParseAffected(string(b))
	if !ok {
		return fmt.Errorf("workflow: unknown distributor status %q", b)
	}
	*a = v
	return nil
}

// DistributorState is one distributor's place in an incident: when the
// embargoed notice first reached them, and their latest answer.
type DistributorState struct {
	Email      string    `json:"email"`       // the roster address the notice went to, lower case
	NotifiedAt time.Time `json:"notified_at"` // the first notice that reached them
	Status     Affected  `json:"status,omitzero"`
	At         time.Time `json:"at,omitzero"`    // when they gave Status
	Note       string    `json:"note,omitempty"` // their note with it, at most MaxNoteBytes
}

// MaxNoteBytes bounds the NOTE of /affected: the SRC reads it in a copy,
// in /status and in `embargo incident show`.
const MaxNoteBytes = 1000

// distributorIndex is addr's entry in inc.Distributors, or -1.
func (inc *Incident) distributorIndex(addr string) int {
	if addr == "" {
		return -1
	}
	for i, d := range inc.Distributors {
		if strings.EqualFold(d.Email, addr) {
			return i
		}
	}
	return -1
}

// Notified reports whether the embargoed notice of inc reached the
// distributor addr: only then may addr answer it (/affected), and only then
// does addr's signed answer find the incident's thread (DistributorThread).
func (inc *Incident) Notified(addr string) bool { return inc.distributorIndex(addr) >= 0 }

// recordNotified adds each of addrs that is not yet among inc's
// distributors, notified at now: the caller sends the notice to exactly
// these (Env.Distributors). It reports whether it added any.
func recordNotified(inc *Incident, addrs []string, now time.Time) bool {
	added := false
	for _, a := range addrs {
		if a == "" || inc.Notified(a) {
			continue
		}
		inc.Distributors = append(inc.Distributors, DistributorState{Email: strings.ToLower(a), NotifiedAt: now})
		added = true
	}
	return added
}

// noticeIn reports whether actions send the embargoed notice (a first
// notice, a re-notification or the final notice).
func noticeIn(actions []Action) bool {
	for _, a := range actions {
		if _, ok := a.(DistributorNotice); ok {
			return true
		}
	}
	return false
}

// Answered counts the distributors of inc who have answered.
func (inc *Incident) Answered() int {
	n := 0
	for _, d := range inc.Distributors {
		if d.Status != AffectedUnset {
			n++
		}
	}
	return n
}

// DistributorLines is one line per notified distributor, for the SRC: the
// address, the answer (or "no answer") and when, and when the notice
// reached them. No note: /status adds it below its line.
func (inc *Incident) DistributorLines() []string {
	var out []string
	for _, d := range inc.Distributors {
		s := fmt.Sprintf("%s: %s", d.Email, d.Status.Words())
		if d.Status != AffectedUnset {
			s += " since " + FormatInstant(d.At)
		}
		out = append(out, s+"; notified "+FormatInstant(d.NotifiedAt))
	}
	return out
}

func parseAffected(l Line) (Command, error) {
	word, rest := l.Args, ""
	if i := strings.IndexFunc(word, unicode.IsSpace); i >= 0 {
		word, rest = word[:i], word[i:]
	}
	st, ok := ParseAffected(word)
	if !ok {
		return Command{}, argErr(ErrSyntax, "give yes, no, unknown or fixed, then optionally a NOTE")
	}
	note := strings.TrimSpace(rest)
	switch {
	case l.Doc && note != "":
		return Command{}, argErr(ErrSyntax, "give the NOTE on the line or as a here-document, not both")
	case l.Doc:
		note = l.Value
	}
	if len(note) > MaxNoteBytes {
		return Command{}, argErr(ErrSyntax, "NOTE longer than %d bytes", MaxNoteBytes)
	}
	return Command{Name: "affected", Args: []string{st.String()}, Value: note}, nil
}

// affected runs /affected: the signer's answer, which authorise allowed
// only to a distributor the notice reached. The latest answer wins; the
// SRC is told (DistributorAnswer), the signer reads it in the receipt,
// nobody else hears of it.
func (m *machine) affected(c Command) (string, bool, error) {
	if m.inc.Phase == PhaseClosed {
		return "", false, argErr(ErrPhase, "the incident is closed: the SRC no longer takes answers to its notice")
	}
	i := m.inc.distributorIndex(m.by.Email)
	if i < 0 { // authorise lets no one else through
		return "", false, argErr(ErrNotAllowed, "you may not run /affected on this incident (who may: %s)", WhoDistributor)
	}
	st, _ := ParseAffected(c.arg(0))
	d := &m.inc.Distributors[i]
	if d.Status == st && d.Note == c.Value {
		return fmt.Sprintf("your status is already %s (since %s); nothing changed", st.Words(), FormatInstant(d.At)), false, nil
	}
	prev := d.Status
	d.Status, d.At, d.Note = st, m.now, c.Value
	a := DistributorAnswer{Distributor: d.Email, Status: st, Previous: prev, Note: c.Value, At: m.now,
		Answered: m.inc.Answered(), Notified: len(m.inc.Distributors)}
	// One copy to the SRC per message: a later /affected of the same
	// message replaces an earlier one's.
	for j, x := range m.actions {
		if old, ok := x.(DistributorAnswer); ok && old.Distributor == a.Distributor {
			a.Previous = old.Previous
			m.actions[j] = a
			return answerWhat(st, prev), true, nil
		}
	}
	m.emit(a)
	return answerWhat(st, prev), true, nil
}

func answerWhat(st, prev Affected) string {
	what := "your status: " + st.Words()
	if prev != AffectedUnset {
		what += " (was " + prev.Words() + ")"
	}
	return what + "; the SRC is told, and no other distributor"
}

const affectedHelp = "Tell the SRC whether your product is affected by the embargoed issue whose notice you received: yes, no, unknown (you cannot tell yet) or fixed (affected, and your fix is ready), with an optional NOTE of at most 1000 bytes on the line or as a here-document. " +
	"Only for a distributor the notice reached, signed with their pinned key and encrypted to the list key, whatever [commands] require_encryption says: reply to the notice (to the distributors list), or write to the incident's address. " +
	"From the first notice until the incident is closed. Your latest answer replaces the one before; the SRC gets a copy of each, and you a receipt. No other distributor ever sees your answer or note. " +
	"Distributors may run no other command."
