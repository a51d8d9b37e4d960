package workflow

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// gen makes one random case: one or two reports, worked by the two SRC
// members with commands that mostly follow the process (so that cases reach
// notices, releases and retrospectives) and often do not, at random instants,
// with downtime, restarts and clock jumps in between.
type gen struct {
	r        *rand.Rand
	c        *pcase
	now      time.Time
	incs     int
	progress []int // per incident: the next step of the usual path
	maxT     time.Time
	dates    []time.Time // the instants /disclose asked for
	minute   bool
}

var propVectors = []string{
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", // critical
	"CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N", // high
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N", // medium
	"CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", // low
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", // none
}

const propAdvisory = "/set summary Heap overflow in the parser\n/set actor A remote attacker\n/set impact run code as the daemon\n" +
	"/set affected parser v1.0 - v1.4\n/set fixed parser v1.5\n/set mitigation Disable the parser.\n"

func genCase(seed uint64) pcase {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(150*24*60)) * time.Minute)
	c := pcase{Seed: seed, Start: start, Minute: r.IntN(25) == 0}
	for _, h := range []string{"2026-12-24", "2026-12-25", "2026-12-31", "2027-01-01"} {
		if r.IntN(2) == 0 {
			t, _ := time.Parse(time.DateOnly, h)
			c.Holidays = append(c.Holidays, t)
		}
	}
	for i := r.IntN(4); i > 0; i-- {
		c.Holidays = append(c.Holidays, start.Truncate(24*time.Hour).AddDate(0, 0, r.IntN(50)))
	}
	g := &gen{r: r, c: &c, now: start, minute: c.Minute}
	g.report()
	n := 4 + r.IntN(24)
	if c.Minute {
		n = 3 + r.IntN(10)
	}
	for i := 0; i < n; i++ {
		g.now = g.now.Add(g.gap())
		g.event()
	}
	// Often the daemon is down across a T: releases that fell due while
	// nothing ticked, and what the daemon does about them.
	if len(g.dates) > 0 && r.IntN(3) == 0 {
		t := g.dates[r.IntN(len(g.dates))]
		down := t.Add(-time.Duration(1+r.IntN(48*60)) * time.Minute).Truncate(time.Minute)
		if down.After(g.now) {
			g.now = down
			g.add(pstep{Kind: "down"})
			g.now = t.Add(time.Duration(1+r.IntN(72*60)) * time.Minute).Truncate(time.Minute)
			g.add(pstep{Kind: "up"})
		}
	}
	// Sometimes the incident is closed before a T and reopened after it.
	if len(g.dates) > 0 && r.IntN(5) == 0 {
		t := g.dates[r.IntN(len(g.dates))]
		if at := t.Add(-time.Duration(1+r.IntN(72*60)) * time.Minute).Truncate(time.Minute); at.After(g.now) {
			g.now = at
			g.add(pstep{Kind: "commands", Inc: 1, Who: 1 + r.IntN(2), Text: "/close not-a-vulnerability\n"})
			g.now = t.Add(time.Duration(1+r.IntN(72*60)) * time.Minute).Truncate(time.Minute)
			g.add(pstep{Kind: "commands", Inc: 1, Who: 1 + r.IntN(2), Text: "/reopen\n"})
		}
	}
	// Then on to T and past it, a few days at a time: the retrospective,
	// late commands.
	for g.now.Before(g.maxT) && !c.Minute && r.IntN(5) > 0 {
		g.now = g.now.Add(time.Duration(12*60+r.IntN(4*24*60)) * time.Minute)
		g.event()
	}
	end := g.now.Add(4 * 24 * time.Hour)
	if t := g.maxT.Add(4 * 24 * time.Hour); t.After(end) {
		end = t
	}
	if c.Minute && end.After(g.now.Add(24*time.Hour)) {
		end = g.now.Add(24 * time.Hour) // every minute is dear: stop soon after the last event
	}
	c.End = end.Truncate(time.Minute)
	return c
}

// event adds one random event at g.now.
func (g *gen) event() {
	r := g.r
	switch k := r.IntN(100); {
	case k < 66:
		g.commands()
	case k < 72:
		g.add(pstep{Kind: "mail", Inc: 1 + r.IntN(g.incs)})
	case k < 76 && g.incs == 1:
		g.report()
	case k < 84:
		g.add(pstep{Kind: "down"})
		g.now = g.now.Add(g.gap() + 10*time.Minute)
		g.add(pstep{Kind: "up"})
	case k < 88:
		g.add(pstep{Kind: "down"})
		g.add(pstep{Kind: "up"}) // a restart
	case k < 93:
		d := time.Duration(11+r.IntN(48*60)) * time.Minute
		if r.IntN(3) == 0 {
			d = -time.Duration(1+r.IntN(180)) * time.Minute
		}
		g.add(pstep{Kind: "jump", Jump: d})
		if d > 0 {
			g.now = g.now.Add(d)
		}
	default:
		texts := []string{"/oncall me", "/oncall {src1}", "/oncall {src2}", "/oncall ack", "/oncall"}
		g.add(pstep{Kind: "oncall", Who: 1 + r.IntN(2), Text: texts[r.IntN(len(texts))] + "\n"})
	}
}

func (g *gen) add(st pstep) {
	st.At = g.now
	g.c.Steps = append(g.c.Steps, st)
}

func (g *gen) report() {
	g.add(pstep{Kind: "report"})
	g.incs++
	g.progress = append(g.progress, 0)
}

// gap is the time to the next event: often minutes, sometimes hours or days.
func (g *gen) gap() time.Duration {
	m := time.Minute
	k := g.r.IntN(20)
	if g.minute && k >= 13 {
		k = 13 + g.r.IntN(4)*g.r.IntN(2) // mostly hours: the case spans two or three days
	}
	switch {
	case k < 2:
		return 0
	case k < 8:
		return time.Duration(1+g.r.IntN(59)) * m
	case k < 13:
		return time.Duration(60+g.r.IntN(11*60)) * m
	case k < 17:
		return time.Duration(20*60+g.r.IntN(8*60)) * m
	default:
		return time.Duration(2*24*60+g.r.IntN(5*24*60)) * m
	}
}

// commands: one signed message of one to five commands, most of them the
// incident's next step on the usual path, some anything at all.
func (g *gen) commands() {
	inc := 1 + g.r.IntN(g.incs)
	var lines []string
	for n := 1 + g.r.IntN(5); n > 0; n-- {
		switch k := g.r.IntN(100); {
		case k < 76:
			if l := g.next(inc); l != "" {
				lines = append(lines, l)
			}
		case k < 80:
			g.progress[inc-1]++ // a step the committee skips
		default:
			lines = append(lines, g.any(inc))
		}
	}
	if len(lines) == 0 {
		lines = append(lines, g.any(inc))
	}
	g.add(pstep{Kind: "commands", Inc: inc, Who: 1 + g.r.IntN(2), Text: strings.Join(lines, "\n") + "\n"})
}

// next is the incident's next step on the usual path, or, past its end, a
// later step again.
func (g *gen) next(inc int) string {
	path := []func() string{
		func() string { return "/accept" },
		func() string { return []string{"/lead me", "/lead {src2}", "/fixteam add dev@{domain}"}[g.r.IntN(3)] },
		func() string { return "/fixteam add dev@{domain}" },
		func() string { return "/cvss " + propVectors[g.r.IntN(3)] },
		func() string { return fmt.Sprintf("/cve CVE-2026-%d", 40000+g.r.IntN(1000)) },
		func() string { return strings.TrimSuffix(propAdvisory, "\n") },
		func() string { return "/fixed" },
		func() string { return g.disclose(false) },
		func() string { return "/notify" },
		func() string { return "/approve" },
		func() string { return "/status" },
		func() string { return "/retro" },
	}
	p := g.progress[inc-1]
	g.progress[inc-1]++
	if p >= len(path) {
		// Past the end (a message of several commands applies all or none,
		// so steps get lost): try one of the later steps again.
		p = len(path) - 1 - g.r.IntN(7)
	}
	return path[p]()
}

// any is a command from the whole table, arguments and all.
func (g *gen) any(inc int) string {
	menu := []func() string{
		func() string { return "/accept" },
		func() string { return []string{"/lead me", "/lead {src1}", "/lead {src2}"}[g.r.IntN(3)] },
		func() string {
			return []string{"/fixteam add dev@{domain}", "/fixteam remove dev@{domain}"}[g.r.IntN(2)]
		},
		func() string { return "/cvss " + propVectors[g.r.IntN(len(propVectors))] },
		func() string {
			return "/severity " + []string{"none", "low", "medium", "high", "critical", "auto"}[g.r.IntN(6)]
		},
		func() string { return fmt.Sprintf("/cve CVE-2026-%d", 40000+g.r.IntN(1000)) },
		func() string { return strings.TrimSuffix(propAdvisory, "\n") },
		func() string { return "/set summary Another summary" },
		func() string { return "/fixed" },
		func() string { return g.disclose(true) },
		func() string { return g.disclose(true) },
		func() string { return "/notify" },
		func() string { return []string{"/approve", "/approve withdraw"}[g.r.IntN(2)] },
		func() string { return "/public" },
		func() string { return "/embargo-break" },
		func() string { return "/defer" },
		func() string { return "/retro" },
		func() string { return []string{"/close", "/close fixed", "/close not-a-vulnerability"}[g.r.IntN(3)] },
		func() string { return "/reopen" },
		func() string { return "/reject not-a-vulnerability" },
		func() string { return "/reply Thanks, we are on it." },
		func() string { return "/status" },
		func() string { return "/track " + []string{"public", "private", "urgent"}[g.r.IntN(3)] },
		func() string {
			if inc > 1 {
				return "/duplicate {id1}"
			}
			return "/help"
		},
	}
	return menu[g.r.IntN(len(menu))]()
}

// disclose picks a date: usually 1 to 5 weeks ahead, as a date or an
// instant; sometimes now, in the past, or an emergency.
func (g *gen) disclose(wild bool) string {
	if wild && g.r.IntN(6) == 0 {
		return "/disclose now"
	}
	days := 10 + g.r.IntN(30)
	if g.minute {
		days = 1 + g.r.IntN(3)
	}
	if wild && g.r.IntN(4) == 0 {
		days = g.r.IntN(10) - 2
	}
	t := g.now.AddDate(0, 0, days)
	arg := t.Format(time.DateOnly)
	if g.r.IntN(3) == 0 {
		arg = t.Add(time.Duration(g.r.IntN(24*60)-12*60) * time.Minute).Format("2006-01-02T15:04Z")
	}
	g.dates = append(g.dates, NextSlot(t, nil))
	if t.After(g.maxT) {
		g.maxT = t.AddDate(0, 0, 5) // a date snaps forward to a slot, at most a few days
	}
	if g.r.IntN(6) == 0 || (g.minute && g.r.IntN(2) == 0) {
		return "/disclose " + arg + " emergency"
	}
	return "/disclose " + arg
}
