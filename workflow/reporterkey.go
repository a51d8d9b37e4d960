package workflow

import (
	"fmt"
	"strings"
	"time"
)

// ReporterKey is an OpenPGP key that arrived in mail from the reporter's
// address. Which one mail to the reporter is encrypted to is
// Incident.PinnedReporterKey: the daemon pins one only from mail whose sender is
// authenticated, and the SRC chooses with /reporter-key
// (docs/threat-model.md D5: a key in mail is never trusted for its From).
type ReporterKey struct {
	Fingerprint string    `json:"fpr"` // the primary key's, upper-case hex
	At          time.Time `json:"at"`  // when it first arrived
	// Authenticated says how the sender of the mail that brought it was
	// authenticated ("the report", "DKIM for example.net, checked by
	// mx.example.org", "signed by the pinned key …"); "" when it was not.
	Authenticated string `json:"authenticated,omitempty"`
}

// Describe is the key in one line, for receipts and alerts.
func (k ReporterKey) Describe() string {
	how := "sender not authenticated"
	if k.Authenticated != "" {
		how = "sender authenticated: " + k.Authenticated
	}
	return fmt.Sprintf("%s (arrived %s, %s)", k.Fingerprint, FormatInstant(k.At), how)
}

// SeenReporterKey returns the key with fingerprint fpr among those that
// arrived for the incident.
func (inc *Incident) SeenReporterKey(fpr string) (ReporterKey, bool) {
	for _, k := range inc.ReporterKeys {
		if strings.EqualFold(k.Fingerprint, fpr) {
			return k, true
		}
	}
	return ReporterKey{}, false
}

func parseReporterKey(l Line) (Command, error) {
	a := strings.Join(strings.Fields(l.Args), "") // as gpg prints it: groups of four
	if strings.EqualFold(a, "none") {
		return Command{Name: "reporter-key", Args: []string{"none"}}, nil
	}
	a = strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(a, "0x"), "0X"))
	if len(a) != 40 && len(a) != 64 || strings.Trim(a, "0123456789ABCDEF") != "" {
		return Command{}, argErr(ErrSyntax, "give the key's full fingerprint (40 or 64 hex digits, as gpg --fingerprint prints it), or none")
	}
	return Command{Name: "reporter-key", Args: []string{a}}, nil
}

// reporterKey pins one of the keys that arrived for the incident, or none.
func (m *machine) reporterKey(c Command) (string, bool, error) {
	fpr := c.arg(0)
	if fpr == "none" {
		if m.inc.PinnedReporterKey == "" {
			return "", false, argErr(ErrGuard, "no reporter key is pinned to this incident")
		}
		old := m.inc.PinnedReporterKey
		m.inc.PinnedReporterKey = ""
		return fmt.Sprintf("unpinned the reporter key %s: mail to the reporter is signed, and no longer encrypted", old), true, nil
	}
	k, ok := m.inc.SeenReporterKey(fpr)
	if !ok {
		seen := "no key has arrived for it"
		if len(m.inc.ReporterKeys) > 0 {
			var fs []string
			for _, k := range m.inc.ReporterKeys {
				fs = append(fs, k.Describe())
			}
			seen = "the keys that arrived: " + strings.Join(fs, "; ")
		}
		return "", false, argErr(ErrGuard, "no key with fingerprint %s arrived for this incident (%s)", fpr, seen)
	}
	if m.inc.PinnedReporterKey == k.Fingerprint {
		return "the reporter key " + k.Describe() + " is pinned already", false, nil
	}
	what := "pinned the reporter key " + k.Describe() + ": mail to the reporter is encrypted to it"
	if m.inc.PinnedReporterKey != "" {
		what += ", in place of " + m.inc.PinnedReporterKey
	}
	m.inc.PinnedReporterKey = k.Fingerprint
	return what, true, nil
}
