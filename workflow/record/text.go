package record

import (
	"strings"
	"unicode/utf8"

	"github.com/embargo-project/embargo/workflow"
)

// group is the affected and fixed lines of one component: the lines that
// name none belong to the advisory's component (possibly "").
type group struct {
	component       string
	affected, fixed []workflow.VersionRange
}

// groups splits the affected and fixed fields by component, in the order
// the components first appear; the advisory's own component comes first.
// There is always at least one group.
func groups(a workflow.Advisory) []group {
	def := strings.TrimSpace(a.Component)
	out := []group{{component: def}}
	at := func(name string) *group {
		if name == "" {
			name = def
		}
		for i := range out {
			if strings.EqualFold(out[i].component, name) {
				return &out[i]
			}
		}
		out = append(out, group{component: name})
		return &out[len(out)-1]
	}
	for _, r := range workflow.ReadVersions(a.Affected) {
		g := at(r.Component)
		g.affected = append(g.affected, r)
	}
	for _, r := range workflow.ReadFixedVersions(a.Fixed) {
		g := at(r.Component)
		g.fixed = append(g.fixed, r)
	}
	if len(out) > 1 && len(out[0].affected) == 0 && len(out[0].fixed) == 0 {
		out = out[1:]
	}
	return out
}

// parsed reports whether every affected line of g is a range, and there is
// at least one: then versions outside them are unaffected.
func (g group) parsed() bool {
	if len(g.affected) == 0 {
		return false
	}
	for _, r := range g.affected {
		if r.Prose {
			return false
		}
	}
	return true
}

// rangePhrase says one range the way CVE descriptions do ("before 1.2.4",
// "from 1.0.0 through 1.2.3"); "" for every version.
func rangePhrase(r workflow.VersionRange) string {
	from := ""
	if r.Introduced != "" && r.Introduced != "0" {
		from = "from " + r.Introduced + " "
	}
	switch {
	case r.Version != "":
		return r.Version
	case r.Fixed != "":
		return from + "before " + r.Fixed
	case r.LastAffected != "":
		return from + "through " + r.LastAffected
	case from != "":
		return r.Introduced + " and later"
	}
	return ""
}

// versionsPhrase joins the ranges of a group; "" when any line is prose or
// a range covers every version.
func (g group) versionsPhrase() string {
	if !g.parsed() {
		return ""
	}
	var ps []string
	for _, r := range g.affected {
		p := rangePhrase(r)
		if p == "" {
			return ""
		}
		ps = append(ps, p)
	}
	return andList(ps)
}

func andList(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

// subject is "<component> in <product> <versions>", the start of the
// description.
func subject(product string, gs []group) string {
	join := func(parts ...string) string {
		var kept []string
		for _, p := range parts {
			if p != "" {
				kept = append(kept, p)
			}
		}
		return strings.Join(kept, " ")
	}
	if len(gs) == 1 {
		g := gs[0]
		if g.component != "" {
			return join(g.component, "in", product, g.versionsPhrase())
		}
		return join(product, g.versionsPhrase())
	}
	var parts []string
	for _, g := range gs {
		parts = append(parts, join(g.component, g.versionsPhrase()))
	}
	return product + " (" + strings.Join(parts, "; ") + ")"
}

// Description is the CVE program's sentence: "<component> in <product>
// <versions> allows <actor> to <impact>, only if <condition>." Affected lines
// that are not ranges follow as written.
func Description(p Project, a workflow.Advisory) string {
	p = p.WithDefaults()
	gs := groups(a)
	s := subject(p.Product, gs)
	actor, impact := clause(a.Actor), strings.TrimPrefix(clause(a.Impact), "to ")
	switch {
	case actor != "" && impact != "":
		s += " allows " + lowerLead(actor) + " to " + impact
		if c := clause(a.Condition); c != "" {
			s += ", only if " + c
		}
	case clause(a.Summary) != "":
		s += ": " + clause(a.Summary)
	default:
		s = "A vulnerability in " + s
	}
	s += "." // names keep their case: "kubelet in Example …"
	var prose []string
	for _, g := range gs {
		for _, r := range g.affected {
			if r.Prose {
				prose = append(prose, r.Text)
			}
		}
	}
	if len(prose) > 0 {
		s += " Affected versions: " + strings.Join(prose, "; ") + "."
	}
	return s
}

// solution is the CVE solution: upgrade to the fixed releases.
func solution(p Project, a workflow.Advisory, gs []group) string {
	var sents []string
	var prose []string
	for _, g := range gs {
		var vs []string
		for _, r := range g.fixed {
			if r.Prose {
				prose = append(prose, r.Text)
			} else {
				vs = append(vs, r.Version)
			}
		}
		what := p.Product
		if g.component != "" {
			what = g.component
		}
		switch len(vs) {
		case 0:
		case 1:
			sents = append(sents, "Upgrade "+what+" to "+vs[0]+" or later.")
		default:
			sents = append(sents, "Upgrade "+what+" to "+andList(vs)+", or a later release of the same branch.")
		}
	}
	if len(prose) > 0 {
		sents = append(sents, "Fixed in: "+strings.Join(prose, "; ")+".")
	}
	if len(sents) == 0 {
		return ""
	}
	if act := clause(a.ActionRequired); act != "" {
		sents = append(sents, "After upgrading: "+act+".")
	}
	if a.UpgradeDocs != "" {
		sents = append(sents, "See "+a.UpgradeDocs+".")
	}
	return strings.Join(sents, " ")
}

// Details is the OSV record's details: the technical text in Markdown,
// without the mail's greeting and sign-off.
func Details(p Project, a workflow.Advisory) string {
	var b strings.Builder
	b.WriteString(Description(p, a) + "\n")
	section := func(title, body string) {
		if body = strings.TrimSpace(body); body != "" {
			b.WriteString("\n### " + title + "\n\n" + body + "\n")
		}
	}
	section("Affected versions", markdownList(a.Affected))
	section("Fixed versions", markdownList(a.Fixed))
	section("Mitigation", a.Mitigation)
	section("Action required after upgrading", a.ActionRequired)
	section("Impact of the fix", a.FixImpact)
	section("Detection", a.Detection)
	if a.UpgradeDocs != "" {
		section("Upgrading", "See "+a.UpgradeDocs+".")
	}
	return b.String()
}

// markdownList writes each non-blank line of text as a Markdown list item
// in a code span.
func markdownList(text string) string {
	var items []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			items = append(items, "- "+codeSpan(l))
		}
	}
	return strings.Join(items, "\n")
}

// codeSpan quotes a version line for Markdown (CommonMark §6.1): "- >= 1.0"
// would otherwise open a block quote inside the list item.
func codeSpan(s string) string {
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

func clause(s string) string { return workflow.Clause(s) }

func lowerLead(s string) string { return workflow.InSentence(s) }

// truncate cuts s to n runes at most.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
