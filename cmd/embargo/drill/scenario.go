package drill

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A scenario is a list of timed events on a virtual clock.
type scenario struct {
	name       string
	start, end time.Time
	events     []event
}

// event is one line "@ WHEN ACTION ARGS" and its text.
type event struct {
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
		ev := event{at: at.UTC(), line: i + 1, action: rest[0]}
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
	slices.SortStableFunc(sc.events, func(a, b event) int { return a.at.Compare(b.at) })
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
