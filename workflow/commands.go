package workflow

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// Command is one parsed, validated command. Its arguments are canonical, so
// String re-serialises it and Parse(String()) gives it back.
type Command struct {
	Name  string   // the table name, never an alias
	Args  []string // canonical arguments
	Value string   // the multi-line value of /set and /reply
	Line  int      // where it was written; 0 when built in code (not part of its identity)
}

// String is the canonical form: "/name args", and for a value that is not a
// single plain line, a here-document.
func (c Command) String() string {
	s := "/" + c.Name
	if len(c.Args) > 0 {
		s += " " + strings.Join(c.Args, " ")
	}
	if !takesValue(c.Name) || (c.Name == "affected" && c.Value == "") {
		return s // an /affected without a NOTE is the bare command
	}
	if singleLine(c.Value) {
		return s + " " + c.Value
	}
	d := delimiter(c.Value)
	if c.Value == "" {
		return s + " <<" + d + "\n" + d
	}
	return s + " <<" + d + "\n" + c.Value + "\n" + d
}

func takesValue(name string) bool { return name == "set" || name == "reply" || name == "affected" }

// singleLine reports whether a value can be written on the command line
// itself: one line, no surrounding white space, and not ending in something
// that reads as a here-document opener.
func singleLine(v string) bool {
	if v == "" || strings.ContainsAny(v, "\n") || strings.TrimSpace(v) != v {
		return false
	}
	f := strings.Fields(v)
	return !heredoc.MatchString(f[len(f)-1])
}

// delimiter picks a here-document delimiter that no line of v could be taken
// for: END, else END2, END3, ….
func delimiter(v string) string {
	used := make(map[string]bool)
	for _, l := range strings.Split(v, "\n") {
		used[strings.TrimSpace(l)] = true
	}
	d := "END"
	for n := 2; used[d]; n++ {
		d = fmt.Sprintf("END%d", n)
	}
	return d
}

// Who is a set of the people who may run a command, beyond the SRC (who may
// run every command).
type Who uint8

// The grants.
const (
	WhoSRC         Who = 1 << iota // role src: every command
	WhoAssociate                   // role associate: only on low-severity (or None) or public incidents
	WhoFixTeam                     // the incident's fix team
	WhoSelf                        // any rostered member, about themself (/member remove me)
	WhoDistributor                 // a distributor the incident's notice reached (/affected alone)
)

// String describes the grant for /help and docs/commands.md.
func (w Who) String() string {
	var parts []string
	if w&WhoSRC != 0 {
		parts = append(parts, "SRC")
	}
	if w&WhoAssociate != 0 {
		parts = append(parts, "associates (low-severity or public incidents)")
	}
	if w&WhoFixTeam != 0 {
		parts = append(parts, "the incident's fix team")
	}
	if w&WhoSelf != 0 {
		parts = append(parts, "any member, to leave (/member remove me)")
	}
	if w&WhoDistributor != 0 {
		parts = append(parts, "distributors the incident's notice reached")
	}
	return strings.Join(parts, ", ")
}

// Spec describes one command: its grammar, who may run it, its help and its
// examples. /help, docs/commands.md and the example test are generated from
// the table (Commands).
type Spec struct {
	Name      string
	Aliases   []string
	Usage     string // the grammar, e.g. "/cvss VECTOR"
	Help      string // what it does, its guards; one paragraph
	WhoCanUse Who
	Examples  []string                    // each must parse (TestExamplesParse)
	Parse     func(Line) (Command, error) // validates and canonicalises the arguments

	// apply runs the parsed command on the working copy of the incident
	// (machine.go); it returns what changed, for the receipt and the
	// history, and whether anything did. Adding a command is adding its row
	// here and this one function.
	apply func(*machine, Command) (string, bool, error)
}

const everyone = WhoSRC | WhoAssociate

// Commands returns the command table, in the order /help lists it.
func Commands() []Spec {
	return []Spec{
		{Name: "accept", Usage: "/accept", WhoCanUse: everyone,
			Help:     "Accept the report: phase triage → fix. Assigns the Fix Lead round-robin over the SRC unless a /lead in the same message (or earlier) names one. The reporter is told the report was accepted.",
			Examples: []string{"/accept"}, Parse: noArgs("accept"), apply: (*machine).accept},
		{Name: "reject", Usage: "/reject REASON", WhoCanUse: everyone,
			Help:     "Close the report in triage or fix with the matching canned reply to the reporter (process.md §7.7). REASON: not-a-vulnerability, container-cve (public CVEs in container images), clickjacking, spf, or out-of-scope.",
			Examples: []string{"/reject not-a-vulnerability", "/reject clickjacking"}, Parse: parseReject, apply: (*machine).reject},
		{Name: "duplicate", Aliases: []string{"dup"}, Usage: "/duplicate ID", WhoCanUse: everyone,
			Help:     "Close the report in triage or fix as a duplicate of incident ID. The reporter is told it is already known (never the other ID). The signed text may name ID.",
			Examples: []string{"/duplicate SEC-2026-0003"}, Parse: parseDuplicate, apply: (*machine).duplicate},
		{Name: "handoff", Usage: "/handoff ADDR", WhoCanUse: everyone,
			Help:     "Close the report in triage or fix as handed off to ADDR, the security contact of a component the SRC does not support. The reporter is told whom to contact.",
			Examples: []string{"/handoff security@other-project.example"}, Parse: parseHandoff, apply: (*machine).handoff},
		{Name: "lead", Usage: "/lead ADDR|me", WhoCanUse: everyone,
			Help:     "Make ADDR (an SRC member) or yourself the Fix Lead. Before or together with /accept, it replaces the round-robin.",
			Examples: []string{"/lead me", "/lead bob@example.org"}, Parse: parseLead, apply: (*machine).lead},
		{Name: "fixteam", Aliases: []string{"fix-team"}, Usage: "/fixteam add|remove ADDR…", WhoCanUse: everyone,
			Help:     "Add engineers to the incident's fix team (they receive its thread and may /set and /fixed), or remove them.",
			Examples: []string{"/fixteam add eng@example.org owner@example.org", "/fixteam remove eng@example.org"}, Parse: parseFixTeam, apply: (*machine).fixTeam},
		{Name: "cvss", Usage: "/cvss VECTOR", WhoCanUse: everyone,
			Help:     "Set the CVSS vector (CVSS:3.1/… or CVSS:4.0/…); score and severity follow from it (FIRST: None 0, Low 0.1–3.9, Medium 4.0–6.9, High 7.0–8.9, Critical 9.0–10.0). The receipt states the score.",
			Examples: []string{"/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "/cvss CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}, Parse: parseCVSSCmd, apply: (*machine).cvss},
		{Name: "severity", Usage: "/severity none|low|medium|high|critical|auto", WhoCanUse: everyone,
			Help:     "Override the severity the CVSS score gives (the Fix Lead's call, docs/process.md §3); auto removes the override.",
			Examples: []string{"/severity high", "/severity auto"}, Parse: parseSeverityCmd, apply: (*machine).severity},
		{Name: "cve", Usage: "/cve CVE-YYYY-NNNN…", WhoCanUse: everyone,
			Help:     "Set the incident's CVE IDs (replacing any before). With a CVE, distributors must be notified at least 7 days before T: once T is set, a CVE that would break that rule (a notice, or T, less than 7 days ahead) is refused until T moves (/disclose DATE, in the same message or before) or the incident is an emergency, public or broken, or on the urgent or public track (/track).",
			Examples: []string{"/cve CVE-2026-12345", "/cve CVE-2026-1001 CVE-2026-1002"}, Parse: parseCVE, apply: (*machine).cve},
		{Name: "set", Usage: "/set FIELD VALUE | /set FIELD <<END … END", WhoCanUse: everyone | WhoFixTeam,
			Help:     setHelp,
			Examples: setExamples, Parse: parseSet, apply: (*machine).set},
		{Name: "fixed", Usage: "/fixed", WhoCanUse: everyone | WhoFixTeam,
			Help:     "Mark the fix ready (all commits approved by their owners). The reporter is told.",
			Examples: []string{"/fixed"}, Parse: noArgs("fixed"), apply: (*machine).fixed},
		{Name: "disclose", Usage: "/disclose YYYY-MM-DD[THH:MMZ]|now [emergency]", WhoCanUse: everyone,
			Help:     "Set the public disclosure instant T. A date means 16:00 UTC that day; T snaps forward to 16:00 UTC on the next Monday–Thursday that is not a holiday, and the receipt states it. Never in the past, at most 90 days ahead. With a CVE, T must be at least 7 days after the distributor notice (or after now, before one), unless the incident is public or the embargo broke, or the command says emergency, or the incident is on the urgent or public track (/track). On the private track the receipt states the pre-announcement window, T−7 days to T−3 days. Changing T after /notify re-notifies the distributors; the reporter is told (once per message, of its last T: a message that sets T back to what it was tells nobody, and the final notice already sent for it stands). /disclose now releases at once (the advisory must be approved): distributors are told the embargo is lifted first, then the advisory goes out. With [governance] quorum above 1 /disclose now completes only when that many distinct SRC members sign it in the thread within 24 h of the first signature (the two-person rule): until then nothing happens, and the receipt and /status say whose signature is awaited and until when. With or without emergency it is the same command.",
			Examples: []string{"/disclose 2026-12-03", "/disclose 2026-12-03T09:30Z emergency", "/disclose now"}, Parse: parseDisclose, apply: (*machine).disclose},
		{Name: "notify", Usage: "/notify", WhoCanUse: everyone,
			Help:     "Send the embargoed notice to the distributors (phase → embargo). Needs a severity, a fix or a mitigation, and T; with a CVE, T at least 7 days ahead (unless public, broken, emergency or on the urgent track). Again in embargo, it re-sends the notice. Refused on the public track (/track public: no embargo).",
			Examples: []string{"/notify"}, Parse: noArgs("notify"), apply: (*machine).notify},
		{Name: "approve", Usage: "/approve [withdraw]", WhoCanUse: everyone,
			Help:     "Approve the advisory text and lock it: /set, /cvss, /severity and /cve are refused until /approve withdraw. Needs summary, actor, impact, affected, a severity, and fixed versions or a mitigation. The release at T is held unless the advisory is approved by T-24 h.",
			Examples: []string{"/approve", "/approve withdraw"}, Parse: parseApprove, apply: (*machine).approve},
		{Name: "public", Usage: "/public", WhoCanUse: everyone,
			Help:     "Mark the issue as already publicly known: every deadline becomes ASAP and the 7-day notice rule no longer applies. This is a fact about the issue, not the public track (/track public), which is the committee's choice to fix a not necessarily known issue in public, at the normal pace. With [governance] quorum above 1 it completes only when that many distinct SRC members sign it in the thread within 24 h of the first signature (the two-person rule): until then nothing happens, and the receipt and /status say whose signature is awaited and until when.",
			Examples: []string{"/public"}, Parse: noArgs("public"), apply: (*machine).public},
		{Name: "embargo-break", Aliases: []string{"embargo-broken"}, Usage: "/embargo-break", WhoCanUse: everyone,
			Help:     "Record that the embargo broke (a leak): every deadline becomes ASAP and the SRC is alerted. Pull T in with /disclose (biased to going public). With [governance] quorum above 1 it completes only when that many distinct SRC members sign it in the thread within 24 h of the first signature (the two-person rule): until then nothing happens, and the receipt and /status say whose signature is awaited and until when.",
			Examples: []string{"/embargo-break"}, Parse: noArgs("embargo-break"), apply: (*machine).embargoBreak},
		{Name: "defer", Usage: "/defer", WhoCanUse: everyone,
			Help:     "Slow a low-severity incident down (process.md §3a); refused unless the severity is Low or None.",
			Examples: []string{"/defer"}, Parse: noArgs("defer"), apply: (*machine).deferLow},
		{Name: "preannounce", Usage: "/preannounce [nosev]", WhoCanUse: everyone,
			Help:     "Pre-announce the release publicly on the announce list, without details (docs/process.md §9). The message says only the project, that a security release is planned at T (absolute UTC, with the weekday), the severity (nosev leaves it out) and that no details will be given before then; nothing else of the incident. Needs phase fix or embargo, T (/disclose DATE) and, unless nosev, a severity. Once per T: after T moves, /preannounce again announces the new date (rescheduled). Each subscriber's copy is signed by the announce key with its own unsubscribe link; the receipt says how many subscribers it went to, and /status lists every pre-announcement. Refused on the urgent and public tracks (/track); on the private track the SRC is reminded at T−7 days and T−3 days until the current T is pre-announced.",
			Examples: []string{"/preannounce", "/preannounce nosev"}, Parse: parsePreannounce, apply: (*machine).preannounce},
		{Name: "track", Usage: "/track public|private|urgent", WhoCanUse: WhoSRC,
			Help:     trackHelp,
			Examples: []string{"/track private", "/track urgent", "/track public"}, Parse: parseTrack, apply: (*machine).track},
		{Name: "reply", Usage: "/reply TEXT | /reply <<END … END", WhoCanUse: everyone,
			Help:     "Send TEXT to the reporter, from security@.",
			Examples: []string{"/reply Thanks, we can reproduce it and are working on a fix.", "/reply <<END\nThanks for the report.\n\nWe plan to disclose on 2026-12-03.\nEND"}, Parse: parseReply, apply: (*machine).reply},
		{Name: "reporter-key", Usage: "/reporter-key FINGERPRINT|none", WhoCanUse: WhoSRC,
			Help:     "Choose the reporter's OpenPGP key: updates and /reply texts to the reporter are encrypted to it. embargo pins a key by itself only from mail whose sender is authenticated: the report itself, later mail that a trusted MTA found DKIM- or SPF-aligned with its From ([intake] trusted_authserv_ids), or mail signed by the key pinned before. Any other key that arrives from the reporter's address is kept but not used, and the SRC is told both fingerprints. /reporter-key FINGERPRINT pins the key with that fingerprint among those that arrived for the incident (spaces allowed, as gpg prints it); /reporter-key none unpins it, and mail to the reporter is signed but not encrypted. The receipt names the key, when it arrived and how its sender was authenticated.",
			Examples: []string{"/reporter-key 0123456789ABCDEF0123456789ABCDEF01234567", "/reporter-key none"}, Parse: parseReporterKey, apply: (*machine).reporterKey},
		{Name: "retro", Aliases: []string{"retrospective"}, Usage: "/retro", WhoCanUse: everyone,
			Help:     "Record the retrospective (due 1–3 days after T) and close the disclosed incident as fixed.",
			Examples: []string{"/retro"}, Parse: noArgs("retro"), apply: (*machine).retro},
		{Name: "close", Usage: "/close [RESOLUTION]", WhoCanUse: everyone,
			Help:     "Close the incident. RESOLUTION: fixed, not-a-vulnerability, out-of-scope, duplicate, handed-off; without one, a disclosed incident closes as fixed. Refused during the embargo (disclose first).",
			Examples: []string{"/close", "/close out-of-scope"}, Parse: parseClose, apply: (*machine).close},
		{Name: "reopen", Usage: "/reopen", WhoCanUse: everyone,
			Help:     "Reopen a closed incident, in the phase it had reached (triage, fix or disclosed).",
			Examples: []string{"/reopen"}, Parse: noArgs("reopen"), apply: (*machine).reopen},
		{Name: "oncall", Aliases: []string{"on-call"}, Usage: "/oncall [ADDR|me|ack]", WhoCanUse: WhoSRC,
			Help:     "Who is on call: the rotation gives each SRC member a week from Monday 00:00 UTC, and the on-call is the default incident commander of new reports (and gets their 1-working-day triage reminder). Without an argument, the receipt says who is on call until when. /oncall ADDR asks the SRC member ADDR to take over for the rest of this week's shift; it takes effect only when ADDR acknowledges with /oncall ack, and the open incidents of the member handing over then go to ADDR. /oncall me takes over at once. Works in any incident's thread, or in a signed message to the security list alone.",
			Examples: []string{"/oncall", "/oncall bob@example.org", "/oncall ack"}, Parse: parseOnCall, apply: (*machine).oncall},
		{Name: "member", Usage: "/member add ADDR ROLE | remove ADDR|me [REASON] | key ADDR|me | list", WhoCanUse: WhoSRC | WhoSelf,
			Help: memberHelp, Examples: []string{"/member add security@vendor.example distributor", "/member add carol@example.org src,release-manager",
				"/member remove security@vendor.example no longer maintained", "/member remove me", "/member key bob@example.org", "/member list"},
			Parse: parseMember, apply: (*machine).elsewhere},
		{Name: "admit", Usage: "/admit [GOV-ID]", WhoCanUse: WhoSRC,
			Help: admitHelp, Examples: []string{"/admit", "/admit GOV-2026-0003"}, Parse: parseAdmit, apply: (*machine).elsewhere},
		{Name: "deny", Usage: "/deny [GOV-ID] REASON", WhoCanUse: WhoSRC,
			Help: denyHelp, Examples: []string{"/deny no public record of security fixes", "/deny GOV-2026-0003 a rebuild of another distribution"},
			Parse: parseDeny, apply: (*machine).elsewhere},
		{Name: "affected", Usage: "/affected yes|no|unknown|fixed [NOTE]", WhoCanUse: WhoDistributor,
			Help: affectedHelp, Examples: []string{"/affected yes", "/affected fixed packages 1.2.4-1 built, in staging", "/affected no <<END\nWe build without the parser.\nOur 2.x packages never shipped it.\nEND"},
			Parse: parseAffected, apply: (*machine).affected},
		{Name: "status", Usage: "/status", WhoCanUse: everyone | WhoFixTeam,
			Help:     "Reply with the incident, the irreversible commands awaiting a second signature, and every deadline, as absolute UTC instants. In a proposal's thread, or with roster commands, reply with the open roster proposals instead.",
			Examples: []string{"/status"}, Parse: noArgs("status"), apply: (*machine).status},
		{Name: "help", Usage: "/help [COMMAND]", WhoCanUse: everyone | WhoFixTeam,
			Help:     "Reply with this list, or the help of one command.",
			Examples: []string{"/help", "/help disclose"}, Parse: parseHelp, apply: (*machine).help},
	}
}

// lookupSpec finds a command by name or alias.
func lookupSpec(verb string) (Spec, bool) {
	for _, s := range Commands() {
		if s.Name == verb {
			return s, true
		}
		for _, a := range s.Aliases {
			if a == verb {
				return s, true
			}
		}
	}
	return Spec{}, false
}

// Parse extracts the command block of a message (Extract) and parses every
// command. One unknown or malformed command fails the whole message with a
// *CommandError that names the line and shows a correct example.
func Parse(text string) ([]Command, error) {
	lines, err := Extract(text)
	if err != nil {
		return nil, err
	}
	cmds := make([]Command, 0, len(lines))
	for _, l := range lines {
		spec, ok := lookupSpec(l.Verb)
		if !ok {
			return nil, &CommandError{Line: l.N, Verb: l.Verb, Err: argErr(ErrUnknownCommand, "unknown command; send /help for the list")}
		}
		if l.Doc && !takesValue(spec.Name) {
			return nil, &CommandError{Line: l.N, Verb: l.Verb, Err: argErr(ErrSyntax, "takes no here-document"), Example: spec.Examples[0]}
		}
		c, err := spec.Parse(l)
		if err != nil {
			return nil, &CommandError{Line: l.N, Verb: l.Verb, Err: err, Example: firstLine(spec.Examples[0])}
		}
		c.Line = l.N
		cmds = append(cmds, c)
	}
	return cmds, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// Format writes commands in canonical form, one after another.
func Format(cmds []Command) string {
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Argument parsers.

func noArgs(name string) func(Line) (Command, error) {
	return func(l Line) (Command, error) {
		if l.Args != "" {
			return Command{}, argErr(ErrSyntax, "takes no arguments")
		}
		return Command{Name: name}, nil
	}
}

// rejectReasons maps /reject's REASON to the resolution and the canned reply.
var rejectReasons = []struct{ reason, template string }{
	{"not-a-vulnerability", "canned-not-a-vulnerability"},
	{"container-cve", "canned-container-cve"},
	{"clickjacking", "canned-clickjacking"},
	{"spf", "canned-spf"},
	{"out-of-scope", "canned-out-of-scope"},
}

func parseReject(l Line) (Command, error) {
	f := strings.Fields(strings.ToLower(l.Args))
	if len(f) != 1 {
		return Command{}, argErr(ErrSyntax, "give exactly one REASON")
	}
	for _, r := range rejectReasons {
		if r.reason == f[0] {
			return Command{Name: "reject", Args: f}, nil
		}
	}
	return Command{}, argErr(ErrSyntax, "unknown REASON %q (want not-a-vulnerability, container-cve, clickjacking, spf or out-of-scope)", f[0])
}

func parseDuplicate(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrSyntax, "give exactly one incident ID")
	}
	id, ok := ParseID(f[0])
	if !ok {
		return Command{}, argErr(ErrSyntax, "%q is not an incident ID (SEC-YYYY-NNNN)", f[0])
	}
	return Command{Name: "duplicate", Args: []string{string(id)}}, nil
}

func parseHandoff(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrSyntax, "give exactly one address")
	}
	a, err := parseAddr(f[0])
	if err != nil {
		return Command{}, err
	}
	return Command{Name: "handoff", Args: []string{a}}, nil
}

func parseLead(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrSyntax, "give exactly one address, or me")
	}
	if strings.EqualFold(f[0], "me") {
		return Command{Name: "lead", Args: []string{"me"}}, nil
	}
	a, err := parseAddr(f[0])
	if err != nil {
		return Command{}, err
	}
	return Command{Name: "lead", Args: []string{a}}, nil
}

func parseFixTeam(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) < 2 {
		return Command{}, argErr(ErrSyntax, "give add or remove, then one or more addresses")
	}
	op := strings.ToLower(f[0])
	if op != "add" && op != "remove" {
		return Command{}, argErr(ErrSyntax, "%q: want add or remove", f[0])
	}
	args := []string{op}
	seen := map[string]bool{}
	for _, x := range f[1:] {
		a, err := parseAddr(x)
		if err != nil {
			return Command{}, err
		}
		if !seen[a] {
			seen[a] = true
			args = append(args, a)
		}
	}
	return Command{Name: "fixteam", Args: args}, nil
}

func parseCVSSCmd(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrBadCVSS, "give exactly one vector")
	}
	c, err := ParseCVSS(f[0])
	if err != nil {
		return Command{}, err
	}
	return Command{Name: "cvss", Args: []string{c.Vector}}, nil
}

func parseSeverityCmd(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) != 1 {
		return Command{}, argErr(ErrBadSeverity, "give exactly one level")
	}
	if strings.EqualFold(f[0], "auto") {
		return Command{Name: "severity", Args: []string{"auto"}}, nil
	}
	s, err := ParseSeverity(f[0])
	if err != nil {
		return Command{}, argErr(ErrBadSeverity, "%q: want none, low, medium, high, critical or auto", f[0])
	}
	return Command{Name: "severity", Args: []string{strings.ToLower(s.String())}}, nil
}

var cvePattern = regexp.MustCompile(`^CVE-([0-9]{4})-([0-9]{4,19})$`)

// ParseCVE validates a CVE ID (CVE-YYYY-NNNN, four or more digits; the year
// 1999 or later) in any letter case and returns it in upper case.
func ParseCVE(s string) (string, error) {
	u := strings.ToUpper(s)
	m := cvePattern.FindStringSubmatch(u)
	if m == nil || m[1] < "1999" || (len(m[2]) > 4 && m[2][0] == '0') {
		return "", argErr(ErrBadCVE, "%q is not a CVE ID (CVE-YYYY-NNNN)", s)
	}
	return u, nil
}

func parseCVE(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) == 0 {
		return Command{}, argErr(ErrBadCVE, "give one or more CVE IDs")
	}
	var args []string
	seen := map[string]bool{}
	for _, x := range f {
		c, err := ParseCVE(x)
		if err != nil {
			return Command{}, err
		}
		if !seen[c] {
			seen[c] = true
			args = append(args, c)
		}
	}
	return Command{Name: "cve", Args: args}, nil
}

// field is one /set FIELD: where it lives in the Advisory and what it allows.
type field struct {
	name string
	help string
	line bool // one line only
	url  bool // an https URL
	ptr  func(*Advisory) *string
}

func fields() []field {
	return append([]field{
		{"summary", "one line, the subject of every advisory", true, false, func(a *Advisory) *string { return &a.Summary }},
		{"actor", "who can exploit it: \"$ACTOR may be able to …\"", true, false, func(a *Advisory) *string { return &a.Actor }},
		{"impact", "what they can do: \"… may be able to $DO_SOMETHING\"", false, false, func(a *Advisory) *string { return &a.Impact }},
		{"condition", "\"only if $CONDITION\"", false, false, func(a *Advisory) *string { return &a.Condition }},
		{"affected", "affected versions, one \"$COMPONENT $VERSION_RANGE\" a line", false, false, func(a *Advisory) *string { return &a.Affected }},
		{"fixed", "fixed versions, one \"$COMPONENT $VERSION\" a line (public advisory only)", false, false, func(a *Advisory) *string { return &a.Fixed }},
		{"mitigation", "what to do before upgrading", false, false, func(a *Advisory) *string { return &a.Mitigation }},
		{"action-required", "what to do after upgrading", false, false, func(a *Advisory) *string { return &a.ActionRequired }},
		{"fix-impact", "what the fix changes", false, false, func(a *Advisory) *string { return &a.FixImpact }},
		{"detection", "how to tell whether it was exploited", false, false, func(a *Advisory) *string { return &a.Detection }},
		{"upgrade-docs", "the upgrade documentation (https URL)", true, true, func(a *Advisory) *string { return &a.UpgradeDocs }},
		{"issue-url", "the public tracking issue (https URL)", true, true, func(a *Advisory) *string { return &a.IssueURL }},
		{"credit", "how the reporter is credited", true, false, func(a *Advisory) *string { return &a.Credit }},
	}, newFields...)
}

func fieldNames() []string {
	var n []string
	for _, f := range fields() {
		n = append(n, f.name)
	}
	return n
}

func lookupField(name string) (field, bool) {
	for _, f := range fields() {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

var urlPattern = regexp.MustCompile(`^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[!-~]*)?$`)

func parseSet(l Line) (Command, error) {
	name, rest := l.Args, ""
	if i := strings.IndexFunc(name, unicode.IsSpace); i >= 0 {
		name, rest = name[:i], name[i:]
	}
	name = strings.ToLower(name)
	f, ok := lookupField(name)
	if !ok {
		if name == "" {
			return Command{}, argErr(ErrSyntax, "give a FIELD (%s)", strings.Join(fieldNames(), ", "))
		}
		return Command{}, argErr(ErrSyntax, "unknown FIELD %q (want %s)", name, strings.Join(fieldNames(), ", "))
	}
	value := strings.TrimSpace(rest)
	switch {
	case l.Doc && value != "":
		return Command{}, argErr(ErrSyntax, "give the value on the line or as a here-document, not both")
	case l.Doc:
		value = l.Value
	case value == "":
		return Command{}, argErr(ErrSyntax, "value missing (an empty here-document clears the field)")
	}
	if value != "" {
		if f.line && strings.Contains(value, "\n") {
			return Command{}, argErr(ErrSyntax, "%s takes one line", f.name)
		}
		if f.url && !urlPattern.MatchString(value) {
			return Command{}, argErr(ErrSyntax, "%s takes an https URL", f.name)
		}
	}
	value, err := checkField(f.name, value)
	if err != nil {
		return Command{}, err
	}
	return Command{Name: "set", Args: []string{f.name}, Value: value}, nil
}

func parseReply(l Line) (Command, error) {
	value := l.Args
	switch {
	case l.Doc && value != "":
		return Command{}, argErr(ErrSyntax, "give the text on the line or as a here-document, not both")
	case l.Doc:
		value = l.Value
	}
	if value == "" {
		return Command{}, argErr(ErrSyntax, "text missing")
	}
	return Command{Name: "reply", Value: value}, nil
}

// Dates. A date alone means 16:00 UTC (DefaultHour); an instant must say Z.
const (
	dateLayout    = "2006-01-02"
	instantLayout = "2006-01-02T15:04Z"
	// DefaultHour is the time of day, UTC, a /disclose date without a time means.
	DefaultHour = 16
)

// ParseInstant reads a /disclose date: YYYY-MM-DD (16:00 UTC that day) or
// YYYY-MM-DDTHH:MMZ. Time zones other than Z are refused (docs/threat-model.md E6).
func ParseInstant(s string) (time.Time, error) {
	if t, err := time.Parse(dateLayout, s); err == nil {
		return t.Add(DefaultHour * time.Hour), nil
	}
	if t, err := time.Parse(instantLayout, strings.ToUpper(s)); err == nil {
		return t, nil
	}
	return time.Time{}, argErr(ErrBadDate, "%q: want YYYY-MM-DD (16:00 UTC) or YYYY-MM-DDTHH:MMZ, in UTC", s)
}

// formatDate is the canonical /disclose argument: the date alone when the
// time is the default 16:00 UTC.
func formatDate(t time.Time) string {
	if t.Hour() == DefaultHour && t.Minute() == 0 {
		return t.Format(dateLayout)
	}
	return t.Format(instantLayout)
}

func parseDisclose(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) == 0 || len(f) > 2 {
		return Command{}, argErr(ErrBadDate, "give a date or now, then optionally emergency")
	}
	args := make([]string, 0, 2)
	if strings.EqualFold(f[0], "now") {
		args = append(args, "now")
	} else {
		t, err := ParseInstant(f[0])
		if err != nil {
			return Command{}, err
		}
		args = append(args, formatDate(t))
	}
	if len(f) == 2 {
		if !strings.EqualFold(f[1], "emergency") {
			return Command{}, argErr(ErrSyntax, "%q: the only option is emergency", f[1])
		}
		args = append(args, "emergency")
	}
	return Command{Name: "disclose", Args: args}, nil
}

func parseApprove(l Line) (Command, error) {
	switch strings.ToLower(l.Args) {
	case "":
		return Command{Name: "approve"}, nil
	case "withdraw":
		return Command{Name: "approve", Args: []string{"withdraw"}}, nil
	}
	return Command{}, argErr(ErrSyntax, "%q: the only option is withdraw", l.Args)
}

func parseClose(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	switch len(f) {
	case 0:
		return Command{Name: "close"}, nil
	case 1:
		if r, ok := ParseResolution(f[0]); ok {
			return Command{Name: "close", Args: []string{r.String()}}, nil
		}
	}
	return Command{}, argErr(ErrSyntax, "RESOLUTION: want fixed, not-a-vulnerability, out-of-scope, duplicate or handed-off")
}

func parseHelp(l Line) (Command, error) {
	f := strings.Fields(strings.ToLower(l.Args))
	switch len(f) {
	case 0:
		return Command{Name: "help"}, nil
	case 1:
		if s, ok := lookupSpec(strings.TrimPrefix(f[0], "/")); ok {
			return Command{Name: "help", Args: []string{s.Name}}, nil
		}
		return Command{}, argErr(ErrUnknownCommand, "no command %q", f[0])
	}
	return Command{}, argErr(ErrSyntax, "give at most one command")
}

var addrPattern = regexp.MustCompile(`^[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$`)

// parseAddr validates a bare address (local@domain) and lower-cases it.
func parseAddr(s string) (string, error) {
	s = strings.Trim(s, "<>,")
	if len(s) > 254 || !addrPattern.MatchString(s) {
		return "", argErr(ErrBadAddress, "%q is not an address (local@domain)", s)
	}
	return strings.ToLower(s), nil
}
