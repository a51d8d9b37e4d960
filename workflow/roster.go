package workflow

import (
	"regexp"
	"strings"
)

// The roster commands (/member, /admit, /deny) share the command table, its
// grammar, /help and docs/commands.md with the incident commands, but they
// change the roster, not an incident: the daemon hands a message whose
// commands are roster commands (Classify) to the governance core
// (lists/governance), never to Apply. A message holds one kind or the other;
// a mix is refused whole, because the two apply to different records and
// "all commands or none" could not hold across both.

// Scope says what a command acts on.
type Scope int

// The scopes.
const (
	ScopeIncident Scope = iota // the incident of the thread (Apply)
	ScopeRoster                // the roster and its proposals (lists/governance)
	ScopeAny                   // /help and /status: either, by the rest of the message
)

var rosterCommands = map[string]bool{"member": true, "admit": true, "deny": true}

// CommandScope is the scope of a command by its table name.
func CommandScope(name string) Scope {
	switch {
	case rosterCommands[name]:
		return ScopeRoster
	case name == "help" || name == "status":
		return ScopeAny
	}
	return ScopeIncident
}

// Classify tells the daemon where a message's commands go: ScopeRoster when
// they include a roster command, ScopeIncident otherwise (only /help or
// /status included). A message mixing roster and incident commands is
// refused with a *CommandError naming the first line of the smaller kind.
func Classify(cmds []Command) (Scope, error) {
	var roster, incident []Command
	for _, c := range cmds {
		switch CommandScope(c.Name) {
		case ScopeRoster:
			roster = append(roster, c)
		case ScopeIncident:
			incident = append(incident, c)
		}
	}
	if len(roster) == 0 {
		return ScopeIncident, nil
	}
	if len(incident) == 0 {
		return ScopeRoster, nil
	}
	odd := incident[0]
	if len(roster) < len(incident) {
		odd = roster[0]
	}
	return ScopeIncident, &CommandError{Line: odd.Line, Verb: odd.Name, Err: argErr(ErrScope,
		"roster commands (/member, /admit, /deny) and incident commands cannot share a message: send them in separate messages")}
}

// elsewhere is the table's function for the roster commands: Apply refuses
// them before any runs (Classify), so it is reached only by a caller that
// skips that check.
func (m *machine) elsewhere(c Command) (string, bool, error) {
	return "", false, argErr(ErrScope, "/%s changes the roster, not an incident: send it in a message of its own", c.Name)
}

// ProposalPrefix starts the ID of a roster proposal (a distributor
// application or a /member change): GOV-YYYY-NNNN. Its thread is
// security+GOV-YYYY-NNNN@.
const ProposalPrefix = "GOV-"

var proposalPattern = regexp.MustCompile(`^GOV-[0-9]{4}-[0-9]{4,9}$`)

// ParseProposalID validates a proposal ID in any letter case and returns it
// upper-cased.
func ParseProposalID(s string) (string, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	return s, proposalPattern.MatchString(s)
}

var proposalToken = regexp.MustCompile(`(?i)\bGOV-[0-9]{4}-[0-9]{4,9}\b`)

// NamedProposals returns the proposal IDs a text names, upper-cased.
func NamedProposals(text string) []string {
	var out []string
	for _, s := range proposalToken.FindAllString(text, -1) {
		out = append(out, strings.ToUpper(s))
	}
	return out
}

// Roles a /member add may give, in canonical order.
var memberRoles = []string{RoleSRC, RoleAssociate, RoleReleaseManager, RoleDistributor}

// ParseRoles reads ROLE[,ROLE…] and returns the roles in canonical order.
func ParseRoles(s string) ([]string, error) {
	want := map[string]bool{}
	for _, r := range strings.Split(strings.ToLower(s), ",") {
		r = strings.TrimSpace(r)
		ok := false
		for _, k := range memberRoles {
			ok = ok || k == r
		}
		if !ok {
			return nil, argErr(ErrSyntax, "unknown ROLE %q (want %s)", r, strings.Join(memberRoles, ", "))
		}
		want[r] = true
	}
	var out []string
	for _, k := range memberRoles {
		if want[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// MaxReasonBytes bounds the REASON of /deny and /member remove: it is
// mailed to the member concerned.
const MaxReasonBytes = 500

func parseReason(s string) (string, error) {
	r := strings.Join(strings.Fields(s), " ")
	if len(r) > MaxReasonBytes {
		return "", argErr(ErrSyntax, "REASON longer than %d bytes", MaxReasonBytes)
	}
	return r, nil
}

func parseMember(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	if len(f) == 0 {
		return Command{}, argErr(ErrSyntax, "give add, remove, key or list")
	}
	op := strings.ToLower(f[0])
	who := func() (string, error) {
		if len(f) < 2 {
			return "", argErr(ErrSyntax, "give the member's address")
		}
		if strings.EqualFold(f[1], "me") && op != "add" {
			return "me", nil
		}
		return parseAddr(f[1])
	}
	switch op {
	case "list":
		if len(f) != 1 {
			return Command{}, argErr(ErrSyntax, "/member list takes no arguments")
		}
		return Command{Name: "member", Args: []string{"list"}}, nil
	case "add":
		a, err := who()
		if err != nil {
			return Command{}, err
		}
		if len(f) != 3 {
			return Command{}, argErr(ErrSyntax, "give the address, then ROLE (src, associate, release-manager, distributor; several joined by commas)")
		}
		roles, err := ParseRoles(f[2])
		if err != nil {
			return Command{}, err
		}
		return Command{Name: "member", Args: []string{"add", a, strings.Join(roles, ",")}}, nil
	case "remove":
		a, err := who()
		if err != nil {
			return Command{}, err
		}
		args := []string{"remove", a}
		if r, err := parseReason(strings.Join(f[2:], " ")); err != nil {
			return Command{}, err
		} else if r != "" {
			args = append(args, r)
		}
		return Command{Name: "member", Args: args}, nil
	case "key":
		a, err := who()
		if err != nil {
			return Command{}, err
		}
		if len(f) != 2 {
			return Command{}, argErr(ErrSyntax, "give only the address (or me); attach the new public key")
		}
		return Command{Name: "member", Args: []string{"key", a}}, nil
	}
	return Command{}, argErr(ErrSyntax, "%q: want add, remove, key or list", f[0])
}

func parseAdmit(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	switch len(f) {
	case 0:
		return Command{Name: "admit"}, nil
	case 1:
		if id, ok := ParseProposalID(f[0]); ok {
			return Command{Name: "admit", Args: []string{id}}, nil
		}
	}
	return Command{}, argErr(ErrSyntax, "give nothing, or the proposal's ID (GOV-YYYY-NNNN)")
}

func parseDeny(l Line) (Command, error) {
	f := strings.Fields(l.Args)
	var args []string
	if len(f) > 0 {
		if id, ok := ParseProposalID(f[0]); ok {
			args, f = append(args, id), f[1:]
		}
	}
	r, err := parseReason(strings.Join(f, " "))
	if err != nil {
		return Command{}, err
	}
	if r == "" {
		return Command{}, argErr(ErrSyntax, "give a REASON: it is sent to the applicant or member concerned")
	}
	return Command{Name: "deny", Args: append(args, r)}, nil
}

const memberHelp = "Change the roster (docs/process.md §5). " +
	"/member add ADDR ROLE adds a member, or changes the roles of one, with the public key attached to the message (application/pgp-keys): the key is checked (not expired, revoked or weak, with an encryption subkey) and pinned by its fingerprint. " +
	"/member remove ADDR [REASON] removes a member; a distributor is sent the removal notice with REASON and how to re-apply. " +
	"/member key ADDR replaces a member's pinned key with the one attached. " +
	"Every change needs [governance] quorum distinct SRC signatures: the first signature opens a proposal (GOV-YYYY-NNNN, with a thread of its own), and the others count when they sign the identical command (with the same key attached) or /admit in its thread, within lazy_consensus_days; any /deny ends it. " +
	"A member may remove themself at once with /member remove me, signed with their own pinned key. " +
	"/member list replies with the roster, each key's state and expiry and where each entry came from. " +
	"Works in a signed message to the security list alone, in any incident's thread, or in a proposal's thread; never together with incident commands. The member concerned and the SRC are told of every change."

const admitHelp = "Approve the proposal whose thread this is: a distributor application or a pending /member change. " +
	"An application passes with [governance] quorum distinct SRC approvals and no /deny, or by lazy consensus lazy_consensus_days after it arrived with at least one approval and no /deny; " +
	"admission pins the applicant's key, adds them to the distributors list and sends them the welcome, encrypted to that key. " +
	"Only in the proposal's thread (security+GOV-YYYY-NNNN@); naming the ID binds the signature to it. A signature made before the proposal opened does not count."

const denyHelp = "Object to the proposal whose thread this is: it ends at once. " +
	"An applicant is sent the refusal with REASON and how to apply again; a /member change is dropped and the SRC told. " +
	"The member a proposal concerns cannot deny it. Only in the proposal's thread (security+GOV-YYYY-NNNN@)."
