package workflow

import (
	"fmt"
	"strconv"
	"strings"

	gocvss31 "github.com/pandatix/go-cvss/31"
	gocvss40 "github.com/pandatix/go-cvss/40"
)

// CVSS is a parsed CVSS v3.1 or v4.0 vector. The incident stores only the
// vector (the source of truth); score and severity are computed from it on
// demand (docs/dependencies.md §6).
type CVSS struct {
	Vector  string  // canonical form: the specification's metric order, "X" values left out
	Version string  // "3.1" or "4.0"
	Score   float64 // one decimal
}

// Severity rates the score (FIRST §5).
func (c CVSS) Severity() Severity { return SeverityOf(c.Score) }

// ScoreText formats the score with one decimal, as the calculators do.
func (c CVSS) ScoreText() string { return strconv.FormatFloat(c.Score, 'f', 1, 64) }

// metricSpec is one metric of a CVSS version and the values it allows.
type metricSpec struct {
	name   string
	values []string
	base   bool // mandatory
}

// The metrics of CVSS v3.1 (specification §2–§4) and v4.0 (§2–§4), in
// specification order.
var (
	cvss31Metrics = []metricSpec{
		{"AV", []string{"N", "A", "L", "P"}, true}, {"AC", []string{"L", "H"}, true},
		{"PR", []string{"N", "L", "H"}, true}, {"UI", []string{"N", "R"}, true},
		{"S", []string{"U", "C"}, true}, {"C", []string{"H", "L", "N"}, true},
		{"I", []string{"H", "L", "N"}, true}, {"A", []string{"H", "L", "N"}, true},
		{"E", []string{"X", "U", "P", "F", "H"}, false}, {"RL", []string{"X", "O", "T", "W", "U"}, false},
		{"RC", []string{"X", "U", "R", "C"}, false},
		{"CR", []string{"X", "L", "M", "H"}, false}, {"IR", []string{"X", "L", "M", "H"}, false},
		{"AR", []string{"X", "L", "M", "H"}, false}, {"MAV", []string{"X", "N", "A", "L", "P"}, false},
		{"MAC", []string{"X", "L", "H"}, false}, {"MPR", []string{"X", "N", "L", "H"}, false},
		{"MUI", []string{"X", "N", "R"}, false}, {"MS", []string{"X", "U", "C"}, false},
		{"MC", []string{"X", "N", "L", "H"}, false}, {"MI", []string{"X", "N", "L", "H"}, false},
		{"MA", []string{"X", "N", "L", "H"}, false},
	}
	cvss40Metrics = []metricSpec{
		{"AV", []string{"N", "A", "L", "P"}, true}, {"AC", []string{"L", "H"}, true},
		{"AT", []string{"N", "P"}, true}, {"PR", []string{"N", "L", "H"}, true},
		{"UI", []string{"N", "P", "A"}, true}, {"VC", []string{"H", "L", "N"}, true},
		{"VI", []string{"H", "L", "N"}, true}, {"VA", []string{"H", "L", "N"}, true},
		{"SC", []string{"H", "L", "N"}, true}, {"SI", []string{"H", "L", "N"}, true},
		{"SA", []string{"H", "L", "N"}, true},
		{"E", []string{"X", "A", "P", "U"}, false},
		{"CR", []string{"X", "H", "M", "L"}, false}, {"IR", []string{"X", "H", "M", "L"}, false},
		{"AR", []string{"X", "H", "M", "L"}, false}, {"MAV", []string{"X", "N", "A", "L", "P"}, false},
		{"MAC", []string{"X", "L", "H"}, false}, {"MAT", []string{"X", "N", "P"}, false},
		{"MPR", []string{"X", "N", "L", "H"}, false}, {"MUI", []string{"X", "N", "P", "A"}, false},
		{"MVC", []string{"X", "H", "L", "N"}, false}, {"MVI", []string{"X", "H", "L", "N"}, false},
		{"MVA", []string{"X", "H", "L", "N"}, false}, {"MSC", []string{"X", "H", "L", "N"}, false},
		{"MSI", []string{"X", "S", "H", "L", "N"}, false}, {"MSA", []string{"X", "S", "H", "L", "N"}, false},
		{"S", []string{"X", "N", "P"}, false}, {"AU", []string{"X", "N", "Y"}, false},
		{"R", []string{"X", "A", "U", "I"}, false}, {"V", []string{"X", "D", "C"}, false},
		{"RE", []string{"X", "L", "M", "H"}, false}, {"U", []string{"X", "Clear", "Green", "Amber", "Red"}, false},
	}
)

// ParseCVSS validates a CVSS v3.1 or v4.0 vector and scores it. Errors name
// the offending metric ("base metric AV missing", "AV:Q: bad value ...").
// Parsing is pandatix/go-cvss's; v4.0 scoring is this package's own (see
// score40), because go-cvss rounds 450 of the 104,976 base vectors 0.1 lower
// than the FIRST reference (pandatix/go-cvss#292).
func ParseCVSS(vector string) (CVSS, error) {
	var (
		version string
		metrics []metricSpec
	)
	switch {
	case strings.HasPrefix(vector, "CVSS:3.1/"):
		version, metrics = "3.1", cvss31Metrics
	case strings.HasPrefix(vector, "CVSS:4.0/"):
		version, metrics = "4.0", cvss40Metrics
	case strings.HasPrefix(strings.ToUpper(vector), "CVSS:3.0/"):
		return CVSS{}, argErr(ErrBadCVSS, "CVSS 3.0 is not scored; write the vector with the CVSS:3.1/ prefix")
	default:
		return CVSS{}, argErr(ErrBadCVSS, "a vector starts with CVSS:3.1/ or CVSS:4.0/ (upper case)")
	}
	if err := checkMetrics(vector[len("CVSS:3.1/"):], version, metrics); err != nil {
		return CVSS{}, err
	}
	switch version {
	case "3.1":
		v, err := gocvss31.ParseVector(vector)
		if err != nil {
			return CVSS{}, argErr(ErrBadCVSS, "%v", err)
		}
		score := v.BaseScore()
		if defined(v.Get, cvss31Metrics[11:]) { // CR onwards: environmental
			score = v.EnvironmentalScore()
		} else if defined(v.Get, cvss31Metrics[8:11]) { // E, RL, RC: temporal
			score = v.TemporalScore()
		}
		return CVSS{Vector: v.Vector(), Version: version, Score: score}, nil
	default:
		v, err := gocvss40.ParseVector(vector)
		if err != nil {
			return CVSS{}, argErr(ErrBadCVSS, "%v", err)
		}
		get := func(m string) string {
			s, _ := v.Get(m)
			return s
		}
		return CVSS{Vector: v.Vector(), Version: version, Score: score40(get)}, nil
	}
}

func defined(get func(string) (string, error), ms []metricSpec) bool {
	for _, m := range ms {
		if s, err := get(m.name); err == nil && s != "X" {
			return true
		}
	}
	return false
}

// checkMetrics gives the precise error go-cvss does not: which metric is
// missing, unknown, repeated, out of order or has a bad value.
func checkMetrics(body, version string, metrics []metricSpec) error {
	index := make(map[string]int, len(metrics))
	for i, m := range metrics {
		index[m.name] = i
	}
	seen := make(map[string]bool)
	last := -1
	for _, part := range strings.Split(body, "/") {
		if part == "" {
			return argErr(ErrBadCVSS, "empty metric (a doubled or trailing /)")
		}
		name, value, ok := strings.Cut(part, ":")
		if !ok {
			return argErr(ErrBadCVSS, "%q is not METRIC:VALUE", part)
		}
		i, known := index[name]
		if !known {
			return argErr(ErrBadCVSS, "unknown metric %s for CVSS %s", name, version)
		}
		if seen[name] {
			return argErr(ErrBadCVSS, "metric %s given twice", name)
		}
		seen[name] = true
		if !contains(metrics[i].values, value) {
			return argErr(ErrBadCVSS, "%s:%s: bad value (want %s)", name, value, orList(metrics[i].values))
		}
		if version == "4.0" && i < last {
			return argErr(ErrBadCVSS, "metric %s out of order: CVSS 4.0 lists metrics in the specification's order (%s)", name, metricOrder(metrics))
		}
		last = i
	}
	for _, m := range metrics {
		if m.base && !seen[m.name] {
			return argErr(ErrBadCVSS, "base metric %s missing", m.name)
		}
	}
	return nil
}

func metricOrder(ms []metricSpec) string {
	var b strings.Builder
	for i, m := range ms {
		if !m.base {
			break
		}
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(m.name)
	}
	return b.String() + "/…"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// orList writes "N, A, L or P".
func orList(vs []string) string {
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}

// ScoreLine is one output line of `embargo cvss`: the vector as given, its
// score with one decimal and its severity, separated by tabs. The error names
// the vector and the offending metric.
func ScoreLine(vector string) (string, error) {
	vector = strings.TrimSpace(vector)
	c, err := ParseCVSS(vector)
	if err != nil {
		return "", fmt.Errorf("%s: %w", vector, err)
	}
	return vector + "\t" + c.ScoreText() + "\t" + c.Severity().String(), nil
}
