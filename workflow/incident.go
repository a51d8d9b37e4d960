package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Phase is where an incident stands in the process (docs/design.md §2).
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
	RootMsg  string    `json:"root_msg,omitempty"` // Message-ID that anchors the thread for members' mail clients; random, so it names nothing

	// People.
	FixLead string   `json:"fix_lead,omitempty"`
	FixTeam []string `json:"fix_team,omitempty"`
	// Commander is the incident commander: the on-call when the report
	// arrived (oncall.go); an acknowledged /oncall handover passes it on. The
	// triage reminder goes to them. Empty without an on-call rotation.
	Commander string `json:"commander,omitempty"`

	Messages int `json:"messages"` // inbound messages archived for this incident

	// Fields below arrived with schema version 2 (SchemaVersion); a version 1
	// record reads with them empty.

	// The advisory (process.md §7): each field is stored once and every
	// message is rendered from it. Set with /set; locked by /approve.
	Advisory Advisory `json:"advisory,omitzero"`

	// Severity: the CVSS vector is the source of truth (score and severity are
	// computed from it); SeverityOverride is the Fix Lead's call (/severity).
	CVSSVector       string   `json:"cvss,omitempty"`
	SeverityOverride Severity `json:"severity_override,omitzero"`
	CVEs             []string `json:"cves,omitempty"`

	// Flags.
	Public        bool `json:"public,omitempty"`         // already publicly known: every deadline ASAP, no 7-day rule
	EmbargoBroken bool `json:"embargo_broken,omitempty"` // a leak: every deadline ASAP, no 7-day rule
	Deferred      bool `json:"deferred,omitempty"`       // low severity, slowed down (/defer)
	Emergency     bool `json:"emergency,omitempty"`      // T was set with "emergency": no 7-day rule
	Approved      bool `json:"approved,omitempty"`       // the advisory text is approved and locked

	// Milestones: when each happened (zero: not yet).
	TriagedAt     time.Time `json:"triaged_at,omitzero"`      // accepted, rejected, handed off or closed out of triage
	AcceptedAt    time.Time `json:"accepted_at,omitzero"`     // /accept
	FixTeamAt     time.Time `json:"fix_team_at,omitzero"`     // first fix-team member added
	FixedAt       time.Time `json:"fixed_at,omitzero"`        // /fixed
	ApprovedAt    time.Time `json:"approved_at,omitzero"`     // last /approve
	NotifiedAt    time.Time `json:"notified_at,omitzero"`     // first distributor notice
	NotifiedT     time.Time `json:"notified_t,omitzero"`      // the T distributors were last told
	FinalNoticeAt time.Time `json:"final_notice_at,omitzero"` // final notice with the public text (T-24 h); cleared when T changes
	HeldAt        time.Time `json:"held_at,omitzero"`         // the release at T was held (not approved by T-24 h); cleared when T changes
	DisclosedAt   time.Time `json:"disclosed_at,omitzero"`    // released
	RetroAt       time.Time `json:"retro_at,omitzero"`        // retrospective done (/retro)
	ClosedAt      time.Time `json:"closed_at,omitzero"`

	// T is the public disclosure instant: always 16:00 UTC on a Monday–Thursday
	// that is not a holiday (NextSlot), or the moment of /disclose now.
	T time.Time `json:"t,omitzero"`

	// How it ended.
	Resolution  Resolution `json:"resolution,omitzero"`
	DuplicateOf ID         `json:"duplicate_of,omitempty"`
	HandedOffTo string     `json:"handed_off_to,omitempty"`

	// Reminded records the reminders Tick sent: deadline name → the due
	// instant it reminded of, so that each is sent once.
	Reminded map[string]time.Time `json:"reminded,omitempty"`

	// Pending lists the irreversible commands signed by fewer SRC members
	// than the quorum (approval.go); schema version 4.
	Pending []Approval `json:"pending,omitempty"`

	// ReporterKeys are the OpenPGP keys that arrived in mail from the
	// reporter's address, in arrival order, and PinnedReporterKey the fingerprint
	// of the one mail to the reporter is encrypted to, "" for none
	// (reporterkey.go, /reporter-key).
	ReporterKeys      []ReporterKey `json:"reporter_keys,omitempty"`
	PinnedReporterKey string        `json:"reporter_key,omitempty"`

	// Preannounced lists the public pre-announcements of the release
	// (/preannounce, preannounce.go), oldest first; schema version 5.
	Preannounced []Preannouncement `json:"preannounced,omitempty"`
	// Distributors are the distributors the embargoed notice reached, in
	// the order it first reached them, each with their latest answer
	// (/affected, distributors.go); schema version 5.
	Distributors []DistributorState `json:"distributors,omitempty"`

	// Track is the disclosure track (/track, track.go: public, private or
	// urgent; docs/process.md §9); schema version 6. Unset: no track, as
	// before version 6.
	Track Track `json:"track,omitzero"`

	// History records every change: who, when, from which message, what.
	History []Change `json:"history,omitempty"`
}

// SchemaVersion is the version of the stored Incident record that Apply
// writes. Version 1 (intake only) lacks everything after Messages; version 2
// adds the fields the commands maintain; version 3 adds the advisory's
// component, CWE IDs and references; version 4 the pending approvals of the
// two-person rule; version 5 the pre-announcements, the distributors the
// notice reached and their answers; version 6 the disclosure track. Changes
// are additive: an older record reads with the new fields at their zero
// values (a version 5 record has no track and behaves as before).
const SchemaVersion = 6

// Advisory holds the fields every outgoing message is rendered from
// (process.md §7.1–§7.6, §10). The names after each field are the /set FIELD
// names.
type Advisory struct {
	Summary        string `json:"summary,omitempty"`         // summary: one line, the subject of every advisory
	Actor          string `json:"actor,omitempty"`           // actor: "$ACTOR may be able to …"
	Impact         string `json:"impact,omitempty"`          // impact: "… $DO_SOMETHING"
	Condition      string `json:"condition,omitempty"`       // condition: "only if $CONDITION"
	Affected       string `json:"affected,omitempty"`        // affected: "$COMPONENT $VERSION_RANGE" lines
	Fixed          string `json:"fixed,omitempty"`           // fixed: "$COMPONENT $VERSION" lines (public advisory only)
	Mitigation     string `json:"mitigation,omitempty"`      // mitigation: before upgrading
	ActionRequired string `json:"action_required,omitempty"` // action-required: after upgrading
	FixImpact      string `json:"fix_impact,omitempty"`      // fix-impact
	Detection      string `json:"detection,omitempty"`       // detection
	UpgradeDocs    string `json:"upgrade_docs,omitempty"`    // upgrade-docs: an https URL
	IssueURL       string `json:"issue_url,omitempty"`       // issue-url: an https URL
	Credit         string `json:"credit,omitempty"`          // credit: how the reporter wants to be credited

	// Schema version 3. The CVE and OSV records read these, with Affected
	// and Fixed as version ranges (ReadVersions).
	Component  string `json:"component,omitempty"`  // component: the affected component, e.g. "kube-apiserver"
	CWE        string `json:"cwe,omitempty"`        // cwe: "CWE-79 CWE-200" (ParseCWEs)
	References string `json:"references,omitempty"` // references: https URLs, one a line (ParseReferences)
}

// Resolution is how an incident was closed. The zero value means open.
type Resolution int

// The resolutions (docs/design.md §2).
const (
	ResolutionUnset Resolution = iota
	ResolutionFixed
	ResolutionNotAVulnerability
	ResolutionOutOfScope
	ResolutionDuplicate
	ResolutionHandedOff
)

var resolutionNames = [...]string{"unset", "fixed", "not-a-vulnerability", "out-of-scope", "duplicate", "handed-off"}

func (r Resolution) String() string {
	if r < 0 || int(r) >= len(resolutionNames) {
		return "Resolution(" + strconv.Itoa(int(r)) + ")"
	}
	return resolutionNames[r]
}

// ParseResolution reads a resolution name.
func ParseResolution(s string) (Resolution, bool) {
	for i, n := range resolutionNames {
		if i > 0 && n == strings.ToLower(s) {
			return Resolution(i), true
		}
	}
	return ResolutionUnset, false
}

// MarshalText stores resolutions by name.
func (r Resolution) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (r *Resolution) UnmarshalText(b []byte) error {
	for i, n := range resolutionNames {
		if n == string(b) {
			*r = Resolution(i)
			return nil
		}
	}
	return fmt.Errorf("workflow: unknown resolution %q", b)
}

// Change is one entry of an incident's history.
type Change struct {
	At          time.Time `json:"at"`
	Fingerprint string    `json:"fpr,omitempty"`   // the signer's primary key fingerprint
	Email       string    `json:"email,omitempty"` // the signer's roster address
	MessageID   string    `json:"msgid,omitempty"` // the message that carried the command
	Command     string    `json:"cmd"`             // canonical command text
	What        string    `json:"what"`            // what changed, as the receipt says it
}

// CVSS parses the stored vector; ok is false when there is none (or, which
// cannot happen for a vector stored by /cvss, it no longer parses).
func (inc *Incident) CVSS() (CVSS, bool) {
	if inc.CVSSVector == "" {
		return CVSS{}, false
	}
	c, err := ParseCVSS(inc.CVSSVector)
	return c, err == nil
}

// Severity is the override when the Fix Lead set one, else the rating of the
// CVSS score, else SeverityUnset.
func (inc *Incident) Severity() Severity {
	if inc.SeverityOverride != SeverityUnset {
		return inc.SeverityOverride
	}
	if c, ok := inc.CVSS(); ok {
		return c.Severity()
	}
	return SeverityUnset
}

// ASAP reports whether every deadline is "as soon as possible": the issue is
// public or the embargo broke (process.md §3).
func (inc *Incident) ASAP() bool { return inc.Public || inc.EmbargoBroken }

// clone returns a deep copy, so that changes to it never reach inc.
func (inc *Incident) clone() Incident {
	n := *inc
	n.FixTeam = append([]string(nil), inc.FixTeam...)
	n.CVEs = append([]string(nil), inc.CVEs...)
	n.ReporterKeys = append([]ReporterKey(nil), inc.ReporterKeys...)
	n.History = append([]Change(nil), inc.History...)
	n.Preannounced = append([]Preannouncement(nil), inc.Preannounced...)
	n.Distributors = append([]DistributorState(nil), inc.Distributors...)
	n.Pending = nil
	for _, a := range inc.Pending {
		a.Signers = append([]Signature(nil), a.Signers...)
		n.Pending = append(n.Pending, a)
	}
	if inc.Reminded != nil {
		n.Reminded = make(map[string]time.Time, len(inc.Reminded))
		for k, v := range inc.Reminded {
			n.Reminded[k] = v
		}
	}
	return n
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
