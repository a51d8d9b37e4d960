package workflow

import (
	"math"
	"strings"
)

// cvss40Level is one level of an equivalence set (EQ): its depth and its
// highest severity vectors (CVSS v4.0 specification §8.2; the tables are in
// cvss40_tables.go).
type cvss40Level struct {
	depth float64
	max   []string
}

// cvss40Distance is the severity level of each metric value used for the
// distance to a highest severity vector, in tenths, as the FIRST reference
// calculator defines them (cvss_score.js). Only differences of two values of
// the same metric are used.
var cvss40Distance = map[string]map[string]float64{
	"AV": {"N": 0.0, "A": 0.1, "L": 0.2, "P": 0.3},
	"PR": {"N": 0.0, "L": 0.1, "H": 0.2},
	"UI": {"N": 0.0, "P": 0.1, "A": 0.2},
	"AC": {"L": 0.0, "H": 0.1},
	"AT": {"N": 0.0, "P": 0.1},
	"VC": {"H": 0.0, "L": 0.1, "N": 0.2},
	"VI": {"H": 0.0, "L": 0.1, "N": 0.2},
	"VA": {"H": 0.0, "L": 0.1, "N": 0.2},
	"SC": {"H": 0.1, "L": 0.2, "N": 0.3},
	"SI": {"S": 0.0, "H": 0.1, "L": 0.2, "N": 0.3},
	"SA": {"S": 0.0, "H": 0.1, "L": 0.2, "N": 0.3},
	"CR": {"H": 0.0, "M": 0.1, "L": 0.2},
	"IR": {"H": 0.0, "M": 0.1, "L": 0.2},
	"AR": {"H": 0.0, "M": 0.1, "L": 0.2},
}

// score40 computes a CVSS v4.0 score (CVSS-B, -BT, -BE or -BTE, whatever the
// vector defines) with the FIRST reference calculator's arithmetic, in the same
// order of floating-point operations, and its rounding: half up after adding
// 1e-6, so that a tie such as 6.85, computed as 6.8499999999999996, rounds to
// 6.9 as in the reference. get returns a metric's value ("X" when not given).
func score40(get func(string) string) float64 {
	m := cvss40Values(get)
	if m("VC") == "N" && m("VI") == "N" && m("VA") == "N" && m("SC") == "N" && m("SI") == "N" && m("SA") == "N" {
		return 0
	}
	eq := cvss40MacroVector(m)
	value := cvss40MacroScore(eq)
	// 1.a The score of the next lower MacroVector in each EQ (NaN if none).
	nextEQ1, nextEQ2, nextEQ36, nextEQ4, nextEQ5 := cvss40LowerScores(eq)

	// 1.b The severity distance to the first highest severity vector of the
	// MacroVector that is not less severe in any metric.
	l1, l2 := cvss40EQLevels[1][eq[1]], cvss40EQLevels[2][eq[2]]
	l4, l5 := cvss40EQLevels[4][eq[4]], cvss40EQLevels[5][eq[5]]
	l36 := cvss40EQ36Levels[string([]byte{byte('0' + eq[3]), byte('0' + eq[6])})]
	dist := cvss40Distances(m, l1, l2, l36, l4, l5)
	curEQ1 := dist["AV"] + dist["PR"] + dist["UI"]
	curEQ2 := dist["AC"] + dist["AT"]
	curEQ36 := dist["VC"] + dist["VI"] + dist["VA"] + dist["CR"] + dist["IR"] + dist["AR"]
	curEQ4 := dist["SC"] + dist["SI"] + dist["SA"]

	// 1.c, 1.d The available distance, scaled by the proportion of the depth.
	const step = 0.1
	n := 0
	var norm1, norm2, norm36, norm4, norm5 float64
	if avail := value - nextEQ1; !math.IsNaN(avail) {
		n++
		norm1 = avail * (curEQ1 / (l1.depth * step))
	}
	if avail := value - nextEQ2; !math.IsNaN(avail) {
		n++
		norm2 = avail * (curEQ2 / (l2.depth * step))
	}
	if avail := value - nextEQ36; !math.IsNaN(avail) {
		n++
		norm36 = avail * (curEQ36 / (l36.depth * step))
	}
	if avail := value - nextEQ4; !math.IsNaN(avail) {
		n++
		norm4 = avail * (curEQ4 / (l4.depth * step))
	}
	if avail := value - nextEQ5; !math.IsNaN(avail) {
		n++ // EQ5 has one metric: its proportion is always 0
		norm5 = avail * 0
	}

	// 2, 3 The mean of the proportional distances, taken off the MacroVector
	// score, rounded as the reference does.
	mean := 0.0
	if n != 0 {
		mean = (norm1 + norm2 + norm36 + norm4 + norm5) / float64(n)
	}
	value -= mean
	value = math.Max(0, math.Min(10, value))
	return math.Floor((value+1e-6)*10+0.5) / 10
}

// cvss40Values returns the value of a metric that counts: a modified metric
// when given, X threat and requirement metrics at their worst case.
func cvss40Values(get func(string) string) func(string) string {
	return func(metric string) string {
		v := get(metric)
		switch metric {
		case "E":
			if v == "X" {
				return "A"
			}
			return v
		case "CR", "IR", "AR":
			if v == "X" {
				return "H"
			}
			return v
		}
		if mv := get("M" + metric); mv != "" && mv != "X" {
			return mv
		}
		return v
	}
}

// cvss40MacroVector is the level of each equivalence set (§8.1): eq[1] … eq[6].
func cvss40MacroVector(m func(string) string) [7]int {
	var eq [7]int
	av, pr, ui := m("AV"), m("PR"), m("UI")
	switch {
	case av == "N" && pr == "N" && ui == "N":
		eq[1] = 0
	case (av == "N" || pr == "N" || ui == "N") && av != "P":
		eq[1] = 1
	default:
		eq[1] = 2
	}
	if !(m("AC") == "L" && m("AT") == "N") {
		eq[2] = 1
	}
	vc, vi, va := m("VC"), m("VI"), m("VA")
	switch {
	case vc == "H" && vi == "H":
		eq[3] = 0
	case vc == "H" || vi == "H" || va == "H":
		eq[3] = 1
	default:
		eq[3] = 2
	}
	switch {
	case m("SI") == "S" || m("SA") == "S":
		eq[4] = 0
	case m("SC") == "H" || m("SI") == "H" || m("SA") == "H":
		eq[4] = 1
	default:
		eq[4] = 2
	}
	switch m("E") {
	case "A":
		eq[5] = 0
	case "P":
		eq[5] = 1
	default:
		eq[5] = 2
	}
	if !((m("CR") == "H" && vc == "H") || (m("IR") == "H" && vi == "H") || (m("AR") == "H" && va == "H")) {
		eq[6] = 1
	}
	return eq
}

// cvss40MacroScore is the score of a MacroVector, NaN for one that does not
// exist.
func cvss40MacroScore(e [7]int) float64 {
	var b [6]byte
	for i := 1; i <= 6; i++ {
		b[i-1] = byte('0' + e[i])
	}
	if s, ok := cvss40MacroScores[string(b[:])]; ok {
		return s
	}
	return math.NaN()
}

// cvss40LowerScores are the scores of the next lower MacroVector in each EQ
// (NaN where there is none); EQ3 and EQ6 step together.
func cvss40LowerScores(eq [7]int) (nextEQ1, nextEQ2, nextEQ36, nextEQ4, nextEQ5 float64) {
	lower := func(i int) float64 {
		e := eq
		e[i]++
		return cvss40MacroScore(e)
	}
	nextEQ1, nextEQ2, nextEQ4, nextEQ5 = lower(1), lower(2), lower(4), lower(5)
	switch {
	case eq[3] == 0 && eq[6] == 0: // 00 → 01 or 10, whichever scores higher
		left, right := lower(6), lower(3)
		if left > right {
			nextEQ36 = left
		} else {
			nextEQ36 = right
		}
	case eq[3] == 1 && eq[6] == 0: // 10 → 11
		nextEQ36 = lower(6)
	case eq[3] == 2 && eq[6] == 1: // 21 → 32 does not exist
		nextEQ36 = math.NaN()
	default: // 01 → 11, 11 → 21
		nextEQ36 = lower(3)
	}
	return nextEQ1, nextEQ2, nextEQ36, nextEQ4, nextEQ5
}

// cvss40Distances is each metric's severity distance to the first highest
// severity vector of the MacroVector (the levels' max vectors, combined in
// the reference's order) that is not less severe in any metric.
func cvss40Distances(m func(string) string, l1, l2, l36, l4, l5 cvss40Level) map[string]float64 {
	order := []string{"AV", "PR", "UI", "AC", "AT", "VC", "VI", "VA", "SC", "SI", "SA", "CR", "IR", "AR"}
	try := func(maxVector string) map[string]float64 {
		mx := parseMetrics(maxVector)
		dd := make(map[string]float64, len(order))
		for _, k := range order {
			dd[k] = cvss40Distance[k][m(k)] - cvss40Distance[k][mx[k]]
			if dd[k] < 0 {
				return nil
			}
		}
		return dd
	}
	for _, a := range l1.max {
		for _, b := range l2.max {
			for _, c := range l36.max {
				for _, d := range l4.max {
					for _, e := range l5.max {
						if dd := try(a + "/" + b + "/" + c + "/" + d + "/" + e); dd != nil {
							return dd
						}
					}
				}
			}
		}
	}
	return map[string]float64{} // cannot happen for a valid vector; keep the MacroVector score
}

// parseMetrics reads "AV:N/PR:N/…" into a map.
func parseMetrics(s string) map[string]string {
	out := make(map[string]string)
	for _, part := range strings.Split(s, "/") {
		if k, v, ok := strings.Cut(part, ":"); ok {
			out[k] = v
		}
	}
	return out
}
