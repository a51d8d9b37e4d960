package workflow

import (
	"fmt"
	"strings"
	"time"
)

// shrink reduces a case that breaks rule to a short one that still does
// (delta debugging): drop runs of steps, halving the run, then single command
// lines, then move each step to a simpler instant (the previous step's, the
// whole hour, 09:00), drop holidays, and stop the clock soon after the
// violation. It returns the case and its first violation of rule.
func shrink(c pcase, rule string) (pcase, Violation) {
	fails := func(c pcase) (Violation, bool) {
		vs, _, err := runCase(c)
		if err != nil {
			return Violation{}, false
		}
		for _, v := range vs {
			if v.Rule == rule {
				return v, true
			}
		}
		return Violation{}, false
	}
	best := c.clone()
	v, ok := fails(best)
	if !ok {
		return c, Violation{Rule: rule, Detail: "(does not reproduce)"}
	}
	try := func(cand pcase) bool {
		if w, ok := fails(cand); ok {
			best, v = cand, w
			return true
		}
		return false
	}
	if best.Minute {
		cand := best.clone()
		cand.Minute = false
		try(cand)
	}
	for changed := true; changed; {
		changed = false
		for n := len(best.Steps) / 2; n >= 1; n /= 2 {
			for i := 0; i+n <= len(best.Steps); {
				cand := best.clone()
				cand.Steps = append(cand.Steps[:i], cand.Steps[i+n:]...)
				if try(cand) {
					changed = true
				} else {
					i += n
				}
			}
		}
		for i := range best.Steps {
			for {
				lines := strings.Split(strings.TrimSuffix(best.Steps[i].Text, "\n"), "\n")
				if best.Steps[i].Kind != "commands" || len(lines) < 2 {
					break
				}
				dropped := false
				for j := range lines {
					cand := best.clone()
					cand.Steps[i].Text = strings.Join(append(append([]string(nil), lines[:j]...), lines[j+1:]...), "\n") + "\n"
					if try(cand) {
						dropped, changed = true, true
						break
					}
				}
				if !dropped {
					break
				}
			}
		}
		for i := 1; i < len(best.Steps); i++ {
			if simplerInstant(&best, i, try) {
				changed = true
			}
		}
	}
	for i := 0; i < len(best.Holidays); {
		cand := best.clone()
		cand.Holidays = append(cand.Holidays[:i], cand.Holidays[i+1:]...)
		if !try(cand) {
			i++
		}
	}
	if end := v.At.Add(time.Hour).Truncate(time.Hour); end.Before(best.End) {
		cand := best.clone()
		cand.End = end
		try(cand)
	}
	return best, v
}

// simplerInstant tries to move step i to the previous step's instant, a
// whole hour, or 09:00 of its day, never before the previous step.
func simplerInstant(best *pcase, i int, try func(pcase) bool) bool {
	at, prev := best.Steps[i].At, best.Steps[i-1].At
	if best.Steps[i-1].Kind == "jump" && best.Steps[i-1].Jump > 0 {
		prev = prev.Add(best.Steps[i-1].Jump)
	}
	day := at.Truncate(24 * time.Hour)
	for _, t := range []time.Time{prev, day.Add(9 * time.Hour), at.Truncate(time.Hour)} {
		if !t.Before(at) || t.Before(prev) {
			continue
		}
		cand := best.clone()
		cand.Steps[i].At = t
		if try(cand) {
			return true
		}
	}
	return false
}

// scenarioText writes a case as a drill scenario (README, "Drills"), with
// what the drill needs to play it in its comments.
func scenarioText(c pcase, v Violation) string {
	var b strings.Builder
	f := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }
	name := fmt.Sprintf("case %d", c.Seed)
	if c.Name != "" {
		name = "found case " + c.Name
	}
	if v.Rule != "" {
		fmt.Fprintf(&b, "# The property test's %s, shrunk. It breaks %s:\n#   %s\n", name, v.Rule, v)
	} else {
		fmt.Fprintf(&b, "# The property test's %s. It keeps every invariant.\n", name)
	}
	b.WriteString("# The drill's own committee plays it (src1 alice, src2 bob, on-call rotation alice, bob)")
	if len(c.Holidays) > 0 {
		var hs []string
		for _, h := range c.Holidays {
			hs = append(hs, `"`+h.Format(time.DateOnly)+`"`)
		}
		b.WriteString(", with a --config\n# that adds holidays = [" + strings.Join(hs, ", ") + "].\n")
	} else {
		b.WriteString(".\n")
	}
	fmt.Fprintf(&b, "start %s\nend   %s\n", f(c.Start), f(c.End))
	n := 0
	for _, st := range c.Steps {
		switch st.Kind {
		case "report":
			n++
			fmt.Fprintf(&b, "@ %s mail %s\nSubject: report %d\n\nA report.\n.\n", f(st.At), propReporter, n)
		case "mail":
			fmt.Fprintf(&b, "@ %s mail %s {thread%d}\nSubject: Re: report %d\n\nMore details.\n.\n", f(st.At), propReporter, st.Inc, st.Inc)
		case "commands":
			fmt.Fprintf(&b, "@ %s commands src%d {thread%d}\n%s.\n", f(st.At), st.Who, st.Inc, dotted(st.Text))
		case "oncall":
			fmt.Fprintf(&b, "@ %s commands src%d {security}\n%s.\n", f(st.At), st.Who, dotted(st.Text))
		case "down", "up":
			fmt.Fprintf(&b, "@ %s %s\n", f(st.At), st.Kind)
		case "jump":
			if st.Jump > 0 {
				fmt.Fprintf(&b, "# the wall clock jumps %v ahead: to the scheduler, the same as being down\n@ %s down\n@ %s up\n",
					st.Jump, f(st.At), f(st.At.Add(st.Jump)))
			} else {
				fmt.Fprintf(&b, "# @ %s the wall clock jumps %v back: a drill's clock cannot\n", f(st.At), -st.Jump)
			}
		}
	}
	return b.String()
}

// dotted writes a text for a scenario: a line starting with a dot doubled.
func dotted(text string) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") {
			lines[i] = "." + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
