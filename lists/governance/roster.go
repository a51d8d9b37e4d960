package governance

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Effective is the roster in force: the file's members, each replaced by
// its mail-made entry when there is one (or dropped when that entry is a
// removal), then the members added by mail, in the order they were added.
func Effective(file []lists.Member, st State) []Entry {
	over := map[string]Entry{}
	for _, e := range st.Overrides {
		over[strings.ToLower(e.Email)] = e
	}
	var out []Entry
	seen := map[string]bool{}
	for _, m := range file {
		k := strings.ToLower(m.Email)
		seen[k] = true
		if e, ok := over[k]; ok {
			if !e.Removed {
				out = append(out, e)
			}
			continue
		}
		out = append(out, Entry{Email: k, Name: m.Name, Roles: slices.Clone(m.Roles), Fingerprint: strings.ToUpper(m.Fingerprint), Origin: OriginFile})
	}
	for _, e := range st.Overrides {
		if !seen[strings.ToLower(e.Email)] && !e.Removed {
			out = append(out, e)
		}
	}
	return out
}

// Members is the effective roster as the daemon's lists.Roster.Members.
func Members(file []lists.Member, st State) []lists.Member {
	var out []lists.Member
	for _, e := range Effective(file, st) {
		out = append(out, e.Member())
	}
	return out
}

// PinnedKeys are the armored public keys pinned by mail, by fingerprint,
// for the members of the effective roster: the daemon adds them to the
// keys it loads from keys_dir for the file's members.
func PinnedKeys(file []lists.Member, st State) map[string]string {
	out := map[string]string{}
	for _, e := range Effective(file, st) {
		if e.Key != "" && e.Fingerprint != "" {
			out[strings.ToUpper(e.Fingerprint)] = e.Key
		}
	}
	return out
}

func lookup(roster []Entry, addr string) (Entry, bool) {
	for _, e := range roster {
		if strings.EqualFold(e.Email, addr) {
			return e, true
		}
	}
	return Entry{}, false
}

// src lists the addresses of the SRC in an effective roster.
func src(roster []Entry) []string {
	var out []string
	for _, e := range roster {
		if e.Has(workflow.RoleSRC) {
			out = append(out, strings.ToLower(e.Email))
		}
	}
	return out
}

// SignerOf resolves a verified signature's primary key fingerprint against
// the effective roster: the workflow.Signer both Apply functions take. A
// fingerprint nobody has pinned gives false.
func SignerOf(file []lists.Member, st State, fingerprint string, signedAt time.Time) (workflow.Signer, bool) {
	for _, e := range Effective(file, st) {
		if e.Fingerprint != "" && strings.EqualFold(e.Fingerprint, fingerprint) {
			return workflow.Signer{Fingerprint: strings.ToUpper(fingerprint), Email: strings.ToLower(e.Email), Roles: slices.Clone(e.Roles), SignedAt: signedAt}, true
		}
	}
	return workflow.Signer{}, false
}

// origin describes where an entry came from, for /member list.
func (e Entry) origin() string {
	switch {
	case e.Origin == OriginFile && e.Ref == "":
		return "file"
	case e.Origin == OriginFile:
		return fmt.Sprintf("file; %s by %s %s", e.Change, e.Ref, workflow.FormatInstant(e.Since))
	case e.Change != "" && e.Change != "added":
		return fmt.Sprintf("%s; %s by %s %s", e.Origin, e.Change, e.Ref, workflow.FormatInstant(e.Since))
	}
	return fmt.Sprintf("%s %s, %s", e.Origin, e.Ref, workflow.FormatInstant(e.Since))
}

// keyState describes a member's key at now from the caller's checks.
func keyState(e Entry, states map[string]KeyVerdict, now time.Time) string {
	if e.Fingerprint == "" {
		return "no key pinned"
	}
	v, ok := states[strings.ToUpper(e.Fingerprint)]
	if !ok {
		return "key " + e.Fingerprint + ": not loaded"
	}
	v.Armored = "-" // the state map carries no key material
	problems, warnings := v.check("", now)
	s := "key " + e.Fingerprint
	switch {
	case len(problems) > 0:
		s += ": UNUSABLE: " + strings.Join(problems, "; ")
	case v.Expires.IsZero():
		s += ": valid, no expiry"
	default:
		s += ": valid until " + workflow.FormatInstant(v.Expires)
	}
	if len(warnings) > 0 {
		s += " (" + strings.Join(warnings, "; ") + ")"
	}
	return s
}

// ListText is the /member list reply and `embargo members list`: the
// effective roster with each key's state and expiry and where each entry
// came from, then the file entries a removal by mail shadows, then the open
// proposals.
func ListText(file []lists.Member, st State, states map[string]KeyVerdict, now time.Time) string {
	var b strings.Builder
	roster := Effective(file, st)
	fmt.Fprintf(&b, "Roster as of %s: %d member(s), %d in the SRC.\n", workflow.FormatInstant(now), len(roster), len(src(roster)))
	for _, e := range roster {
		name := e.Email
		if e.Name != "" {
			name = e.Name + " <" + e.Email + ">"
		}
		fmt.Fprintf(&b, "\n  %s\n      roles:  %s\n      %s\n      origin: %s\n", name, strings.Join(e.Roles, ", "), keyState(e, states, now), e.origin())
		if e.Product != "" {
			fmt.Fprintf(&b, "      product: %s\n", e.Product)
		}
	}
	var gone []string
	for _, e := range st.Overrides {
		if !e.Removed {
			continue
		}
		for _, m := range file {
			if strings.EqualFold(m.Email, e.Email) {
				gone = append(gone, fmt.Sprintf("  %s: in the file, removed by %s %s", e.Email, e.Ref, workflow.FormatInstant(e.Since)))
			}
		}
	}
	if len(gone) > 0 {
		b.WriteString("\nShadowed file entries (a removal by mail outlives the file):\n" + strings.Join(gone, "\n") + "\n")
	}
	if open := st.Open(); len(open) > 0 {
		b.WriteString("\nOpen proposals:\n")
		for _, p := range open {
			b.WriteString("  " + p.summary() + "\n")
		}
	}
	return b.String()
}
