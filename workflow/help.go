package workflow

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// grammarText explains where commands go; /help and docs/commands.md start
// with it.
const grammarText = `Commands are lines that start with "/", one per line, in one block of a
signed reply in the incident's thread. The block is the first paragraph that
starts with a "/" line outside quoted (">") text: at the top of the reply or
below the quote. It ends at a blank line, quoted text or the signature
("-- "). Quoted text, the signature, a forwarded message and a "/" line in
the middle of prose never count; two command blocks in one message are
refused (put all commands in one block). Soft line breaks of mail clients
(format=flowed) are undone first. The message must be signed (OpenPGP) with
your pinned key, within the last 24 hours, and must not name another
incident; where the committee sets [commands] require_encryption, it must
also be encrypted to the security list's key, with the signature inside;
where it sets [commands] require_binding, the signed text must name the list
and the incident (security+SEC-YYYY-NNNN@…), as a reply that quotes
embargo's mail does. All commands apply, or none; you get a signed receipt quoting each command with
its result. Verbs are case-insensitive.

A multi-line value is a here-document: end the command line with <<END, write
the lines (blank lines allowed), then END alone on a line. Mail clients that
wrap long lines cannot break it:

    /set mitigation <<END
    Disable the feature gate:

      --feature-gates=Foo=false
    END

Dates are UTC: YYYY-MM-DD means 16:00 UTC that day, or give
YYYY-MM-DDTHH:MMZ. Receipts state every date as an absolute UTC instant.`

// HelpText is the /help reply: every command, or the one named.
func HelpText(name string) string {
	var b strings.Builder
	if name == "" {
		b.WriteString(grammarText + "\n")
	}
	for _, s := range Commands() {
		if name != "" && s.Name != name {
			continue
		}
		// Nothing embargo sends starts a line with "/": a reply that carries
		// this text along unquoted must not run it.
		b.WriteString("\n  " + s.Usage + "\n")
		b.WriteString(indentWrap(s.Help, "      ", 76))
		if len(s.Aliases) > 0 {
			b.WriteString("      Also: /" + strings.Join(s.Aliases, ", /") + "\n")
		}
		b.WriteString("      Who: " + s.WhoCanUse.String() + "\n")
		for _, e := range s.Examples {
			b.WriteString("      Example: " + strings.ReplaceAll(e, "\n", "\n               ") + "\n")
		}
	}
	return b.String()
}

// indentWrap wraps text at width columns, each line indented.
func indentWrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(text) {
		if len(line) > len(indent) && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
	return b.String()
}

// CommandsMarkdown is docs/commands.md, generated from the command table
// (go generate ./workflow, or go test ./workflow -run TestCommandsDoc -update).
func CommandsMarkdown() string {
	var b strings.Builder
	b.WriteString("<!-- Code generated from the command table in workflow/commands.go; DO NOT EDIT. -->\n")
	b.WriteString("<!-- Regenerate: go generate ./workflow -->\n\n")
	b.WriteString("# embargo commands\n\n")
	b.WriteString(grammarText + "\n\n")
	b.WriteString("Who may run what: role `src` may run every command; role `associate` may run\n")
	b.WriteString("them only on incidents rated Low (or None) or marked public; the incident's\n")
	b.WriteString("fix team may run `/set`, `/fixed`, `/status` and `/help`; a distributor\n")
	b.WriteString("whom the incident's embargoed notice reached may run `/affected` alone, on\n")
	b.WriteString("that incident, encrypted as well as signed (its answer goes to the SRC\n")
	b.WriteString("only); reporters, other distributors and unknown keys may run none, except\n")
	b.WriteString("that any member may leave with `/member remove me`. `/disclose now`,\n")
	b.WriteString("`/embargo-break` and `/public`\n")
	b.WriteString("need `[governance] quorum` SRC signatures (the two-person rule), and so does\n")
	b.WriteString("every roster change.\n\n")
	b.WriteString("`/member`, `/admit` and `/deny` change the roster, not an incident: send\n")
	b.WriteString("them in a message of their own, to the security list alone, in any thread,\n")
	b.WriteString("or (`/admit`, `/deny`: only there) in the proposal's thread\n")
	b.WriteString("`security+GOV-YYYY-NNNN@`.\n\n")
	b.WriteString("| command | what |\n|---|---|\n")
	for _, s := range Commands() {
		first, _, _ := strings.Cut(s.Help, ". ")
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", mdEscape(s.Usage), s.Name, strings.TrimSuffix(mdEscape(first), ".")+".")
	}
	for _, s := range Commands() {
		fmt.Fprintf(&b, "\n## /%s\n\n", s.Name)
		fmt.Fprintf(&b, "`%s`\n\n", s.Usage)
		b.WriteString(s.Help + "\n\n")
		if len(s.Aliases) > 0 {
			fmt.Fprintf(&b, "Aliases: `/%s`.\n\n", strings.Join(s.Aliases, "`, `/"))
		}
		fmt.Fprintf(&b, "Who: %s.\n\n", s.WhoCanUse)
		b.WriteString("Examples:\n\n```\n")
		for _, e := range s.Examples {
			b.WriteString(e + "\n")
		}
		b.WriteString("```\n")
	}
	return b.String()
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// StatusText is the /status reply: the incident, the irreversible commands
// awaiting signatures, and every deadline, as absolute UTC instants.
func StatusText(inc Incident, now time.Time, holidays []time.Time) string {
	return statusText(inc, now, Env{Holidays: holidays})
}

// statusText is StatusText knowing the SRC and the quorum, so that a
// pending approval names whose signature is awaited.
func statusText(inc Incident, now time.Time, env Env) string {
	holidays := env.Holidays
	var b strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-16s %s\n", k+":", v)
		}
	}
	fmt.Fprintf(&b, "%s, phase %s, as of %s\n\n", inc.ID, inc.Phase, FormatInstant(now))
	line("reported", FormatInstant(inc.Opened)+" by "+inc.Reporter)
	line("credit", inc.Advisory.Credit)
	line("commander", inc.Commander)
	line("fix lead", inc.FixLead)
	line("fix team", strings.Join(inc.FixTeam, ", "))
	sev := inc.Severity().String()
	if cv, ok := inc.CVSS(); ok {
		sev += fmt.Sprintf(" (CVSS %s %s)", cv.ScoreText(), cv.Vector)
	}
	if inc.SeverityOverride != SeverityUnset {
		sev += ", set by the Fix Lead"
	}
	line("severity", sev)
	line("CVE", strings.Join(inc.CVEs, ", "))
	if !inc.T.IsZero() {
		line("T", FormatInstant(inc.T))
	}
	line("track", trackLine(inc, now))
	if !inc.NotifiedAt.IsZero() {
		line("distributors", "notified "+FormatInstant(inc.NotifiedAt)+", told T = "+FormatInstant(inc.NotifiedT))
	}
	for i, p := range preannouncedLines(inc) {
		k := "pre-announced:"
		if i > 0 {
			k = ""
		}
		fmt.Fprintf(&b, "%-16s %s\n", k, p)
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{inc.Public, "public"}, {inc.EmbargoBroken, "embargo-broken"}, {inc.Deferred, "deferred"}, {inc.Emergency, "emergency"},
		{inc.Approved, "approved"}, {!inc.FixedAt.IsZero(), "fixed"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	line("flags", strings.Join(flags, ", "))
	if inc.Resolution != ResolutionUnset {
		r := inc.Resolution.String()
		if inc.DuplicateOf != "" {
			r += " of " + string(inc.DuplicateOf)
		}
		if inc.HandedOffTo != "" {
			r += " to " + inc.HandedOffTo
		}
		line("resolution", r)
	}
	var set, unset []string
	for _, f := range fields() {
		if *f.ptr(&inc.Advisory) != "" {
			set = append(set, f.name)
		} else {
			unset = append(unset, f.name)
		}
	}
	line("advisory set", strings.Join(set, ", "))
	line("advisory unset", strings.Join(unset, ", "))

	if len(inc.Distributors) > 0 {
		fmt.Fprintf(&b, "\nDistributors the notice reached (%d of %d answered, /affected):\n", inc.Answered(), len(inc.Distributors))
		for i, l := range inc.DistributorLines() {
			b.WriteString("  " + l + "\n")
			// The note is the distributor's text: indented, none of its
			// lines starts with "/" (docs/threat-model.md E5).
			if n := inc.Distributors[i].Note; n != "" {
				for _, nl := range strings.Split(n, "\n") {
					b.WriteString(strings.TrimRight("      "+nl, " ") + "\n")
				}
			}
		}
	}
	if bl := bounceLines(inc); len(bl) > 0 {
		// The reporting MTA's words, escaped by the daemon; indented, so
		// that no line starts with "/" (docs/threat-model.md E5).
		b.WriteString("\nBounced (the relay took the copy; the recipient's server refused it):\n")
		for _, l := range bl {
			b.WriteString(indentWrap(l, "  ", 76))
		}
	}
	if p := pendingLines(inc, now, env); len(p) > 0 {
		b.WriteString("\nAwaiting signatures (two-person rule):\n")
		for _, l := range p {
			b.WriteString(indentWrap(l, "  ", 76))
		}
	}

	b.WriteString("\nDeadlines:\n")
	for _, d := range Deadlines(inc, holidays) {
		state := "due " + FormatInstant(d.Due)
		switch {
		case d.MootBy != MilestoneUnset:
			state = "moot: " + d.MootBy.String() + " " + FormatInstant(d.Done)
		case !d.Open():
			state = "done " + FormatInstant(d.Done)
		case d.ASAP:
			state = "ASAP (was due " + FormatInstant(d.Due) + ")"
		case d.Due.Before(now):
			state = "OVERDUE since " + FormatInstant(d.Due)
		}
		fmt.Fprintf(&b, "  %-18s %s\n      %s\n", d.Name, state, d.What)
	}
	return b.String()
}

// BounceCommand is the Command of a history entry that records a copy
// whose delivery failed after the relay took it: a delivery status
// notification (RFC 3464) about it came back (the daemon's per-copy bounce
// addresses, docs/design.md §4).
const BounceCommand = "(bounce)"

// bounceLines are the incident's bounce entries, oldest first.
func bounceLines(inc Incident) []string {
	var out []string
	for _, h := range inc.History {
		if h.Command == BounceCommand {
			out = append(out, FormatInstant(h.At)+" "+h.What)
		}
	}
	return out
}
