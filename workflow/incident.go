package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Phase is where an incident stands in the process (DESIGN.md §2).
type Phase int

// The phases, in order. The zero value means unset.
const (
	PhaseUnset Phase = iota
	PhaseTriage
	PhaseFix
	PhaseEmbargo
	PhaseDisclosed
	PhaseClosed
)

var phaseNames = [...]string{"unset", "triage", "fix", "embargo", "disclosed", "closed"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return "Phase(" + strconv.Itoa(int(p)) + ")"
	}
	return phaseNames[p]
}

// MarshalText stores phases by name so the store stays readable and stable if the
// enumeration grows.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (p *Phase) UnmarshalText(b []byte) error {
	for i, n := range phaseNames {
		if n == string(b) {
			*p = Phase(i)
			return nil
		}
	}
	return fmt.Errorf("workflow: unknown phase %q", b)
}

// ID identifies an incident: SEC-YYYY-NNNN, the sequence per year (at least four digits).
type ID string

var idPattern = regexp.MustCompile(`^SEC-([0-9]{4})-([0-9]{4,9})$`)

// FormatID builds the ID of the n-th incident of year.
func FormatID(year int, n uint64) ID {
	return ID(fmt.Sprintf("SEC-%04d-%04d", year, n))
}

// ParseID validates an incident ID, accepting any letter case.
func ParseID(s string) (ID, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if !idPattern.MatchString(s) {
		return "", false
	}
	return ID(s), true
}

// subjectTag finds a "[SEC-YYYY-NNNN]" tag in a subject line.
var subjectTag = regexp.MustCompile(`(?i)\[(SEC-[0-9]{4}-[0-9]{4,9})\]`)

// SubjectTag returns the incident ID tagged in a subject, if any.
func SubjectTag(subject string) (ID, bool) {
	m := subjectTag.FindStringSubmatch(subject)
	if m == nil {
		return "", false
	}
	return ParseID(m[1])
}

// Incident is one vulnerability report and everything the process records about it.
// It is a plain value: the store persists it as JSON, and workflow functions return
// a changed copy instead of mutating shared state.
type Incident struct {
	Version int   `json:"v"` // schema version of the stored record
	ID      ID    `json:"id"`
	Phase   Phase `json:"phase"`

	Opened   time.Time `json:"opened"`             // first mail received
	Updated  time.Time `json:"updated"`            // last change of any kind
	Reporter string    `json:"reporter"`           // address the report came from (From header)
	Subject  string    `json:"subject,omitempty"`  // the report's subject, sanitised; never sent in clear outside the SRC
	RootMsg  string    `json:"root_msg,omitempty"` // Message-ID that anchors the thread for members' mail clients

	// People.
	FixLead string   `json:"fix_lead,omitempty"`
	FixTeam []string `json:"fix_team,omitempty"`

	Messages int `json:"messages"` // inbound messages archived for this incident
}

// HasFixTeamMember reports whether addr is on the incident's fix team.
func (inc *Incident) HasFixTeamMember(addr string) bool {
	for _, a := range inc.FixTeam {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}
