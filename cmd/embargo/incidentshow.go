package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// `embargo incident show`: the store command hands over the stored record and
// its messages as JSON, through the daemon's control socket or straight from
// the file; the command line renders them with its own configuration
// (holidays) and clock, as `embargo status` does. The text is /status's
// (workflow.StatusText) followed by what /status only names: every advisory
// field's value, the milestones, the history and the messages.

// showData is what the store command returns.
type showData struct {
	Incident workflow.Incident   `json:"incident"`
	Messages []incidentdb.Record `json:"messages"`
}

func incidentShow(tx *bolt.Tx, args []string, w io.Writer) error {
	id, err := incidentArg(args, "show")
	if err != nil {
		return err
	}
	inc, err := loadIncident(tx, id)
	if err != nil {
		return err
	}
	recs, err := incidentdb.Messages(tx, id)
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(showData{Incident: *inc, Messages: recs})
}

// incidentDoc is the output of `embargo incident show --json`. Its fields are
// documented in incidentHelp; scripts rely on them, so they only ever grow.
// Instants are RFC 3339 in UTC; an instant that has not happened is null,
// a list without entries is [].
type incidentDoc struct {
	ID               string               `json:"id"`
	Phase            string               `json:"phase"`
	AsOf             time.Time            `json:"as_of"`
	Subject          string               `json:"subject"`
	Reporter         string               `json:"reporter"`
	Commander        string               `json:"commander"`
	FixLead          string               `json:"fix_lead"`
	FixTeam          []string             `json:"fix_team"`
	Severity         string               `json:"severity"`
	SeverityOverride bool                 `json:"severity_override"`
	CVSS             *docCVSS             `json:"cvss"`
	CVEs             []string             `json:"cves"`
	T                *time.Time           `json:"t"`
	NotifiedT        *time.Time           `json:"notified_t"`
	Flags            docFlags             `json:"flags"`
	Track            string               `json:"track"` // the disclosure track (docs/process.md §9); "" for none
	Resolution       string               `json:"resolution"`
	DuplicateOf      string               `json:"duplicate_of"`
	HandedOffTo      string               `json:"handed_off_to"`
	Advisory         map[string]string    `json:"advisory"`
	Affected         []docVersion         `json:"affected_versions"`
	Fixed            []docVersion         `json:"fixed_versions"`
	CWEs             []string             `json:"cwes"`
	References       []docReference       `json:"references"`
	Milestones       map[string]time.Time `json:"milestones"`
	Deadlines        []docDeadline        `json:"deadlines"`
	Pending          []docApproval        `json:"pending_approvals"`
	Distributors     []docDistributor     `json:"distributors"`
	History          []docChange          `json:"history"`
	Messages         []docMessage         `json:"messages"`
}

type docCVSS struct {
	Vector   string  `json:"vector"`
	Version  string  `json:"version"`
	Score    float64 `json:"score"`
	Severity string  `json:"severity"`
}

type docFlags struct {
	Public        bool `json:"public"`
	EmbargoBroken bool `json:"embargo_broken"`
	Deferred      bool `json:"deferred"`
	Emergency     bool `json:"emergency"`
	Approved      bool `json:"approved"`
}

type docVersion struct {
	Text         string `json:"text"`
	Component    string `json:"component"`
	Version      string `json:"version"`
	Introduced   string `json:"introduced"`
	Fixed        string `json:"fixed"`
	LastAffected string `json:"last_affected"`
	Prose        bool   `json:"prose"`
	Reading      string `json:"reading"`
}

type docReference struct {
	URL  string `json:"url"`
	Kind string `json:"kind"`
}

type docDeadline struct {
	Name    string     `json:"name"`
	What    string     `json:"what"`
	Due     *time.Time `json:"due"`
	Done    *time.Time `json:"done"`
	ASAP    bool       `json:"asap"`
	Overdue bool       `json:"overdue"`
}

type docApproval struct {
	Command   string         `json:"command"`
	Signers   []docSignature `json:"signers"`
	Expires   time.Time      `json:"expires"`
	Quorum    int            `json:"quorum"`
	Emergency bool           `json:"emergency"`
}

type docSignature struct {
	Email       string    `json:"email"`
	Fingerprint string    `json:"fingerprint"`
	At          time.Time `json:"at"`
	MessageID   string    `json:"message_id"`
}

// docDistributor is one distributor the notice reached, with their answer
// (/affected): status yes, no, unknown or fixed, "" for no answer.
type docDistributor struct {
	Email      string     `json:"email"`
	NotifiedAt time.Time  `json:"notified_at"`
	Status     string     `json:"status"`
	At         *time.Time `json:"at"`
	Note       string     `json:"note"`
}

type docChange struct {
	At          time.Time `json:"at"`
	Email       string    `json:"email"`
	Fingerprint string    `json:"fingerprint"`
	MessageID   string    `json:"message_id"`
	Command     string    `json:"command"`
	What        string    `json:"what"`
}

type docMessage struct {
	Seq          uint64    `json:"seq"`
	Received     time.Time `json:"received"`
	MessageID    string    `json:"message_id"`
	EnvelopeFrom string    `json:"envelope_from"`
	Sender       string    `json:"sender"`
	Size         int       `json:"size"`
	SHA256       string    `json:"sha256"`
	Note         string    `json:"note"`
}

// instant is t in UTC, nil when t is zero.
func instant(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// milestones are the incident's milestones in timeline order.
func milestones(inc *workflow.Incident) []struct {
	name string
	at   time.Time
} {
	return []struct {
		name string
		at   time.Time
	}{
		{"reported", inc.Opened}, {"triaged", inc.TriagedAt}, {"accepted", inc.AcceptedAt}, {"fix_team", inc.FixTeamAt},
		{"fixed", inc.FixedAt}, {"approved", inc.ApprovedAt}, {"notified", inc.NotifiedAt}, {"final_notice", inc.FinalNoticeAt},
		{"held", inc.HeldAt}, {"disclosed", inc.DisclosedAt}, {"retro", inc.RetroAt}, {"closed", inc.ClosedAt},
		{"last_change", inc.Updated},
	}
}

func versionsDoc(rs []workflow.VersionRange, fixedField bool) []docVersion {
	out := make([]docVersion, 0, len(rs))
	for _, r := range rs {
		out = append(out, docVersion{r.Text, r.Component, r.Version, r.Introduced, r.Fixed, r.LastAffected, r.Prose, r.Reading(fixedField)})
	}
	return out
}

// buildIncidentDoc reads the stored record at now with the configured holidays.
func buildIncidentDoc(sd showData, holidays []time.Time, now time.Time) incidentDoc {
	inc := &sd.Incident
	d := incidentDoc{
		ID: string(inc.ID), Phase: inc.Phase.String(), AsOf: now.UTC(), Subject: inc.Subject, Reporter: inc.Reporter,
		Commander: inc.Commander, FixLead: inc.FixLead, FixTeam: append([]string{}, inc.FixTeam...),
		Severity: inc.Severity().String(), SeverityOverride: inc.SeverityOverride != workflow.SeverityUnset,
		CVEs: append([]string{}, inc.CVEs...), T: instant(inc.T), NotifiedT: instant(inc.NotifiedT),
		Flags:       docFlags{inc.Public, inc.EmbargoBroken, inc.Deferred, inc.Emergency, inc.Approved},
		Track:       trackName(inc.Track),
		DuplicateOf: string(inc.DuplicateOf), HandedOffTo: inc.HandedOffTo,
		Advisory: map[string]string{}, Milestones: map[string]time.Time{},
		Affected: versionsDoc(workflow.ReadVersions(inc.Advisory.Affected), false),
		Fixed:    versionsDoc(workflow.ReadFixedVersions(inc.Advisory.Fixed), true),
		CWEs:     []string{}, References: []docReference{}, Deadlines: []docDeadline{},
		Pending: []docApproval{}, Distributors: []docDistributor{}, History: []docChange{}, Messages: []docMessage{},
	}
	if inc.Resolution != workflow.ResolutionUnset {
		d.Resolution = inc.Resolution.String()
	}
	if cv, ok := inc.CVSS(); ok {
		d.CVSS = &docCVSS{cv.Vector, cv.Version, cv.Score, cv.Severity().String()}
	}
	for _, f := range workflow.AdvisoryFields(inc.Advisory) {
		d.Advisory[f.Name] = f.Value
	}
	// Both were checked by /set; a stored value that no longer parses shows
	// as text in "advisory" and nowhere else.
	if ids, err := workflow.ParseCWEs(inc.Advisory.CWE); err == nil && ids != nil {
		d.CWEs = ids
	}
	if refs, err := workflow.ParseReferences(inc.Advisory.References); err == nil {
		for _, r := range refs {
			d.References = append(d.References, docReference{r.URL, string(r.Kind)})
		}
	}
	for _, m := range milestones(inc) {
		if !m.at.IsZero() {
			d.Milestones[m.name] = m.at.UTC()
		}
	}
	for _, dl := range workflow.Deadlines(*inc, holidays) {
		d.Deadlines = append(d.Deadlines, docDeadline{dl.Name, dl.What, instant(dl.Due), instant(dl.Done), dl.ASAP,
			dl.Open() && !dl.Due.IsZero() && dl.Due.Before(now)})
	}
	for _, a := range inc.PendingAt(now) {
		p := docApproval{Command: a.Command, Expires: a.Expires.UTC(), Quorum: a.Quorum, Emergency: a.Emergency, Signers: []docSignature{}}
		for _, s := range a.Signers {
			p.Signers = append(p.Signers, docSignature{s.Email, s.Fingerprint, s.At.UTC(), s.MessageID})
		}
		d.Pending = append(d.Pending, p)
	}
	for _, x := range inc.Distributors {
		d.Distributors = append(d.Distributors, docDistributor{x.Email, x.NotifiedAt.UTC(), x.Status.String(), instant(x.At), x.Note})
	}
	for _, c := range inc.History {
		d.History = append(d.History, docChange{c.At.UTC(), c.Email, c.Fingerprint, c.MessageID, c.Command, c.What})
	}
	for _, r := range sd.Messages {
		d.Messages = append(d.Messages, docMessage{r.Seq, r.Received.UTC(), r.MessageID, r.EnvelopeFrom, r.Sender, r.Size, r.SHA256, r.Note})
	}
	return d
}

// writeIncidentText is /status's text, then the advisory's values, the
// milestones, the history and the messages.
func writeIncidentText(w io.Writer, sd showData, holidays []time.Time, now time.Time) error {
	inc := &sd.Incident
	io.WriteString(w, workflow.StatusText(*inc, now, holidays))
	fmt.Fprintf(w, "\nReport:\n  %-16s %s\n", "subject:", inc.Subject)

	io.WriteString(w, "\nAdvisory:\n")
	set := 0
	for _, f := range workflow.AdvisoryFields(inc.Advisory) {
		if f.Value == "" {
			continue
		}
		set++
		lines := advisoryLines(f)
		fmt.Fprintf(w, "  %-16s %s\n", f.Name+":", lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "  %-16s %s\n", "", l)
		}
	}
	if set == 0 {
		io.WriteString(w, "  nothing set yet (/set FIELD VALUE; /help set)\n")
	}

	io.WriteString(w, "\nMilestones:\n")
	for _, m := range milestones(inc) {
		if !m.at.IsZero() {
			fmt.Fprintf(w, "  %-16s %s\n", strings.ReplaceAll(m.name, "_", " ")+":", workflow.FormatInstant(m.at))
		}
	}

	writeHistory(w, inc.History)

	fmt.Fprintf(w, "\nMessages (%d):\n", len(sd.Messages))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tRECEIVED (UTC)\tSENDER\tSIZE\tMESSAGE-ID")
	for _, r := range sd.Messages {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t<%s>\n", r.Seq, r.Received.UTC().Format(time.DateTime), r.Sender, r.Size, r.MessageID)
	}
	return tw.Flush()
}

// advisoryLines is a field's value a line at a time, the version ranges and
// references with how they were read.
func advisoryLines(f workflow.FieldValue) []string {
	var out []string
	switch f.Name {
	case "affected", "fixed":
		rs := workflow.ReadVersions(f.Value)
		if f.Name == "fixed" {
			rs = workflow.ReadFixedVersions(f.Value)
		}
		for _, r := range rs {
			out = append(out, r.Text+"  ("+r.Reading(f.Name == "fixed")+")")
		}
	case "references":
		if refs, err := workflow.ParseReferences(f.Value); err == nil {
			for _, r := range refs {
				out = append(out, r.URL+"  ("+string(r.Kind)+")")
			}
		}
	}
	if len(out) == 0 {
		out = strings.Split(strings.TrimRight(f.Value, "\n"), "\n")
	}
	return out
}

// writeHistory lists the changes, those of one message under one heading:
// when, who (the signer's address and key) and which message; then each
// command and what it changed.
func writeHistory(w io.Writer, hist []workflow.Change) {
	fmt.Fprintf(w, "\nHistory (%d changes):\n", len(hist))
	for i, c := range hist {
		if i == 0 || !sameOrigin(hist[i-1], c) {
			by := c.Email
			if by == "" {
				by = "the scheduler"
			}
			if c.Fingerprint != "" {
				by += " (key " + c.Fingerprint + ")"
			}
			if c.MessageID != "" {
				by += ", message <" + c.MessageID + ">"
			}
			fmt.Fprintf(w, "  %s by %s\n", workflow.FormatInstant(c.At), by)
		}
		for _, l := range strings.Split(strings.TrimRight(c.Command, "\n"), "\n") {
			fmt.Fprintf(w, "      %s\n", l)
		}
		for _, l := range strings.Split(strings.TrimRight(c.What, "\n"), "\n") {
			fmt.Fprintf(w, "        %s\n", strings.TrimSpace(l))
		}
	}
}

func sameOrigin(a, b workflow.Change) bool {
	return a.At.Equal(b.At) && a.Email == b.Email && a.Fingerprint == b.Fingerprint && a.MessageID == b.MessageID
}

// trackName is the track's name, "" for none.
func trackName(t workflow.Track) string {
	if t == workflow.TrackUnset {
		return ""
	}
	return t.String()
}
