package main

import (
	"context"
	"os"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/drill"
)

const drillHelp = `Usage: embargo drill [--scenario FILE] [--config FILE] [--check] [--every-minute] [--verbose]

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

With --check the drill holds its timeline against the process's invariants
(reminders once, on time, to the right member and never once moot; the
7-day notice; T on a slot; nothing public before T; the final notice in its
window; every message in its incident's history; ... listed in the README,
"Drills") instead of printing it. It prints each broken rule with the
incident, the instant and what happened, and exits 1; or, when none is
broken, one line: incidents, messages, invariants checked.

The scheduler ticks at the virtual minutes at which something may fall due
(a reminder, T, a digest, a vote's deadline, a delivery) and at each event;
the idle minutes between are skipped, with the same timeline. With
--every-minute it ticks at every virtual minute, as the daemon does: slower.

Examples:
  embargo drill
  embargo drill --scenario tabletop.txt --config /etc/embargo/embargo.toml
  embargo drill --scenario our-edge-case.txt --check

Flags:
`

// runDrill is drill.Run; a test looks at the options the flags made.
var runDrill = drill.Run

func cmdDrill(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("drill", drillHelp, &cf, false)
	scenario := fs.String("scenario", "", "scenario file; default: the built-in scenario")
	verbose := fs.Bool("verbose", false, "show the daemon's log on stderr")
	check := fs.Bool("check", false, "check the timeline against the process's invariants; exit 1 naming each broken rule")
	everyMinute := fs.Bool("every-minute", false, "tick at every virtual minute instead of skipping the idle ones (slower, same timeline)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("drill takes no arguments; see embargo drill --help")
	}
	o := drill.Options{Check: *check, EveryMinute: *everyMinute}
	if *scenario != "" {
		var err error
		if o.Scenario, err = os.ReadFile(*scenario); err != nil {
			return err
		}
		o.Name = *scenario
	}
	if cf.config != "" {
		var err error
		if o.Config, err = config.Load(cf.config); err != nil {
			return err
		}
	}
	if *verbose {
		o.Logger = daemon.NewLogger("debug", s.err)
	}
	return runDrill(context.Background(), o, s.out)
}
