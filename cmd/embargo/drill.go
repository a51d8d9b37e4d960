package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// builtinScenario is the scenario `embargo drill` runs without --scenario.
//
//go:embed drill.scenario
var builtinScenario []byte

// drillConfig is the roster of a drill without --config.
const drillConfig = `domain = "example.test"

[oncall]
rotation = ["alice@example.test", "bob@example.test"]

[[members]]
email = "alice@example.test"
name  = "Alice"
roles = ["src"]
[[members]]
email = "bob@example.test"
name  = "Bob"
roles = ["src"]
[[members]]
email = "packager@distro-one.example"
roles = ["distributor"]
[[members]]
email = "security@distro-two.example"
roles = ["distributor"]

[[channels]]
address = "oss-security@lists.openwall.example"
subject_tag = "[example]"
`

const drillHelp = `Usage: embargo drill [--scenario FILE] [--config FILE] [--verbose]

Runs a whole incident through the real daemon (SMTP intake, the store, the
scheduler's tick and the delivery queue) on a virtual clock, in a temporary
directory, and prints the timeline: one row per message in or out, with its
UTC time, the incident's phase, who it went to (list or role), the number of
copies, whether it was encrypted or signed, and its subject (read from inside
the encryption). Nothing is sent: outbound mail stays in memory.

The built-in scenario takes one report from intake to the retrospective (the
format of a scenario file is in the README, "Drills"). With --config the drill
uses that file's lists, members, holidays, channels and on-call rotation, with
keys made for the drill in place of the members' own: use it to rehearse an
incident, or to see what a configuration does before it goes live.

Examples:
  embargo drill
  embargo drill --scenario tabletop.txt --config /etc/embargo/embargo.toml

Flags:
`

func cmdDrill(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("drill", drillHelp, &cf, false)
	scenario := fs.String("scenario", "", "scenario file; default: the built-in scenario")
	verbose := fs.Bool("verbose", false, "show the daemon's log on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("drill takes no arguments; see embargo drill --help")
	}
	data, name := builtinScenario, "built-in"
	if *scenario != "" {
		var err error
		if data, err = os.ReadFile(*scenario); err != nil {
			return err
		}
		name = *scenario
	}
	sc, err := parseScenario(data, name)
	if err != nil {
		return err
	}
	var base *config.Config
	if cf.config != "" {
		if base, err = config.Load(cf.config); err != nil {
			return err
		}
	} else if base, err = config.Parse([]byte(drillConfig), "built-in drill roster"); err != nil {
		return err
	}
	logw := io.Discard
	if *verbose {
		logw = s.err
	}
	dir, err := os.MkdirTemp("", "embargo-drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dr, err := newDrill(base, sc, dir, daemon.NewLogger("debug", logw))
	if err != nil {
		return err
	}
	if err := dr.run(context.Background()); err != nil {
		return err
	}
	return dr.print(s.out)
}

// A scenario is a list of timed events on a virtual clock.
type scenario struct {
	name       string
	start, end time.Time
	events     []drillEvent
}

// drillEvent is one line "@ WHEN ACTION ARGS" and its text.
type drillEvent struct {
	at     time.Time
	line   int
	action string // mail, commands, down, up
	who    string // mail: the sender's address; commands: a member (address, local part, srcN)
	to     string // recipient; placeholders allowed
	header [][2]string
	body   string
}

var (
	relTime    = regexp.MustCompile(`^\+((?:[0-9]+[wdhm])+|0)$`)
	relPart    = regexp.MustCompile(`([0-9]+)([wdhm])`)
	dateOnly   = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)
	clockTime  = regexp.MustCompile(`^[0-9]{2}:[0-9]{2}$`)
	headerLine = regexp.MustCompile(`^([A-Za-z0-9-]+):[ \t]*(.*)$`)
)

// parseWhen reads a time at f[0] (and f[1] for "YYYY-MM-DD HH:MM"), and
// returns how many fields it took.
func parseWhen(f []string, start time.Time) (time.Time, int, error) {
	if len(f) == 0 {
		return time.Time{}, 0, errors.New("a time is missing")
	}
	if m := relTime.FindStringSubmatch(f[0]); m != nil {
		if start.IsZero() {
			return time.Time{}, 0, errors.New("a relative time needs a start line first")
		}
		t := start
		for _, p := range relPart.FindAllStringSubmatch(m[1], -1) {
			n, _ := strconv.Atoi(p[1])
			unit := map[string]time.Duration{"w": 7 * 24 * time.Hour, "d": 24 * time.Hour, "h": time.Hour, "m": time.Minute}[p[2]]
			t = t.Add(time.Duration(n) * unit)
		}
		return t, 1, nil
	}
	if dateOnly.MatchString(f[0]) && len(f) > 1 && clockTime.MatchString(f[1]) {
		t, err := time.Parse("2006-01-02 15:04", f[0]+" "+f[1])
		return t, 2, err
	}
	for _, layout := range []string{"2006-01-02T15:04Z", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, strings.ToUpper(f[0])); err == nil {
			return t, 1, nil
		}
	}
	return time.Time{}, 0, fmt.Errorf("%q is not a time: write +1d2h (from start), YYYY-MM-DD HH:MM or YYYY-MM-DDTHH:MMZ, in UTC", f[0])
}

// parseScenario reads the format documented in the README ("Drills").
func parseScenario(data []byte, name string) (*scenario, error) {
	sc := &scenario{name: name}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	bad := func(n int, format string, a ...any) error {
		return fmt.Errorf("scenario %s, line %d: %s", name, n+1, fmt.Sprintf(format, a...))
	}
	var endSpec []string
	endLine := 0
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		switch f[0] {
		case "start":
			t, n, err := parseWhen(f[1:], time.Time{})
			if err != nil || n != len(f)-1 {
				return nil, bad(i, "start: %v", orExtra(err, f[1+n:]))
			}
			sc.start = t.UTC()
			continue
		case "end":
			endSpec, endLine = f[1:], i
			continue
		case "@":
		default:
			return nil, bad(i, "%q: a line is start, end, @ WHEN ACTION, or a # comment", f[0])
		}
		at, n, err := parseWhen(f[1:], sc.start)
		if err != nil {
			return nil, bad(i, "%v", err)
		}
		rest := f[1+n:]
		if len(rest) == 0 {
			return nil, bad(i, "an action is missing: mail, commands, down or up")
		}
		ev := drillEvent{at: at.UTC(), line: i + 1, action: rest[0]}
		switch ev.action {
		case "down", "up":
			if len(rest) != 1 {
				return nil, bad(i, "%s takes no arguments", ev.action)
			}
		case "mail", "commands":
			if len(rest) < 2 || len(rest) > 3 {
				return nil, bad(i, "write @ WHEN %s FROM [TO]", ev.action)
			}
			ev.who = rest[1]
			if len(rest) == 3 {
				ev.to = rest[2]
			}
			// The text: up to a line holding only ".", ".." for a line
			// starting with a dot.
			var text []string
			closed := false
			for i++; i < len(lines); i++ {
				if lines[i] == "." {
					closed = true
					break
				}
				text = append(text, strings.TrimPrefix(lines[i], "."))
			}
			if !closed {
				return nil, bad(ev.line-1, "the text of this %s has no closing line with a single \".\"", ev.action)
			}
			if ev.action == "mail" {
				k := 0
				for ; k < len(text) && text[k] != ""; k++ {
					m := headerLine.FindStringSubmatch(text[k])
					if m == nil {
						return nil, bad(ev.line+k, "mail header line %q: write Name: value, then a blank line, then the body", text[k])
					}
					ev.header = append(ev.header, [2]string{m[1], m[2]})
				}
				if k < len(text) {
					k++
				}
				text = text[k:]
			}
			ev.body = strings.Join(text, "\n") + "\n"
		default:
			return nil, bad(i, "unknown action %q: mail, commands, down or up", ev.action)
		}
		if ev.at.Before(sc.start) {
			return nil, bad(i, "this event is before start")
		}
		sc.events = append(sc.events, ev)
	}
	if sc.start.IsZero() {
		return nil, fmt.Errorf("scenario %s: no start line (start YYYY-MM-DD HH:MM)", name)
	}
	slices.SortStableFunc(sc.events, func(a, b drillEvent) int { return a.at.Compare(b.at) })
	switch {
	case endSpec != nil:
		t, n, err := parseWhen(endSpec, sc.start)
		if err != nil || n != len(endSpec) {
			return nil, bad(endLine, "end: %v", orExtra(err, endSpec[n:]))
		}
		sc.end = t.UTC()
	case len(sc.events) > 0:
		sc.end = sc.events[len(sc.events)-1].at.Add(4 * 24 * time.Hour)
	default:
		sc.end = sc.start.Add(7 * 24 * time.Hour)
	}
	if !sc.end.After(sc.start) {
		return nil, fmt.Errorf("scenario %s: end is not after start", name)
	}
	if sc.end.Sub(sc.start) > 400*24*time.Hour {
		return nil, fmt.Errorf("scenario %s: more than 400 days of virtual time", name)
	}
	return sc, nil
}

func orExtra(err error, extra []string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected %q", strings.Join(extra, " "))
}

// vclock is the drill's virtual clock.
type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *vclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// mono is the virtual monotonic clock: it moves with the virtual wall clock,
// so the fan-out's clock-jump guard sees no jump where there is none.
func (c *vclock) mono() time.Duration {
	return c.Now().Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
}

func (c *vclock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// drillRelay keeps what the daemon sends, with the virtual time of sending
// and the queue row's kind and incident.
type drillRelay struct {
	clk  *vclock
	mu   sync.Mutex
	view func(func(*bolt.Tx) error) error // the running daemon's store; nil while down
	out  []sent
}

type sent struct {
	at       time.Time
	to       []string
	data     []byte
	kind     string
	incident string
}

var msgIDHeader = regexp.MustCompile(`(?im)^Message-Id:[ \t]*<([^>\r\n]+)>`)

func (r *drillRelay) Send(_ context.Context, _ string, to []string, data []byte) error {
	s := sent{at: r.clk.Now(), to: append([]string(nil), to...), data: bytes.Clone(data)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := msgIDHeader.FindSubmatch(data); m != nil && r.view != nil {
		// The row is "sending" while the relay has it.
		r.view(func(tx *bolt.Tx) error {
			rows, _ := queue.List(tx)
			for _, row := range rows {
				if row.MessageID == string(m[1]) {
					s.kind, s.incident = row.Kind, row.Incident
				}
			}
			return nil
		})
	}
	r.out = append(r.out, s)
	return nil
}

var _ queue.Relay = (*drillRelay)(nil)

// drill runs a scenario against a daemon.
type drill struct {
	sc      *scenario
	cfg     *config.Config
	log     *slog.Logger
	clk     *vclock
	relay   *drillRelay
	d       *daemon.Daemon // nil while down
	members map[string]*keys.Key
	lists   *keys.Keyring // the list keys, to check signatures
	ring    *keys.Keyring // the members' keys, handed to the daemon
	src     []string
	ids     []workflow.ID // incidents in the order the drill saw them
	rows    []drillRow
	seen    int // relay messages already turned into rows

	// tickSpec, set by a test, runs the daemon's own cron tick on this
	// schedule (in real time) instead of the drill's minute steps.
	tickSpec string
}

// drillRow is one line of the timeline.
type drillRow struct {
	at       time.Time
	phase    string
	dir      string // in, out, or "--" for the daemon going down or up
	who      string
	copies   int
	prot     string
	subject  string
	kind     string
	incident string
	raw      [][]byte // out: each copy
	to       []string
}

// newDrill prepares the configuration: the base roster and rules, with a
// temporary data directory, a loopback listener, keys made for the drill,
// and nothing of the base's listeners, relay or templates directory.
func newDrill(base *config.Config, sc *scenario, dir string, log *slog.Logger) (*drill, error) {
	dr := &drill{sc: sc, log: log, clk: &vclock{t: sc.start}, members: map[string]*keys.Key{}}
	cfg := &config.Config{Domain: base.Domain, Holidays: base.Holidays, Lists: base.Lists, Channels: base.Channels,
		OnCall: base.OnCall, Intake: base.Intake, TemplatesDir: base.TemplatesDir, LogLevel: "debug", Source: "drill"}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.SMTP.Listen = "127.0.0.1:0"
	ko := keys.Options{Now: func() time.Time { return sc.start.Add(-time.Hour) }}
	for _, m := range base.Members {
		k, err := keys.GenerateListKey(m.Name, m.Email, ko)
		if err != nil {
			return nil, err
		}
		m.Fingerprint = k.Fingerprint()
		cfg.Members = append(cfg.Members, m)
		dr.members[m.Email] = k
		if m.Has("src") {
			dr.src = append(dr.src, m.Email)
		}
	}
	if err := cfg.Complete(); err != nil {
		return nil, err
	}
	if err := cfg.Resolve(); err != nil {
		return nil, err
	}
	dr.cfg = cfg
	dr.relay = &drillRelay{clk: dr.clk}
	var ks []*keys.Key
	for _, m := range cfg.Members {
		ks = append(ks, dr.members[m.Email])
	}
	dr.ring = keys.NewKeyring(ks...)
	return dr, nil
}

func (dr *drill) up(ctx context.Context) error {
	d := daemon.New(dr.cfg, daemon.Options{Logger: dr.log, Now: dr.clk.Now, Mono: dr.clk.mono, NoTick: dr.tickSpec == "",
		TickSpec: dr.tickSpec, Relay: dr.relay, MemberKeys: dr.ring, Concurrency: 1})
	if err := d.Start(ctx); err != nil {
		return err
	}
	dr.d = d
	dr.relay.mu.Lock()
	dr.relay.view = d.View
	dr.relay.mu.Unlock()
	dr.lists = d.ListKeys()
	return nil
}

func (dr *drill) down() error {
	if dr.d == nil {
		return nil
	}
	dr.relay.mu.Lock()
	dr.relay.view = nil
	dr.relay.mu.Unlock()
	err := dr.d.Stop(context.Background())
	dr.d = nil
	return err
}

// run plays the scenario: events at their instants, and a tick at every
// whole minute while the daemon is up, each followed by the deliveries it
// caused, before the clock moves on.
func (dr *drill) run(ctx context.Context) error {
	if err := dr.up(ctx); err != nil {
		return err
	}
	defer dr.down()
	next := 0
	for m := dr.sc.start.Truncate(time.Minute); !m.After(dr.sc.end); m = m.Add(time.Minute) {
		for next < len(dr.sc.events) && !dr.sc.events[next].at.After(m) {
			ev := dr.sc.events[next]
			next++
			dr.clk.set(ev.at)
			if err := dr.event(ctx, ev); err != nil {
				return fmt.Errorf("scenario %s, line %d (%s): %w", dr.sc.name, ev.line, ev.action, err)
			}
		}
		if dr.d == nil {
			continue
		}
		dr.clk.set(m)
		if err := dr.d.Tick(ctx, m); err != nil {
			return fmt.Errorf("tick at %s: %w", workflow.FormatInstant(m), err)
		}
		if err := dr.settle(); err != nil {
			return err
		}
	}
	return nil
}

func (dr *drill) event(ctx context.Context, ev drillEvent) error {
	switch ev.action {
	case "down":
		if dr.d == nil {
			return errors.New("the daemon is already down")
		}
		if err := dr.settle(); err != nil {
			return err
		}
		dr.rows = append(dr.rows, drillRow{at: ev.at, dir: "--", who: "daemon stopped"})
		return dr.down()
	case "up":
		if dr.d != nil {
			return errors.New("the daemon is already up")
		}
		dr.rows = append(dr.rows, drillRow{at: ev.at, dir: "--", who: "daemon started"})
		if err := dr.up(ctx); err != nil {
			return err
		}
		return dr.settle()
	}
	if dr.d == nil {
		return errors.New("the daemon is down: mail would wait at the sender; add an up event first")
	}
	var raw []byte
	var row drillRow
	from := ev.who
	switch ev.action {
	case "mail":
		to := dr.expand(ev.to, "{security}")
		subject := "(no subject)"
		var b strings.Builder
		fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, to)
		for _, h := range ev.header {
			v := dr.expand(h[1], "")
			if strings.EqualFold(h[0], "Subject") {
				subject = v
			}
			fmt.Fprintf(&b, "%s: %s\r\n", h[0], v)
		}
		mid, err := randomID()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "Message-ID: <drill.%s@example.net>\r\nDate: %s\r\n\r\n", mid, dr.clk.Now().Format(time.RFC1123Z))
		b.WriteString(strings.ReplaceAll(dr.expand(ev.body, ""), "\n", "\r\n"))
		raw = []byte(b.String())
		row = drillRow{dir: "in", who: from, prot: "plain", subject: subject, to: []string{to}}
	case "commands":
		addr, k, err := dr.member(ev.who)
		if err != nil {
			return err
		}
		from = addr
		to := dr.expand(ev.to, "{thread}")
		text := dr.expand(ev.body, "")
		if raw, err = dr.signed(addr, to, text, k); err != nil {
			return err
		}
		var cmds []string
		for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
			if strings.HasPrefix(l, "/") {
				cmds = append(cmds, strings.TrimSpace(l))
			}
		}
		summary := strings.Join(cmds, "  ")
		if len(summary) > 100 {
			summary = summary[:99] + "…"
		}
		row = drillRow{dir: "in", who: addr, prot: "signed", subject: summary, to: []string{to}}
	}
	if err := dr.settle(); err != nil {
		return err
	}
	known := len(dr.ids)
	if err := daemon.Submit(dr.d.Addr().String(), from, row.to, raw); err != nil {
		return fmt.Errorf("the daemon refused the message: %w", err)
	}
	// The incident it went to: a new one, or the thread it names.
	if err := dr.learnIncidents(); err != nil {
		return err
	}
	row.at, row.copies = ev.at, 1
	row.incident = string(dr.incidentFor(row.to[0]))
	if len(dr.ids) > known {
		row.incident = string(dr.ids[len(dr.ids)-1])
	}
	if row.incident != "" {
		dr.d.View(func(tx *bolt.Tx) error {
			if inc, err := incidentdb.Get(tx, workflow.ID(row.incident)); err == nil {
				row.phase = inc.Phase.String()
			}
			return nil
		})
	}
	dr.rows = append(dr.rows, row)
	return dr.settle()
}

// learnIncidents records incident IDs in the order they appear.
func (dr *drill) learnIncidents() error {
	return dr.d.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			return err
		}
		for _, inc := range incs {
			if !slices.Contains(dr.ids, inc.ID) {
				dr.ids = append(dr.ids, inc.ID)
			}
		}
		return nil
	})
}

// incidentFor is the incident a recipient sub-address names.
func (dr *drill) incidentFor(rcpt string) workflow.ID {
	local, _, _ := strings.Cut(rcpt, "@")
	if _, detail, ok := strings.Cut(local, "+"); ok {
		if id, ok := workflow.ParseID(detail); ok {
			return id
		}
	}
	return ""
}

func (dr *drill) securityList() lists.List {
	l := dr.cfg.Lists["security"]
	return lists.List{Name: lists.Security, Address: l.Address}
}

var placeholder = regexp.MustCompile(`\{(id|thread|src|date:\+)([0-9]*[wdhm]?[0-9wdhm]*)\}|\{(security|domain)\}`)

// expand replaces the placeholders of the README: {id}, {idN}, {thread},
// {threadN}, {srcN}, {security}, {domain}, {date:+Nd}; s empty means def.
func (dr *drill) expand(s, def string) string {
	if s == "" {
		s = def
	}
	return placeholder.ReplaceAllStringFunc(s, func(p string) string {
		m := placeholder.FindStringSubmatch(p)
		switch {
		case m[3] == "security":
			return dr.securityList().Address
		case m[3] == "domain":
			return dr.cfg.Domain
		case m[1] == "date:+":
			t, _, err := parseWhen([]string{"+" + m[2]}, dr.sc.start)
			if err != nil {
				return p
			}
			return t.Format(time.DateOnly)
		case m[1] == "src":
			n, err := strconv.Atoi(m[2])
			if err != nil || n < 1 || n > len(dr.src) {
				return p
			}
			return dr.src[n-1]
		}
		// id, thread: the latest incident, or the N-th.
		if len(dr.ids) == 0 {
			return p
		}
		id := dr.ids[len(dr.ids)-1]
		if m[2] != "" {
			n, err := strconv.Atoi(m[2])
			if err != nil || n < 1 || n > len(dr.ids) {
				return p
			}
			id = dr.ids[n-1]
		}
		if m[1] == "thread" {
			return dr.securityList().SubAddress(string(id))
		}
		return string(id)
	})
}

// member resolves who signs: an address, a local part, or srcN.
func (dr *drill) member(who string) (string, *keys.Key, error) {
	who = strings.ToLower(dr.expand(who, ""))
	if strings.HasPrefix(who, "src") {
		if n, err := strconv.Atoi(who[3:]); err == nil && n >= 1 && n <= len(dr.src) {
			who = dr.src[n-1]
		}
	}
	for _, m := range dr.cfg.Members {
		local, _, _ := strings.Cut(m.Email, "@")
		if m.Email == who || local == who {
			return m.Email, dr.members[m.Email], nil
		}
	}
	return "", nil, fmt.Errorf("%q is no member of the configuration (use an address, a local part, or src1, src2, …)", who)
}

// signed builds a PGP/MIME signed message from a member, at the virtual time.
func (dr *drill) signed(from, to, text string, k *keys.Key) ([]byte, error) {
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	io.WriteString(w, strings.ReplaceAll(text, "\n", "\r\n"))
	w.Close()
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp.String()
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	subject := "Commands"
	if id := dr.incidentFor(to); id != "" {
		subject = "Re: [" + string(id) + "] commands"
	}
	h.SetSubject(subject)
	h.SetDate(dr.clk.Now())
	mid, err := randomID()
	if err != nil {
		return nil, err
	}
	h.SetMessageID("drill." + mid + "@" + dr.cfg.Domain)
	return keys.Sign(h, []byte(inner), k, keys.Options{Now: dr.clk.Now})
}

func randomID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// settle waits until the queue holds nothing due at the virtual time, then
// turns what the relay got into rows.
func (dr *drill) settle() error {
	if dr.d == nil {
		return nil
	}
	now := dr.clk.Now()
	deadline := time.Now().Add(time.Minute)
	for {
		pending := false
		err := dr.d.View(func(tx *bolt.Tx) error {
			rows, err := queue.List(tx)
			for _, r := range rows {
				if r.State == queue.StateSending || (r.State == queue.StateQueued && !r.NextAttempt.After(now)) {
					pending = true
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the delivery queue did not drain within a minute")
		}
		dr.d.Kick()
		time.Sleep(time.Millisecond)
	}
	return dr.collect()
}

// collect turns new relay messages into timeline rows: copies of one message
// sent together make one row.
func (dr *drill) collect() error {
	dr.relay.mu.Lock()
	out := dr.relay.out[dr.seen:]
	dr.seen = len(dr.relay.out)
	dr.relay.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if err := dr.learnIncidents(); err != nil {
		return err
	}
	phases := map[string]string{}
	dr.d.View(func(tx *bolt.Tx) error {
		for _, id := range dr.ids {
			if inc, err := incidentdb.Get(tx, id); err == nil {
				phases[string(id)] = inc.Phase.String()
			}
		}
		return nil
	})
	for _, s := range out {
		subject, prot := dr.open(s)
		if subject == "" {
			subject = "(" + s.kind + ")"
		}
		if n := len(dr.rows); n > 0 {
			last := &dr.rows[n-1]
			if last.dir == "out" && last.at.Equal(s.at) && last.kind == s.kind && last.subject == subject && last.prot == prot {
				last.copies++
				last.to = append(last.to, s.to...)
				last.raw = append(last.raw, s.data)
				continue
			}
		}
		inc := s.incident
		if _, ok := workflow.ParseID(inc); !ok {
			inc = ""
			if id, ok := workflow.SubjectTag(subject); ok {
				inc = string(id) // receipts and answers name it in their subject
			}
		}
		dr.rows = append(dr.rows, drillRow{at: s.at, dir: "out", copies: 1, prot: prot, subject: subject, kind: s.kind,
			incident: inc, phase: phases[inc], to: append([]string(nil), s.to...), raw: [][]byte{s.data}})
	}
	return nil
}

// open reads a sent message's real subject, from inside the encryption when
// one of the drill's member keys can decrypt it, and how it was protected.
func (dr *drill) open(s sent) (subject, prot string) {
	o := keys.Options{Now: dr.clk.Now}
	if keys.IsEncrypted(s.data) {
		for _, rcpt := range s.to {
			k := dr.members[strings.ToLower(rcpt)]
			if k == nil {
				continue
			}
			dec, err := keys.Decrypt(s.data, k, dr.lists, o)
			if err != nil {
				continue
			}
			prot = "encrypted"
			if dec.Signature != nil {
				prot = "encrypted, signed"
			}
			return headerSubject(dec.Inner), prot
		}
		return "", "encrypted"
	}
	prot = "plain"
	if bytes.Contains(s.data, []byte("multipart/signed")) {
		prot = "signed (bad)"
		if _, err := keys.Verify(s.data, dr.lists, o); err == nil {
			prot = "signed"
		}
	}
	return headerSubject(s.data), prot
}

func headerSubject(b []byte) string {
	// An unknown charset is an error with a usable entity: keep it.
	e, _ := gomessage.Read(bufio.NewReader(bytes.NewReader(b)))
	if e == nil {
		return ""
	}
	h := mail.Header{Header: e.Header}
	s, err := h.Subject()
	if err != nil {
		return h.Get("Subject")
	}
	return s
}

// label says who received a row's copies: a list or role, or the members.
func (dr *drill) label(r drillRow) string {
	if r.dir != "out" {
		return r.who
	}
	var parts []string
	var src, other []string
	dist := 0
	for _, a := range r.to {
		a = strings.ToLower(a)
		m, ok := dr.cfg.Member(a)
		switch {
		case ok && m.Has("src"):
			src = append(src, a)
		case ok && m.Has("distributor"):
			dist++
		case slices.ContainsFunc(dr.cfg.Channels, func(c config.Channel) bool { return strings.EqualFold(c.Address, a) }):
			other = append(other, "channel "+a)
		case strings.HasPrefix(r.kind, "reporter-") || r.kind == "ack":
			other = append(other, "reporter")
		case strings.HasSuffix(r.kind, "-copy"):
			other = append(other, "fix team "+a)
		default:
			other = append(other, a)
		}
	}
	switch {
	case len(src) > 0 && len(src) == len(dr.src):
		parts = append(parts, "SRC")
	case len(src) > 0:
		parts = append(parts, "SRC: "+strings.Join(src, ", "))
	}
	if dist > 0 {
		parts = append(parts, "distributors")
	}
	parts = append(parts, other...)
	return strings.Join(parts, " + ")
}

// print writes the timeline.
func (dr *drill) print(w io.Writer) error {
	fmt.Fprintf(w, "embargo drill: scenario %s, %s to %s, virtual time\n", dr.sc.name, workflow.FormatInstant(dr.sc.start), workflow.FormatInstant(dr.sc.end))
	rot := "none"
	if len(dr.cfg.OnCall.Rotation) > 0 {
		rot = strings.Join(dr.cfg.OnCall.Rotation, ", ")
	}
	hol := "none"
	if len(dr.cfg.Holidays) > 0 {
		var hs []string
		for _, h := range dr.cfg.Holidays {
			hs = append(hs, h.String())
		}
		hol = strings.Join(hs, ", ")
	}
	fmt.Fprintf(w, "domain %s; SRC %s; on-call rotation %s; holidays %s\n\n", dr.cfg.Domain, strings.Join(dr.src, ", "), rot, hol)
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (UTC)\tINCIDENT\tPHASE\tDIR\tFROM / TO\tN\tPROTECTION\tSUBJECT")
	in, out, copies := 0, 0, 0
	for _, r := range dr.rows {
		if r.dir == "--" {
			fmt.Fprintf(tw, "%s\t\t\t--\t%s\t\t\t\n", r.at.Format("2006-01-02 15:04 Mon"), r.who)
			continue
		}
		inc, phase := r.incident, r.phase
		if r.dir == "in" {
			in++
		} else {
			out++
			copies += r.copies
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.at.Format("2006-01-02 15:04 Mon"), dash(inc), dash(phase), r.dir, dr.label(r), r.copies, r.prot, r.subject)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(table.String(), "\n") {
		if _, err := io.WriteString(w, strings.TrimRight(l, " \n")+strings.Repeat("\n", strings.Count(l, "\n"))); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "\n%d messages in, %d out (%d copies). Every message went through the daemon's SMTP intake, store and\n"+
		"delivery queue; reminders, notices and the release came from its scheduler's tick. Member keys were made for the drill.\n",
		in, out, copies)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
