package workflow

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// A timeline, for CheckTimeline: what happened to the incidents over time,
// as neutral events a property test, a drill or a replay can all produce.
// CheckTimeline holds it against the process's invariants with its own,
// independent reading of the timeline (docs/process.md §3, §6; the README's
// timeline table), not with Deadlines or Reminders, so that a bug in those is
// caught rather than repeated.

// EventKind says what a TimelineEvent records.
type EventKind int

// The event kinds.
const (
	EventUnset   EventKind = iota
	EventState             // the incident's record as an operation (commands, mail, tick) stored it at At
	EventMessage           // a message sent at At
	EventTick              // the scheduler ticked at At: everything due by At has gone out
	EventDown              // the daemon stopped at At: no tick until EventUp
	EventUp                // the daemon started at At, on the same store
)

// MessageKind classifies a message of the timeline.
type MessageKind int

// The message kinds.
const (
	MessageUnset         MessageKind = iota
	MessageReminder                  // a reminder; Key is its key (TimelineRules)
	MessageAlert                     // an alert to the SRC; Key is its template: release-held, embargo-break, …
	MessageNotice                    // a distributor notice: the first, or a re-notification
	MessageFinalNotice               // the final notice with the public text
	MessageEmbargoLifted             // the distributors told the embargo is lifted
	MessageRelease                   // the advisory made public: announce, channels (one release, several messages at one instant)
	MessageReporter                  // to the reporter
	MessageAnswer                    // a receipt, /status or /help to the signer: not part of the timeline
	MessageDigest                    // the Monday digest; Lines are its deadline lines
)

// The recipient roles of a message (TimelineEvent.To).
const (
	ToSRC          = "src"          // the whole committee
	ToCommander    = "commander"    // the incident commander
	ToOnCall       = "on-call"      // the on-call, for an incident without a commander
	ToFixLead      = "fix-lead"     // the Fix Lead
	ToDistributors = "distributors" // the distributors list
	ToPublic       = "public"       // announce subscribers and outside channels
	ToReporter     = "reporter"
	ToSigner       = "signer" // the member who sent the commands
)

// TimelineEvent is one thing that happened. Events are in the order they
// happened; an operation's messages come before the record it stored
// (EventState at the same instant), and a tick's EventTick after both.
type TimelineEvent struct {
	At       time.Time
	Kind     EventKind
	Incident ID // "" for ticks, down, up, the digest and on-call notices

	// EventMessage.
	Message MessageKind
	To      string   // the recipient role (To… constants)
	Key     string   // MessageReminder: the reminder key; MessageAlert: the template
	Lines   []string // MessageDigest: "ID deadline …" lines, as WeeklyDigest writes them

	// EventState: the record as stored after the operation.
	State *Incident
}

// Violation is one broken invariant.
type Violation struct {
	Rule     string // an Invariant name
	At       time.Time
	Incident ID
	Detail   string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s %s: %s", FormatInstant(v.At), v.Incident, v.Rule, v.Detail)
}

// Invariant is one rule CheckTimeline checks: its name, what it holds, and
// what it deliberately exempts (Exempt, "" for nothing).
type Invariant struct{ Name, Text, Exempt string }

// ExemptDiscloseNow is the one override of the release rules: /disclose now
// is the SRC's explicit decision to go public at once (docs/process.md §3,
// 5x: when in doubt, go public ASAP), signed by as many members as the
// two-person rule asks (Env.Quorum). A release by it may come any time after
// a distributor notice, even 0 s after it, its T is the moment of the
// release, off the 16:00 slots, and it is never "late": CheckTimeline does
// not hold it to notice-7-days, t-slot or release-late. It is still a
// release, once, in the history, never before a T the scheduler would use.
const ExemptDiscloseNow = "a release by /disclose now, the SRC's explicit (two-person) override"

// Invariants lists the rules of CheckTimeline, by the names violations give.
func Invariants() []Invariant {
	return []Invariant{
		{"reminder-moot", "no reminder about a milestone already reached or made moot by a later one, nor one that gives way to the ASAP nudge, falls before T was set, or comes after a later one of its group", ""},
		{"reminder-once", "each reminder at most once for the instant it reminds of", ""},
		{"reminder-early", "no reminder before its due instant", ""},
		{"reminder-lost", "none lost: a reminder due and not moot goes out at the first tick after its instant (of a group due together, only the latest need)", ""},
		{"reminder-recipient", "each reminder to the member or list the timeline names", ""},
		{"digest-moot", "the digest lists no deadline that is met or moot", ""},
		{"notice-7-days", "with a CVE, the distributor notice at least 7 days before T, unless public, emergency, broken or on the urgent track", ExemptDiscloseNow},
		{"notice-once", "one distributor notice (first or re-notification) per operation: the commands of one message tell the distributors once, of their last T", ""},
		{"t-slot", "T, when set, at 16:00 UTC on a Monday–Thursday that is not a holiday, and not in the past", ExemptDiscloseNow + ": its T is the moment of the release"},
		{"public-before-t", "nothing public before T, and one release per incident", ""},
		{"release-late", "the scheduled release at the first tick at or after T, or held: never silently late", ExemptDiscloseNow},
		{"final-notice-window", "the final notice between T-25 h and T-24 h, once per T and notice", ""},
		{"history", "every message of an incident is in its history, at its instant", ""},
	}
}

// CheckTimeline checks a timeline against Invariants, with the configured
// holidays, and returns what it broke, in time order.
func CheckTimeline(events []TimelineEvent, holidays []time.Time) []Violation {
	c := &checker{sp: spec{holidays: holidays}, last: map[ID]*Incident{}, sent: map[sentKey]time.Time{},
		dues: map[ID][]specDue{}, released: map[ID]time.Time{}, finals: map[ID]map[time.Time]bool{}, reported: map[string]bool{},
		notices: map[ID]int{}}
	post := postStates(events)
	for i, ev := range events {
		switch ev.Kind {
		case EventState:
			if ev.State != nil {
				c.state(ev)
				s := *ev.State
				c.last[ev.Incident] = &s
				c.dues[ev.Incident] = c.oneOffDues(s)
				delete(c.notices, ev.Incident) // the operation's end
			}
		case EventMessage:
			c.message(ev, post[i])
		case EventTick:
			c.tick(ev.At)
			c.ticks = append(c.ticks, ev.At)
		}
	}
	sort.SliceStable(c.out, func(i, j int) bool { return c.out[i].At.Before(c.out[j].At) })
	return c.out
}

// postStates finds, for each message, the record it is judged against: the
// next state of its incident at the same instant (what the operation that
// sent it stored), else the last one before it.
func postStates(events []TimelineEvent) []*Incident {
	post := make([]*Incident, len(events))
	last := map[ID]*Incident{}
	for i, ev := range events {
		switch ev.Kind {
		case EventState:
			last[ev.Incident] = ev.State
		case EventMessage:
			post[i] = last[ev.Incident]
			for j := i + 1; j < len(events) && events[j].At.Equal(ev.At); j++ {
				if events[j].Kind == EventState && events[j].Incident == ev.Incident {
					post[i] = events[j].State
					break
				}
			}
		}
	}
	return post
}

type sentKey struct {
	id  ID
	key string
	due time.Time
}

type checker struct {
	sp       spec
	last     map[ID]*Incident
	sent     map[sentKey]time.Time // reminders sent, by the instant they reminded of
	dues     map[ID][]specDue      // the one-off reminders each incident's last record expects
	released map[ID]time.Time      // the instant of each incident's release: its messages (announce, channels) share it
	finals   map[ID]map[time.Time]bool
	reported map[string]bool // one violation per rule and subject
	notices  map[ID]int      // distributor notices since the incident's last stored record: one operation's
	ticks    []time.Time     // the ticks so far
	out      []Violation
}

func (c *checker) fail(rule string, at time.Time, id ID, once string, format string, a ...any) {
	if once != "" {
		k := rule + "|" + string(id) + "|" + once
		if c.reported[k] {
			return
		}
		c.reported[k] = true
	}
	c.out = append(c.out, Violation{Rule: rule, At: at, Incident: id, Detail: fmt.Sprintf(format, a...)})
}

// state checks a stored record: T where it may be, and the 7-day rule.
func (c *checker) state(ev TimelineEvent) {
	inc, prev := ev.State, c.last[ev.Incident]
	if !inc.T.IsZero() && (prev == nil || !prev.T.Equal(inc.T)) {
		now := inc.T.Equal(ev.At) && discloseNowOverride(*inc, ev.At)
		switch {
		case now: // /disclose now: T is the moment of the release
		case inc.T.Before(ev.At):
			c.fail("t-slot", ev.At, ev.Incident, "", "T set to %s, in the past", FormatInstant(inc.T))
		case !c.sp.isSlot(inc.T):
			c.fail("t-slot", ev.At, ev.Incident, "", "T set to %s: not 16:00 UTC on a Monday–Thursday that is not a holiday", FormatInstant(inc.T))
		}
	}
	if (inc.Phase == PhaseFix || inc.Phase == PhaseEmbargo) && !inc.T.IsZero() && noticeRuleApplies(*inc) &&
		inc.T.Sub(inc.NotifiedAt) < specNotice {
		c.fail("notice-7-days", ev.At, ev.Incident, inc.T.String()+inc.NotifiedAt.String(),
			"T %s is less than 7 days after the distributor notice of %s (CVE %s; not public, broken, emergency or urgent track)",
			FormatInstant(inc.T), FormatInstant(inc.NotifiedAt), strings.Join(inc.CVEs, ", "))
	}
}

// discloseNowOverride reports whether the release at at was the SRC's
// /disclose now, not the scheduler's at T: ExemptDiscloseNow.
func discloseNowOverride(inc Incident, at time.Time) bool {
	for _, h := range inc.History {
		if h.At.Equal(at) && strings.HasPrefix(h.Command, "/disclose now") {
			return true
		}
	}
	return false
}

func noticeRuleApplies(inc Incident) bool {
	return !inc.NotifiedAt.IsZero() && len(inc.CVEs) > 0 && !inc.Public && !inc.EmbargoBroken && !inc.Emergency && inc.Track != TrackUrgent
}

func (c *checker) message(ev TimelineEvent, inc *Incident) {
	if ev.Message == MessageDigest {
		c.digest(ev)
		return
	}
	if ev.Incident == "" || ev.Message == MessageAnswer {
		return
	}
	if inc == nil {
		c.fail("history", ev.At, ev.Incident, "", "a message about an incident with no record")
		return
	}
	c.history(ev, inc)
	switch ev.Message {
	case MessageReminder:
		c.reminder(ev, *inc)
	case MessageNotice:
		delete(c.finals, ev.Incident) // a new notice (a changed T) calls for its own final notice
		if c.notices[ev.Incident]++; c.notices[ev.Incident] == 2 {
			c.fail("notice-once", ev.At, ev.Incident, "", "a second distributor notice from one operation (T %s): one message tells the distributors once, of its last T",
				FormatInstant(inc.T))
		}
	case MessageFinalNotice:
		lo, hi := inc.T.Add(-specFinalFrom), inc.T.Add(-specFinalBy)
		if ev.At.Before(lo) || ev.At.After(hi) {
			c.fail("final-notice-window", ev.At, ev.Incident, "", "final notice at %s, outside %s … %s for T %s",
				FormatInstant(ev.At), FormatInstant(lo), FormatInstant(hi), FormatInstant(inc.T))
		}
		if c.finals[ev.Incident] == nil {
			c.finals[ev.Incident] = map[time.Time]bool{}
		}
		if c.finals[ev.Incident][inc.T] {
			c.fail("final-notice-window", ev.At, ev.Incident, "", "a second final notice for T %s", FormatInstant(inc.T))
		}
		c.finals[ev.Incident][inc.T] = true
	case MessageRelease:
		if ev.At.Before(inc.T) {
			c.fail("public-before-t", ev.At, ev.Incident, "", "released before T %s", FormatInstant(inc.T))
		}
		if first, ok := c.released[ev.Incident]; ok && !first.Equal(ev.At) {
			c.fail("public-before-t", ev.At, ev.Incident, "", "released a second time (first %s)", FormatInstant(first))
		}
		if !discloseNowOverride(*inc, ev.At) {
			for i := len(c.ticks) - 1; i >= 0; i-- {
				if tk := c.ticks[i]; !tk.Before(inc.T) && tk.Before(ev.At) {
					c.fail("release-late", ev.At, ev.Incident, "", "released %s, though the scheduler ticked at %s, after T %s",
						FormatInstant(ev.At), FormatInstant(tk), FormatInstant(inc.T))
					break
				}
			}
		}
		if _, ok := c.released[ev.Incident]; !ok {
			c.released[ev.Incident] = ev.At
		}
		if noticeRuleApplies(*inc) && ev.At.Sub(inc.NotifiedAt) < specNotice && !discloseNowOverride(*inc, ev.At) {
			c.fail("notice-7-days", ev.At, ev.Incident, "release",
				"released %s after the distributor notice of %s, less than 7 days (CVE %s; not public, broken, emergency or urgent track)",
				ev.At.Sub(inc.NotifiedAt).Round(time.Minute), FormatInstant(inc.NotifiedAt), strings.Join(inc.CVEs, ", "))
		}
	}
}

// history: the record the message's operation stored has an entry at its
// instant; a reminder's names its key.
func (c *checker) history(ev TimelineEvent, inc *Incident) {
	for _, h := range inc.History {
		if h.At.Equal(ev.At) && (ev.Message != MessageReminder || strings.Contains(h.What, ev.Key)) {
			return
		}
	}
	what := ev.Key
	if what == "" {
		what = fmt.Sprint(ev.Message)
	}
	c.fail("history", ev.At, ev.Incident, "", "message %s (%s) to %s has no history entry at its instant", what, messageNames[ev.Message], ev.To)
}

var messageNames = map[MessageKind]string{MessageReminder: "reminder", MessageAlert: "alert", MessageNotice: "distributor notice",
	MessageFinalNotice: "final notice", MessageEmbargoLifted: "embargo lifted", MessageRelease: "release", MessageReporter: "to the reporter",
	MessageAnswer: "answer", MessageDigest: "digest"}

func (c *checker) reminder(ev TimelineEvent, inc Incident) {
	exp := c.sp.reminder(inc, ev.Key, ev.At)
	if exp.unknown {
		c.fail("reminder-moot", ev.At, ev.Incident, "", "unknown reminder %q", ev.Key)
		return
	}
	if exp.why != "" {
		c.fail("reminder-moot", ev.At, ev.Incident, "", "reminder %s to %s, but %s", ev.Key, ev.To, exp.why)
	}
	if ev.At.Before(exp.due) {
		c.fail("reminder-early", ev.At, ev.Incident, "", "reminder %s at %s, due %s", ev.Key, FormatInstant(ev.At), FormatInstant(exp.due))
	}
	for _, o := range oneOffReminders {
		if o == ev.Key || specGroup[o] != specGroup[ev.Key] {
			continue
		}
		if later := c.sp.reminder(inc, o, ev.At); later.due.After(exp.due) && !later.due.After(ev.At) {
			if at, ok := c.sent[sentKey{ev.Incident, o, later.due}]; ok {
				c.fail("reminder-moot", ev.At, ev.Incident, "", "reminder %s about %s after %s, later in its group, went out %s",
					ev.Key, FormatInstant(exp.due), o, FormatInstant(at))
			}
		}
	}
	k := sentKey{ev.Incident, ev.Key, exp.due}
	if first, ok := c.sent[k]; ok {
		c.fail("reminder-once", ev.At, ev.Incident, "", "reminder %s about %s again (first sent %s)", ev.Key, FormatInstant(exp.due), FormatInstant(first))
	} else {
		c.sent[k] = ev.At
	}
	if !exp.to[ev.To] {
		c.fail("reminder-recipient", ev.At, ev.Incident, "", "reminder %s to %s, want %s", ev.Key, ev.To, keysOf(exp.to))
	}
}

func keysOf(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, " or ")
}

// specDue is a one-off reminder the spec expects, and when.
type specDue struct {
	key string
	at  time.Time
}

func (c *checker) oneOffDues(inc Incident) []specDue {
	var ds []specDue
	for _, key := range oneOffReminders {
		if exp := c.sp.reminder(inc, key, time.Time{}); exp.why == "" {
			ds = append(ds, specDue{key, exp.due})
		}
	}
	return ds
}

// tick: every one-off reminder due by now and not moot went out, unless a
// later one of its group, also due, did.
func (c *checker) tick(now time.Time) {
	ids := make([]ID, 0, len(c.dues))
	for id := range c.dues {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		dues := c.dues[id]
		for _, d := range dues {
			if d.at.After(now) {
				continue
			}
			if _, ok := c.sent[sentKey{id, d.key, d.at}]; ok {
				continue
			}
			excused := false
			for _, o := range dues {
				_, sent := c.sent[sentKey{id, o.key, o.at}]
				excused = excused || (sent && !o.at.After(now) && specGroup[o.key] == specGroup[d.key] && o.at.After(d.at))
			}
			if !excused {
				c.fail("reminder-lost", now, id, d.key+d.at.String(), "reminder %s due %s not sent by the tick at %s",
					d.key, FormatInstant(d.at), FormatInstant(now))
			}
		}
	}
}

// digest: each line names an incident and a deadline that is open.
func (c *checker) digest(ev TimelineEvent) {
	for _, l := range ev.Lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		id := ID(f[0])
		inc, ok := c.last[id]
		if !ok {
			continue
		}
		if why := c.sp.deadlineClosed(*inc, f[1]); why != "" {
			c.fail("digest-moot", ev.At, id, "", "the digest lists %s, but %s", f[1], why)
		}
	}
}

// ReminderKeyOfTitle returns the key of the reminder a subject title names
// ("fix team not formed (24 h)" → "fix-team"), as Tick titles them: a drill
// or a mail archive sees subjects, not keys.
func ReminderKeyOfTitle(title string) (string, bool) {
	for _, r := range timelineRules {
		if r.To == RecipientUnset {
			continue
		}
		if titlePattern(r.Key).MatchString(title) {
			return r.Key, true
		}
	}
	return "", false
}

// titlePattern matches the titles of a reminder: its title for an empty
// incident, with the instant ("not set") and numbers left open.
func titlePattern(key string) *regexp.Regexp {
	t := regexp.QuoteMeta(reminderTitle(Reminder{Key: key}, Incident{}))
	t = strings.ReplaceAll(t, "not set", ".+")
	t = regexp.MustCompile(`[0-9]+`).ReplaceAllString(t, "[0-9]+")
	return regexp.MustCompile("^" + t + "$")
}
