package drill

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/workflow"
)

// label says who received a row's copies: a list or role, or the members.
func (dr *drill) label(r row) string {
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
