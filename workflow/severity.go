package workflow

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Severity is the qualitative rating of an incident (FIRST CVSS v3.1
// specification §5; docs/process.md §4). The zero value means unset.
type Severity int

// The severities, in increasing order.
const (
	SeverityUnset Severity = iota
	SeverityNone
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = [...]string{"unset", "None", "Low", "Medium", "High", "Critical"}

// String returns the rating as FIRST writes it: None, Low, Medium, High, Critical.
func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return "Severity(" + strconv.Itoa(int(s)) + ")"
	}
	return severityNames[s]
}

// ParseSeverity reads a rating in any letter case. GitHub's "moderate" is
// Medium. It never returns SeverityUnset without an error.
func ParseSeverity(s string) (Severity, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none":
		return SeverityNone, nil
	case "low":
		return SeverityLow, nil
	case "medium", "moderate":
		return SeverityMedium, nil
	case "high":
		return SeverityHigh, nil
	case "critical":
		return SeverityCritical, nil
	}
	return SeverityUnset, fmt.Errorf("%w: %q (want none, low, medium, high or critical)", ErrBadSeverity, s)
}

// MarshalText stores a severity by its lower-case name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(strings.ToLower(s.String())), nil }

// UnmarshalText is the inverse of MarshalText.
func (s *Severity) UnmarshalText(b []byte) error {
	if string(b) == "unset" || len(b) == 0 {
		*s = SeverityUnset
		return nil
	}
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// SeverityOf rates a score (FIRST §5): None 0.0, Low 0.1–3.9, Medium 4.0–6.9,
// High 7.0–8.9, Critical 9.0–10.0. The comparison is on tenths, so binary
// representation noise cannot move a boundary.
func SeverityOf(score float64) Severity {
	switch t := math.Round(score * 10); {
	case t <= 0:
		return SeverityNone
	case t < 40:
		return SeverityLow
	case t < 70:
		return SeverityMedium
	case t < 90:
		return SeverityHigh
	default:
		return SeverityCritical
	}
}
