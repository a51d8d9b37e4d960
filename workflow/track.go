package workflow

import (
	"fmt"
	"strings"
	"time"
)

// Track is an incident's disclosure track (docs/process.md §9, after Go's
// security policy): how it is fixed and made public. The zero value means
// no track: the incident behaves as it did before tracks existed.
type Track int

// The tracks.
const (
	TrackUnset   Track = iota
	TrackPublic        // fixed in public, in a normal release: no embargo, no distributor notice, no pre-announcement
	TrackPrivate       // fixed in private, pre-announced publicly 3–7 days before T
	TrackUrgent        // fixed in private, released as soon as ready, without pre-announcement
)

var trackNames = [...]string{"unset", "public", "private", "urgent"}

func (t Track) String() string {
	if t < 0 || int(t) >= len(trackNames) {
		return fmt.Sprintf("Track(%d)", int(t))
	}
	return trackNames[t]
}

// ParseTrack reads a track name in any letter case; ok is false for
// anything else ("unset" included).
func ParseTrack(s string) (Track, bool) {
	for i, n := range trackNames {
		if i > 0 && n == strings.ToLower(strings.TrimSpace(s)) {
			return Track(i), true
		}
	}
	return TrackUnset, false
}

// MarshalText stores a track by its name.
func (t Track) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (t *Track) UnmarshalText(b []byte) error {
	for i, n := range trackNames {
		if n == string(b) {
			*t = Track(i)
			return nil
		}
	}
	return fmt.Errorf("workflow: unknown track %q", b)
}

// The pre-announcement window of the private track: Go pre-announces 3–7
// days ahead (docs/process.md §9). The SRC is reminded at T − 7 days when
// no pre-announcement of the current T exists, and once more at T − 3 days.
const (
	PreannounceFrom = 7 * 24 * time.Hour
	PreannounceBy   = 3 * 24 * time.Hour
)

// trackHelp is /help track: one paragraph on each track.
const trackHelp = "Put the incident on a disclosure track (docs/process.md §9, after Go's security policy); works in triage, fix and embargo, may be changed, and goes to the history with its signer. " +
	"public: the fix is made in public and ships in a normal release, with no embargo: /notify and /preannounce are refused, the distributor-notice reminders (T−9 d, T−7 d) and the 7-day notice rule do not apply (there is no notice to count from), and the release at T still publishes the advisory; the deadlines keep their normal pace. " +
	"It is not the /public flag: /public records that the issue is already publicly known (a fact, irreversible, two-person rule), makes every deadline ASAP with a daily nudge and lets associates act; the public track is the committee's choice of how to fix a not necessarily known issue, and can be changed (not after the distributors were notified under embargo). " +
	"private: fixed under embargo and pre-announced publicly 3–7 days before T: once T is set, the SRC is reminded at T−7 d when no /preannounce of the current T exists, and again at T−3 d; moving T re-arms both. " +
	"urgent: fixed in private and released as soon as ready, without pre-announcement: the 7-day notice rule is lifted for every T, as /disclose DATE emergency lifts it for one, and /preannounce is refused. " +
	"Leaving the urgent or public track for private is refused while T is less than 7 days after the notice (or now) with a CVE: move T first. Without /track an incident follows no track (no pre-announcement reminders)."

func parseTrack(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrSyntax, "give exactly one track: public, private or urgent")
	}
	t, ok := ParseTrack(f[0])
	if !ok {
		return Command{}, argErr(ErrSyntax, "%q: the tracks are public, private and urgent (docs/process.md §9)", f[0])
	}
	return Command{Name: "track", Args: []string{t.String()}}, nil
}

// sevenDayRuleLifted reports whether the 7-day notice rule is off for the
// T being set: the incident is public or broken, the T comes with
// emergency, or the incident is on the urgent track (no pre-announcement,
// as soon as ready) or the public track (no notice to count from).
func (inc *Incident) sevenDayRuleLifted(emergency bool) bool {
	return inc.ASAP() || emergency || inc.Track == TrackUrgent || inc.Track == TrackPublic
}

// track runs /track.
func (m *machine) track(c Command) (string, bool, error) {
	if err := m.inPhase(PhaseTriage, PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	inc := &m.inc
	t, _ := ParseTrack(c.arg(0))
	if t == inc.Track {
		return "already on the " + t.String() + " track", false, nil
	}
	if t == TrackPublic && !inc.NotifiedAt.IsZero() {
		return "", false, argErr(ErrTrack, "the distributors were notified under embargo %s: the public track has no embargo. "+
			"Keep the private or urgent track, or end the embargo with /disclose now", FormatInstant(inc.NotifiedAt))
	}
	prev := inc.Track
	inc.Track = t
	if len(inc.CVEs) > 0 {
		if err := m.cveNoticeRule("track " + t.String()); err != nil {
			return "", false, err
		}
	}
	what := "track " + t.String()
	if prev != TrackUnset {
		what += " (was " + prev.String() + ")"
	}
	switch t {
	case TrackPublic:
		what += ": no embargo, no distributor notice, no pre-announcement; the advisory is published at T"
	case TrackPrivate:
		what += ": pre-announce with /preannounce 3–7 days before T"
		if !inc.T.IsZero() {
			what += ", between " + FormatInstant(inc.T.Add(-PreannounceFrom)) + " and " + FormatInstant(inc.T.Add(-PreannounceBy))
		}
	case TrackUrgent:
		what += ": released as soon as ready, without pre-announcement; no 7-day notice rule"
	}
	return what, true, nil
}

// trackRefusal is the refusal of a command the incident's track rules out
// (/notify, /preannounce), or nil: it says why and how to change track.
func (m *machine) trackRefusal(name string) error {
	switch t := m.inc.Track; {
	case t == TrackPublic && name == "notify":
		return argErr(ErrTrack, "the incident is on the public track (fixed in public, no embargo, docs/process.md §9): there is no embargoed notice; "+
			"the distributors get the advisory at T with everyone. To notify them under embargo, change track first with /track private (or /track urgent)")
	case t == TrackPublic && name == "preannounce":
		return argErr(ErrTrack, "the incident is on the public track (fixed in public, no embargo, docs/process.md §9): nothing is pre-announced, "+
			"the advisory is published at T. To pre-announce, change track first with /track private")
	case t == TrackUrgent && name == "preannounce":
		return argErr(ErrTrack, "the incident is on the urgent track (docs/process.md §9): it is released as soon as ready, without pre-announcement. "+
			"To pre-announce, change track first with /track private")
	}
	return nil
}

// PreannouncedForT is when the current T was pre-announced; zero when T
// is unset or no pre-announcement named it.
func (inc *Incident) PreannouncedForT() time.Time {
	if inc.T.IsZero() {
		return time.Time{}
	}
	for i := len(inc.Preannounced) - 1; i >= 0; i-- {
		if p := inc.Preannounced[i]; p.T.Equal(inc.T) {
			return p.At
		}
	}
	return time.Time{}
}

// trackLine is what /status and the digest say of the track: "" without
// one; for the private track, whether the pre-announcement is done or due.
func trackLine(inc Incident, now time.Time) string {
	switch inc.Track {
	case TrackUnset:
		return ""
	case TrackPublic:
		return "public (no embargo, no notice, no pre-announcement)"
	case TrackUrgent:
		return "urgent (no pre-announcement, no 7-day rule)"
	}
	s := "private: "
	switch at := inc.PreannouncedForT(); {
	case inc.T.IsZero():
		return s + "pre-announcement due 3–7 days before T (T not set)"
	case !at.IsZero():
		return s + "pre-announcement done " + FormatInstant(at)
	case !inc.DisclosedAt.IsZero():
		return s + "disclosed without a pre-announcement of T"
	case now.After(inc.T.Add(-PreannounceBy)):
		return s + "pre-announcement OVERDUE since " + FormatInstant(inc.T.Add(-PreannounceBy))
	}
	return s + "pre-announcement due " + FormatInstant(inc.T.Add(-PreannounceFrom)) + " … " + FormatInstant(inc.T.Add(-PreannounceBy))
}
