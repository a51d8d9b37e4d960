package workflow

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The property test of the timeline: random incidents, worked by random SRC
// members with random commands at random instants (weekends, holidays,
// restarts, downtime, clock jumps), driven through Apply and Tick the way
// the daemon drives them (cmd/embargo/daemon/listd: every record read back
// from its JSON, a tick's markers stored with its mail), and held against
// CheckTimeline after every tick. A failure is shrunk to a short case and
// printed as a drill scenario (README, "Drills").
//
// EMBARGO_PROPERTY_CASES sets the number of cases (default
// propertyDefaultCases, fewer under -race or -short), EMBARGO_PROPERTY_SEED
// the first seed.

const (
	propertyDefaultCases     = 300 // a few seconds
	propertyDefaultCasesRace = 25  // as many seconds under the race detector
	propertyDefaultSeed      = 20261217
)

// The drill's own committee, so a printed scenario runs with `embargo drill`.
var (
	propSRC      = []string{"alice@example.test", "bob@example.test"}
	propReporter = "reporter@example.net"
)

// pstep is one event of a case.
type pstep struct {
	At   time.Time
	Kind string        // report, mail, commands, oncall, down, up, jump
	Who  int           // commands, oncall: src1, src2…
	Inc  int           // mail, commands: the incident, 1-based, in report order
	Text string        // commands, oncall: the signed text, with the drill's placeholders
	Jump time.Duration // jump: how far the wall clock moves (negative: back)
}

// pcase is one generated case.
type pcase struct {
	Name     string // a case kept by name (foundCases), not generated
	Seed     uint64
	Start    time.Time
	End      time.Time
	Holidays []time.Time
	Minute   bool // tick every minute; else at every instant something may fall due, and around it
	Steps    []pstep
}

func (c pcase) clone() pcase {
	c.Steps = append([]pstep(nil), c.Steps...)
	c.Holidays = append([]time.Time(nil), c.Holidays...)
	return c
}

// sim mirrors the daemon: the store (incidents as JSON, the meta entries),
// the up/down state, the clocks, and what it sent, as a timeline.
type sim struct {
	c        pcase
	store    map[ID][]byte
	decoded  map[ID]Incident    // each record as read back from its JSON: what every later read gives
	cands    map[ID][]time.Time // the instants something may fall due for each record, sorted
	ids      []ID
	perYear  map[int]uint64
	lastLead string
	onCall   OnCallState
	up       bool
	digest   time.Time // the week the digest last went out for (listd's digest_week)
	digested bool
	events   []TimelineEvent

	// listd's clock-jump guard (docs/threat-model.md G4): the heartbeat of
	// the last tick, the monotonic clock, and the gap the last check found.
	heartbeat time.Time
	mono      time.Duration
	lastMono  time.Duration
	haveMono  bool
	jumpFrom  time.Time
}

func newSim(c pcase) *sim {
	return &sim{c: c, store: map[ID][]byte{}, decoded: map[ID]Incident{}, cands: map[ID][]time.Time{}, perYear: map[int]uint64{}, up: true}
}

func (s *sim) env() Env {
	return Env{SRC: propSRC, LastLead: s.lastLead, Holidays: s.c.Holidays, Rotation: Rotation{Members: propSRC}, OnCallState: s.onCall}
}

// load reads a record back from the store, as incidentdb.Get does: put
// decoded it from its JSON once, and Apply and Tick never change their input.
func (s *sim) load(id ID) Incident { return s.decoded[id] }

// put stores a record as JSON and reads it back, as a restart would.
func (s *sim) put(at time.Time, inc Incident) {
	b, err := json.Marshal(inc)
	if err != nil {
		panic(err)
	}
	var back Incident
	if err := json.Unmarshal(b, &back); err != nil {
		panic(err)
	}
	s.store[inc.ID], s.decoded[inc.ID] = b, back
	s.cands[inc.ID] = s.candidates(back, at)
	st := back
	s.events = append(s.events, TimelineEvent{At: at, Kind: EventState, Incident: inc.ID, State: &st})
}

func (s *sim) send(at time.Time, id ID, m MessageKind, to, key string) {
	s.events = append(s.events, TimelineEvent{At: at, Kind: EventMessage, Incident: id, Message: m, To: to, Key: key})
}

// expand replaces the drill's placeholders.
func (s *sim) expand(text string) string {
	r := []string{"{domain}", "example.test", "{security}", "security@example.test"}
	for i, a := range propSRC {
		r = append(r, fmt.Sprintf("{src%d}", i+1), a)
	}
	for i, id := range s.ids {
		r = append(r, fmt.Sprintf("{id%d}", i+1), string(id))
	}
	return strings.NewReplacer(r...).Replace(text)
}

// errInvalid marks a case that cannot happen: mail while the daemon is down,
// an event before the clock, commands for an incident not yet reported.
var errInvalid = fmt.Errorf("invalid case")

// run plays a case and returns its timeline.
func (s *sim) run() ([]TimelineEvent, error) {
	clock := s.c.Start
	s.mono = 0
	for _, st := range s.c.Steps {
		if st.At.Before(clock) {
			return nil, errInvalid
		}
		s.ticks(clock, st.At)
		s.mono += st.At.Sub(clock)
		clock = st.At
		if err := s.step(st); err != nil {
			return nil, err
		}
		if st.Kind == "jump" {
			clock = clock.Add(st.Jump) // the wall clock moves, the monotonic one does not
		}
	}
	if s.c.End.After(clock) {
		s.ticks(clock, s.c.End)
	}
	return s.events, nil
}

func (s *sim) step(st pstep) error {
	now := st.At
	switch st.Kind {
	case "down":
		if !s.up {
			return errInvalid
		}
		s.up = false
		s.events = append(s.events, TimelineEvent{At: now, Kind: EventDown})
		return nil
	case "up":
		if s.up {
			return errInvalid
		}
		s.up, s.haveMono = true, false // a new process: no monotonic reading yet
		s.events = append(s.events, TimelineEvent{At: now, Kind: EventUp})
		return nil
	case "jump":
		return nil
	}
	if !s.up {
		return errInvalid
	}
	switch st.Kind {
	case "report":
		n := s.perYear[now.Year()] + 1
		s.perYear[now.Year()] = n
		r := Receive(nil, FormatID(now.Year(), n), Inbound{Sender: propReporter, Subject: "report " + strconv.Itoa(len(s.ids)+1)}, now)
		r.Incident.Commander, _ = OnCall(Rotation{Members: propSRC}, s.onCall, now)
		s.ids = append(s.ids, r.Incident.ID)
		s.put(now, r.Incident)
	case "mail":
		if st.Inc < 1 || st.Inc > len(s.ids) {
			return errInvalid
		}
		inc := s.load(s.ids[st.Inc-1])
		s.put(now, Receive(&inc, inc.ID, Inbound{Sender: propReporter}, now).Incident)
	case "commands":
		if st.Inc < 1 || st.Inc > len(s.ids) {
			return errInvalid
		}
		s.commands(now, st)
	case "oncall":
		res, err := ApplyOnCall(s.expand(st.Text), s.signer(st.Who, now), now, s.env())
		if err == nil && res.OnCall != nil {
			s.onCallChanged(now, *res.OnCall, nil)
		}
	default:
		return fmt.Errorf("unknown step %q", st.Kind)
	}
	return nil
}

func (s *sim) signer(who int, now time.Time) Signer {
	a := propSRC[(who-1+len(propSRC))%len(propSRC)]
	return Signer{Fingerprint: strings.ToUpper(a[:3]) + "F1", Email: a, Roles: []string{RoleSRC}, SignedAt: now}
}

// commands mirrors listd: the thread's mail is received (a change), then its
// signed commands apply, all or none, and the record is stored with what
// they send.
func (s *sim) commands(now time.Time, st pstep) {
	id := s.ids[st.Inc-1]
	inc := s.load(id)
	inc = Receive(&inc, id, Inbound{Sender: propSRC[(st.Who-1+len(propSRC))%len(propSRC)]}, now).Incident
	e := s.env()
	e.MessageID = fmt.Sprintf("m%d@example.test", now.Unix())
	res, err := Apply(inc, s.expand(st.Text), s.signer(st.Who, now), now, e)
	s.send(now, id, MessageAnswer, ToSigner, "receipt")
	if err == nil {
		if res.RoundRobin != "" {
			s.lastLead = res.RoundRobin
		}
		inc = res.Incident
		for _, a := range res.Actions {
			s.action(now, id, a)
		}
		if res.OnCall != nil {
			s.onCallChanged(now, *res.OnCall, &inc)
		}
	}
	s.put(now, inc)
}

// onCallChanged mirrors listd: an acknowledged handover moves the open
// incidents of the member handing over to the new on-call.
func (s *sim) onCallChanged(now time.Time, st OnCallState, cur *Incident) {
	old := s.onCall
	s.onCall = st
	if st.Member == "" || (st.Member == old.Member && st.Since.Equal(old.Since)) || st.Previous == "" || strings.EqualFold(st.Previous, st.Member) {
		return
	}
	move := func(inc *Incident) bool {
		if inc.Phase == PhaseClosed || !strings.EqualFold(inc.Commander, st.Previous) {
			return false
		}
		inc.Commander = st.Member
		inc.History = append(inc.History, Change{At: now, Command: "/oncall", What: "incident commander " + st.Member + " (was " + st.Previous + "), by on-call handover"})
		return true
	}
	for _, id := range s.ids {
		if cur != nil && cur.ID == id {
			move(cur)
			continue
		}
		inc := s.load(id)
		if move(&inc) {
			s.put(now, inc)
		}
	}
}

func (s *sim) action(now time.Time, id ID, a Action) {
	switch a := a.(type) {
	case ReporterMail:
		s.send(now, id, MessageReporter, ToReporter, a.Template)
	case DistributorNotice:
		if a.Final {
			s.send(now, id, MessageFinalNotice, ToDistributors, "")
		} else {
			s.send(now, id, MessageNotice, ToDistributors, "")
		}
	case EmbargoLifted:
		s.send(now, id, MessageEmbargoLifted, ToDistributors, "")
	case Release:
		s.send(now, id, MessageRelease, ToPublic, "")
	case AlertSRC:
		if a.Template == "reminder" {
			s.send(now, id, MessageReminder, ToSRC, a.Fields["key"])
		} else {
			s.send(now, id, MessageAlert, ToSRC, a.Template)
		}
	case Remind:
		to := map[string]string{"incident commander": ToCommander, "on-call": ToOnCall, "Fix Lead": ToFixLead}[a.Role]
		s.send(now, id, MessageReminder, to, a.Fields["key"])
	case StatusReply, HelpReply:
		s.send(now, id, MessageAnswer, ToSigner, a.Kind())
	default:
		panic("unknown action " + a.Kind())
	}
}

// ticks runs the scheduler over [from, to) while the daemon is up: every
// minute, or at every instant something may fall due and the minutes around
// it (tickTimes).
func (s *sim) ticks(from, to time.Time) {
	if !s.up || !to.After(from) {
		return
	}
	base := from
	if s.c.Minute {
		for t := from.Truncate(time.Minute); t.Before(to); t = t.Add(time.Minute) {
			if !t.Before(from) {
				s.tick(t, t.Sub(base))
			}
		}
		return
	}
	s.tick(from, 0) // the minute of the last event
	from = from.Add(time.Nanosecond)
	for {
		next, ok := s.nextTickTime(from, to)
		if !ok {
			return
		}
		s.tick(next, next.Sub(base))
		from = next.Add(time.Nanosecond)
	}
}

// nextTickTime is the first instant in [from, to) where a tick may matter:
// one of the records' candidates, each Monday 00:00 (the digest), and each
// midnight.
func (s *sim) nextTickTime(from, to time.Time) (time.Time, bool) {
	best := from.Truncate(24 * time.Hour)
	if best.Before(from) {
		best = best.Add(24 * time.Hour)
	}
	if mon := ShiftStart(from); !mon.Before(from) {
		best = mon
	} else if mon = mon.Add(ShiftLength); mon.Before(best) {
		best = mon
	}
	for _, id := range s.ids {
		cs := s.cands[id]
		i := sort.Search(len(cs), func(i int) bool { return !cs[i].Before(from) })
		if i < len(cs) && cs[i].Before(best) {
			best = cs[i]
		}
	}
	return best, best.Before(to)
}

// candidates lists, for a record stored at at, every instant up to the end
// of the case where something may fall due, as Tick and as the checker see
// it: a tick there finds a reminder early, on time, or lost. Around T, whose
// window edges matter to the minute, the minutes before and after too.
func (s *sim) candidates(inc Incident, at time.Time) []time.Time {
	if inc.Phase == PhaseClosed {
		return nil
	}
	var ts []time.Time
	add := func(t time.Time) {
		if !t.IsZero() {
			ts = append(ts, t)
		}
	}
	repeat := func(first time.Time, p time.Duration) {
		for t := first; p > 0 && !t.After(s.c.End); t = t.Add(p) {
			add(t)
		}
	}
	for _, r := range Reminders(inc, at, s.c.Holidays) {
		add(r.At)
	}
	for _, d := range Deadlines(inc, s.c.Holidays) {
		add(d.Due)
	}
	if !inc.T.IsZero() {
		for _, t := range []time.Time{inc.T.Add(-FinalNoticeWindow), inc.T.Add(-specFinalFrom), inc.T.Add(-FinalNoticeBefore), inc.T.Add(-specFinalBy), inc.T} {
			ts = append(ts, t.Add(-time.Minute), t, t.Add(time.Minute))
		}
	}
	sp := spec{holidays: s.c.Holidays}
	for _, k := range oneOffReminders {
		add(sp.reminder(inc, k, at).due)
	}
	repeat(sp.reminder(inc, "stale", time.Time{}).due, specStalePeriod(inc))
	repeat(sp.reminder(inc, "asap", time.Time{}).due, 24*time.Hour)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts
}

// tick mirrors listd.Service.Tick at now; elapsed is how far the monotonic
// clock moved since the last step.
func (s *sim) tick(now time.Time, elapsed time.Duration) {
	s.checkClock(now, s.mono+elapsed)
	e := s.env()
	for _, id := range s.ids {
		inc := s.load(id)
		if inc.Phase == PhaseClosed {
			continue // incidentdb.OpenIncidents
		}
		r := TickAfterGap(inc, now, e, s.jumpFrom)
		if !r.Applied {
			continue
		}
		for _, a := range r.Actions {
			s.action(now, id, a)
		}
		s.put(now, r.Incident)
	}
	s.weeklyDigest(now)
	s.events = append(s.events, TimelineEvent{At: now, Kind: EventTick})
}

// checkClock mirrors the daemon's clock check (docs/threat-model.md G4): in
// a running process, a wall clock more than 10 minutes ahead of the last
// heartbeat plus the monotonic time since has jumped, from where it should
// be; just after a start, a gap of more than 10 minutes since the stored
// heartbeat cannot be told from a jump, from that heartbeat. Releases whose
// T falls after that instant are held (TickAfterGap).
func (s *sim) checkClock(now time.Time, mono time.Duration) {
	s.jumpFrom = time.Time{}
	switch {
	case s.haveMono:
		if expected := s.heartbeat.Add(mono - s.lastMono); now.Sub(expected) > 10*time.Minute {
			s.jumpFrom = expected
		}
	case !s.heartbeat.IsZero() && now.Sub(s.heartbeat) > 10*time.Minute:
		s.jumpFrom = s.heartbeat
	}
	s.lastMono, s.haveMono, s.heartbeat = mono, true, now
}

// weeklyDigest mirrors listd's: once a week from Monday 00:00, not on the
// first start.
func (s *sim) weeklyDigest(now time.Time) {
	week := ShiftStart(now)
	if s.digested && !s.digest.Before(week) {
		return
	}
	first := !s.digested
	s.digest, s.digested = week, true
	if first {
		return
	}
	var incs []Incident
	for _, id := range s.ids {
		if inc := s.load(id); inc.Phase != PhaseClosed {
			incs = append(incs, inc)
		}
	}
	dg := WeeklyDigest(incs, now, s.env())
	s.events = append(s.events, TimelineEvent{At: now, Kind: EventMessage, Message: MessageDigest, To: ToSRC, Lines: dg.Deadlines})
}

// runCase plays a case and checks its timeline.
func runCase(c pcase) ([]Violation, []TimelineEvent, error) {
	s := newSim(c)
	evs, err := s.run()
	if err != nil {
		return nil, nil, err
	}
	return CheckTimeline(evs, c.Holidays), evs, nil
}

func propertyCases(t *testing.T) (int, uint64) {
	n, seed := propertyDefaultCases, uint64(propertyDefaultSeed)
	if raceEnabled {
		n = propertyDefaultCasesRace
	}
	if v := os.Getenv("EMBARGO_PROPERTY_CASES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("EMBARGO_PROPERTY_CASES=%q: want a positive number", v)
		}
	}
	if v := os.Getenv("EMBARGO_PROPERTY_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("EMBARGO_PROPERTY_SEED=%q: want a number", v)
		}
	}
	return n, seed
}

// TestTimelineProperty: every generated case keeps every invariant.
func TestTimelineProperty(t *testing.T) {
	n, seed := propertyCases(t)
	if testing.Short() && os.Getenv("EMBARGO_PROPERTY_CASES") == "" {
		n /= 3
	}
	stats := map[string]int{}
	for i := 0; i < n; i++ {
		c := genCase(seed + uint64(i))
		vs, evs, err := runCase(c)
		if err != nil {
			t.Fatalf("seed %d: the generator made an invalid case: %v", c.Seed, err)
		}
		countStats(stats, evs)
		if len(vs) > 0 {
			small, sv := shrink(c, vs[0].Rule)
			t.Fatalf("seed %d (EMBARGO_PROPERTY_SEED=%d EMBARGO_PROPERTY_CASES=1 reproduces it): %s\n"+
				"shrunk from %d to %d steps, first violation: %s\nas a drill scenario:\n\n%s",
				c.Seed, c.Seed, vs[0], len(c.Steps), len(small.Steps), sv, scenarioText(small, sv))
		}
	}
	keys := make([]string, 0, len(stats))
	for k := range stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, stats[k])
	}
	t.Logf("%d cases from seed %d:%s", n, seed, b.String())
}

// countStats counts what the cases exercised, for the log: a property test
// that never reaches a release proves little.
func countStats(stats map[string]int, evs []TimelineEvent) {
	for _, ev := range evs {
		switch ev.Kind {
		case EventTick:
			stats["ticks"]++
		case EventMessage:
			switch ev.Message {
			case MessageReminder:
				stats["reminder:"+ev.Key]++
			case MessageRelease:
				stats["releases"]++
			case MessageFinalNotice:
				stats["final-notices"]++
			case MessageNotice:
				stats["notices"]++
			case MessageAlert:
				stats["alert:"+ev.Key]++
			}
		case EventDown:
			stats["downs"]++
		}
	}
}
