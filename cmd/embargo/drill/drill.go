// Package drill rehearses an incident: it runs the real daemon in a
// temporary directory on a virtual clock, plays a scenario of timed mails and
// signed commands through SMTP, lets the scheduler tick every virtual minute,
// and prints the timeline of every message in and out. Member keys are made
// for the drill and handed to the daemon in-process; nothing leaves the
// machine (outbound mail stays in a recording relay).
package drill

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// builtinScenario is the scenario a drill runs without one of its own.
//
//go:embed drill.scenario
var builtinScenario []byte

// builtinRoster is the configuration of a drill without one of its own.
const builtinRoster = `domain = "example.test"

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

// Options configure a drill.
type Options struct {
	// Scenario is the scenario's text (the format is in the README,
	// "Drills"), Name its name in messages. Empty: the built-in scenario.
	Scenario []byte
	Name     string
	// Config gives the lists, members, holidays, channels and on-call
	// rotation. Nil: the built-in roster (alice and bob on the committee, two
	// distributors, one channel).
	Config *config.Config
	// Logger receives the daemon's log. Default: discard.
	Logger *slog.Logger
	// Check holds the timeline against the process's invariants
	// (workflow.CheckTimeline) and writes what it found instead of the
	// timeline: each broken rule, and then Run returns ErrViolations; or a
	// one-line summary.
	Check bool
	// EveryMinute ticks the scheduler at every virtual minute, as the
	// daemon's own does, instead of only at the minutes at which something
	// may be due: slower, with the same timeline.
	EveryMinute bool
}

// Run plays a scenario through the real daemon in a temporary directory and
// writes the timeline to w.
func Run(ctx context.Context, o Options, w io.Writer) error {
	if len(o.Scenario) == 0 {
		o.Scenario, o.Name = builtinScenario, "built-in"
	}
	sc, err := parseScenario(o.Scenario, o.Name)
	if err != nil {
		return err
	}
	if o.Config == nil {
		if o.Config, err = config.Parse([]byte(builtinRoster), "built-in drill roster"); err != nil {
			return err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "embargo-drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dr, err := newDrill(o.Config, sc, dir, o.Logger)
	if err != nil {
		return err
	}
	dr.check, dr.everyMinute = o.Check, o.EveryMinute
	if err := dr.run(ctx); err != nil {
		return err
	}
	if o.Check {
		return dr.report(w)
	}
	return dr.print(w)
}

// drill runs a scenario against a daemon.
type drill struct {
	sc      *scenario
	cfg     *config.Config
	log     *slog.Logger
	clk     *vclock
	relay   *recorder
	d       *daemon.Daemon // nil while down
	members map[string]*keys.Key
	lists   *keys.Keyring // the list keys, to check signatures
	ring    *keys.Keyring // the members' keys, handed to the daemon
	src     []string
	ids     []workflow.ID // incidents in the order the drill saw them
	rows    []row
	seen    int // relay messages already turned into rows

	// tickSpec, set by a test, runs the daemon's own cron tick on this
	// schedule (in real time) instead of the drill's minute steps.
	tickSpec string
	// everyMinute ticks at every virtual minute (Options.EveryMinute);
	// ticks counts the ticks run.
	everyMinute bool
	ticks       int

	// --check (check.go): the records as last stored, and the states and
	// ticks between the rows. doctor, set by a test, edits the timeline
	// before it is checked.
	check  bool
	stored map[workflow.ID][]byte
	marks  []mark
	doctor func([]workflow.TimelineEvent) []workflow.TimelineEvent
}

// row is one line of the timeline.
type row struct {
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
	dr := &drill{sc: sc, log: log, clk: &vclock{t: sc.start}, members: map[string]*keys.Key{}, stored: map[workflow.ID][]byte{}}
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
	dr.relay = &recorder{clk: dr.clk}
	var ks []*keys.Key
	for _, m := range cfg.Members {
		ks = append(ks, dr.members[m.Email])
	}
	dr.ring = keys.NewKeyring(ks...)
	return dr, nil
}

func (dr *drill) up(ctx context.Context) error {
	d := daemon.New(dr.cfg, daemon.Options{Logger: dr.log, Now: dr.clk.Now, Mono: dr.clk.mono, NoTick: dr.tickSpec == "",
		TickSpec: dr.tickSpec, Relay: dr.relay, MemberKeys: dr.ring, Concurrency: 1, Throwaway: true})
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

// run plays the scenario: events at their instants, and the scheduler's
// tick at the minutes at which something may be due while the daemon is up
// (every minute with everyMinute; skip.go), each followed by the deliveries
// it caused, before the clock moves on.
func (dr *drill) run(ctx context.Context) error {
	if err := dr.up(ctx); err != nil {
		return err
	}
	defer dr.down()
	next := 0
	for m := dr.sc.start.Truncate(time.Minute); !m.After(dr.sc.end); {
		for next < len(dr.sc.events) && !dr.sc.events[next].at.After(m) {
			ev := dr.sc.events[next]
			next++
			dr.clk.set(ev.at)
			if err := dr.play(ctx, ev); err != nil {
				return fmt.Errorf("scenario %s, line %d (%s): %w", dr.sc.name, ev.line, ev.action, err)
			}
			if err := dr.snapshot(ev.at); err != nil {
				return err
			}
		}
		if dr.d == nil {
			// Down: nothing happens until the next event.
			m = m.Add(time.Minute)
			if next < len(dr.sc.events) && !dr.everyMinute && ceilMinute(dr.sc.events[next].at).After(m) {
				m = ceilMinute(dr.sc.events[next].at)
			}
			continue
		}
		dr.clk.set(m)
		if err := dr.d.Tick(ctx, m); err != nil {
			return fmt.Errorf("tick at %s: %w", workflow.FormatInstant(m), err)
		}
		dr.ticks++
		if err := dr.settle(); err != nil {
			return err
		}
		if err := dr.snapshot(m); err != nil {
			return err
		}
		dr.tickMark(m)
		to, err := dr.nextTick(m, next)
		if err != nil {
			return err
		}
		for s := m.Add(time.Minute); s.Before(to); s = s.Add(time.Minute) {
			dr.tickMark(s) // a minute skipped: its tick would have found nothing due
		}
		m = to
	}
	return nil
}

func (dr *drill) play(ctx context.Context, ev event) error {
	switch ev.action {
	case "down":
		if dr.d == nil {
			return errors.New("the daemon is already down")
		}
		if err := dr.settle(); err != nil {
			return err
		}
		dr.rows = append(dr.rows, row{at: ev.at, dir: "--", who: "daemon stopped"})
		return dr.down()
	case "up":
		if dr.d != nil {
			return errors.New("the daemon is already up")
		}
		dr.rows = append(dr.rows, row{at: ev.at, dir: "--", who: "daemon started"})
		if err := dr.up(ctx); err != nil {
			return err
		}
		return dr.settle()
	}
	if dr.d == nil {
		return errors.New("the daemon is down: mail would wait at the sender; add an up event first")
	}
	var raw []byte
	var in row
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
		in = row{dir: "in", who: from, prot: "plain", subject: subject, to: []string{to}}
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
		in = row{dir: "in", who: addr, prot: "signed", subject: summary, to: []string{to}}
	}
	if err := dr.settle(); err != nil {
		return err
	}
	known := len(dr.ids)
	if err := daemon.Submit(dr.d.Addr().String(), from, in.to, raw); err != nil {
		return fmt.Errorf("the daemon refused the message: %w", err)
	}
	// The incident it went to: a new one, or the thread it names.
	if err := dr.learnIncidents(); err != nil {
		return err
	}
	in.at, in.copies = ev.at, 1
	in.incident = string(dr.incidentFor(in.to[0]))
	if len(dr.ids) > known {
		in.incident = string(dr.ids[len(dr.ids)-1])
	}
	if in.incident != "" {
		dr.d.View(func(tx *bolt.Tx) error {
			if inc, err := incidentdb.Get(tx, workflow.ID(in.incident)); err == nil {
				in.phase = inc.Phase.String()
			}
			return nil
		})
	}
	dr.rows = append(dr.rows, in)
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
