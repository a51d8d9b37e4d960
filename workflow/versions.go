package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// VersionRange is one line of the advisory's affected or fixed field, as
// ReadVersions understood it. The incident stores the text the SRC wrote; the
// reading is recomputed from it wherever a record needs it (the CVE draft, the
// OSV record, the receipt), so the stored value never disagrees with its
// interpretation. Versions are semantic versions (semver.org) without the
// leading "v" a line may have.
//
// A parsed line is one of:
//
//	Version set:               one version ("1.2.3"); in the fixed field, a fixed release
//	Introduced and Fixed:      Introduced ≤ v < Fixed          ("< 1.2.4", ">= 1.0.0, < 1.2.4")
//	Introduced and LastAffected: Introduced ≤ v ≤ LastAffected ("<= 1.2.3", "1.0.0 - 1.2.3")
//	Introduced alone:          Introduced ≤ v, no fix yet      (">= 1.0.0", "all")
//
// Introduced is "0" when the line gives no lower bound: every version before
// the upper bound (the convention of both CVE and OSV records).
type VersionRange struct {
	Text         string // the line as written, surrounding white space trimmed
	Component    string // a leading component name ("kubelet 1.30.0 - 1.30.4"), else ""
	Version      string
	Introduced   string
	Fixed        string
	LastAffected string
	Prose        bool // not a version or range: kept as text only
}

// semverText is a semantic version (semver.org §2, §9, §10), with an optional
// leading "v" (Go modules and many tags write one).
const semverText = `v?(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)` +
	`(?:-(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?` +
	`(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?`

var (
	semverOnly = regexp.MustCompile(`^` + semverText + `$`)
	// ">= A", "< B", "<= B", ">= A, < B", ">= A <= B" (comma optional).
	constraintPattern = regexp.MustCompile(`^(?:>=\s*(` + semverText + `))?\s*,?\s*(?:(<=|<)\s*(` + semverText + `))?$`)
	// A component name: starts with a letter, no white space; "v1.2.3" is a version.
	componentPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._/@:+-]{0,127}$`)
)

// ReadVersions reads the affected field: one range a line, blank lines
// skipped. See VersionRange for the forms.
func ReadVersions(text string) []VersionRange {
	var out []VersionRange
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, readRange(l))
		}
	}
	return out
}

// ReadFixedVersions reads the fixed field: one fixed release a line
// ("1.2.4", "kubelet v1.30.5"), one per branch; anything else is prose.
func ReadFixedVersions(text string) []VersionRange {
	var out []VersionRange
	for _, r := range ReadVersions(text) {
		if r.Version == "" {
			r = VersionRange{Text: r.Text, Prose: true}
		}
		out = append(out, r)
	}
	return out
}

func readRange(line string) VersionRange {
	if r, ok := parseRangeExpr(line); ok {
		r.Text = line
		return r
	}
	if name, rest, ok := strings.Cut(line, " "); ok && componentPattern.MatchString(name) && !semverOnly.MatchString(name) && !isAll(name) {
		if r, ok := parseRangeExpr(strings.TrimSpace(rest)); ok {
			r.Text, r.Component = line, name
			return r
		}
	}
	return VersionRange{Text: line, Prose: true}
}

func isAll(s string) bool { return s == "*" || strings.EqualFold(s, "all") }

// parseRangeExpr reads a range without a component name.
func parseRangeExpr(s string) (VersionRange, bool) {
	s = strings.TrimSpace(strings.ReplaceAll(s, "–", " - ")) // an en dash, as word processors write ranges
	switch {
	case isAll(s):
		return VersionRange{Introduced: "0"}, true
	case semverOnly.MatchString(s):
		return VersionRange{Version: bare(s)}, true
	}
	if lo, hi, ok := strings.Cut(s, " - "); ok {
		lo, hi = strings.TrimSpace(lo), strings.TrimSpace(hi)
		if semverOnly.MatchString(lo) && semverOnly.MatchString(hi) {
			return VersionRange{Introduced: bare(lo), LastAffected: bare(hi)}, true
		}
		return VersionRange{}, false
	}
	m := constraintPattern.FindStringSubmatch(s)
	if m == nil || (m[1] == "" && m[2] == "") {
		return VersionRange{}, false
	}
	r := VersionRange{Introduced: "0"}
	if m[1] != "" {
		r.Introduced = bare(m[1])
	}
	switch m[2] {
	case "<":
		r.Fixed = bare(m[3])
	case "<=":
		r.LastAffected = bare(m[3])
	}
	return r, true
}

func bare(v string) string { return strings.TrimPrefix(v, "v") }

// check refuses a range whose bounds are the wrong way round: a line that
// reads as a range but can match no version is a typo, not prose.
func (r VersionRange) check() error {
	switch {
	case r.Introduced == "" || r.Introduced == "0":
	case r.Fixed != "" && CompareSemver(r.Introduced, r.Fixed) >= 0:
		return fmt.Errorf("%q: %s is not below %s, so no version is affected", r.Text, r.Introduced, r.Fixed)
	case r.LastAffected != "" && CompareSemver(r.Introduced, r.LastAffected) > 0:
		return fmt.Errorf("%q: %s is above %s, so no version is affected", r.Text, r.Introduced, r.LastAffected)
	}
	return nil
}

// Reading says in words how a line was read, for the /set receipt.
func (r VersionRange) Reading(fixedField bool) string {
	var s string
	switch {
	case r.Prose && fixedField:
		return "not a version: kept as text"
	case r.Prose:
		return "not a version range: kept as text; the records give the status of the versions as unknown"
	case r.Version != "" && fixedField:
		s = "fixed in " + r.Version
	case r.Version != "":
		s = "version " + r.Version + " only"
	case r.Fixed != "" && r.Introduced == "0":
		s = "every version before " + r.Fixed
	case r.Fixed != "":
		s = r.Introduced + " and later, before " + r.Fixed
	case r.LastAffected != "" && r.Introduced == "0":
		s = "every version up to and including " + r.LastAffected
	case r.LastAffected != "":
		s = r.Introduced + " up to and including " + r.LastAffected
	case r.Introduced == "0":
		s = "every version (no fix yet)"
	default:
		s = r.Introduced + " and every later version (no fix yet)"
	}
	if r.Component != "" {
		s = r.Component + ": " + s
	}
	return s
}

// CompareSemver orders two semantic versions by precedence (semver.org §11):
// -1, 0 or 1. A leading "v" is ignored; so is build metadata.
func CompareSemver(a, b string) int {
	a, b = bare(a), bare(b)
	a, _, _ = strings.Cut(a, "+")
	b, _, _ = strings.Cut(b, "+")
	ac, apre, _ := strings.Cut(a, "-")
	bc, bpre, _ := strings.Cut(b, "-")
	as, bs := strings.Split(ac, "."), strings.Split(bc, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := compareNumeric(as[i], bs[i]); c != 0 {
			return c
		}
	}
	if c := len(as) - len(bs); c != 0 {
		return sign(c)
	}
	switch {
	case apre == bpre:
		return 0
	case apre == "":
		return 1 // a release is above its pre-releases (§11.3)
	case bpre == "":
		return -1
	}
	ap, bp := strings.Split(apre, "."), strings.Split(bpre, ".")
	for i := 0; i < len(ap) && i < len(bp); i++ {
		an, aerr := strconv.ParseUint(ap[i], 10, 64)
		bn, berr := strconv.ParseUint(bp[i], 10, 64)
		switch {
		case aerr == nil && berr == nil:
			if an != bn {
				return cmpUint(an, bn)
			}
		case aerr == nil:
			return -1 // numeric identifiers sort below alphanumeric ones (§11.4.3)
		case berr == nil:
			return 1
		default:
			if c := strings.Compare(ap[i], bp[i]); c != 0 {
				return c
			}
		}
	}
	return sign(len(ap) - len(bp))
}

// compareNumeric compares two decimal strings without leading zeros of any
// length.
func compareNumeric(a, b string) int {
	if len(a) != len(b) {
		return sign(len(a) - len(b))
	}
	return strings.Compare(a, b)
}

func cmpUint(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
