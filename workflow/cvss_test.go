package workflow

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	gocvss31 "github.com/pandatix/go-cvss/31"
	gocvss40 "github.com/pandatix/go-cvss/40"
)

func TestParseCVSS(t *testing.T) {
	tests := []struct {
		vector   string
		score    string
		severity Severity
		canon    string // "" = same as vector
	}{
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "9.8", SeverityCritical, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", "9.9", SeverityCritical, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", "10.0", SeverityCritical, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N", "5.4", SeverityMedium, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", "6.1", SeverityMedium, ""},
		{"CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", "7.8", SeverityHigh, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "7.5", SeverityHigh, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", "0.0", SeverityNone, ""},
		{"CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", "1.6", SeverityLow, ""},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:F/RL:O/RC:C", "9.1", SeverityCritical, ""},
		{"CVSS:3.1/S:U/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H", "9.8", SeverityCritical, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:X", "9.8", SeverityCritical, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", "9.3", SeverityCritical, ""},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", "10.0", SeverityCritical, ""},
		{"CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", "8.5", SeverityHigh, ""},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", "0.0", SeverityNone, ""},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U", "8.1", SeverityHigh, ""},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:X/CR:X", "9.3", SeverityCritical, "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"},
	}
	for _, tt := range tests {
		c, err := ParseCVSS(tt.vector)
		if err != nil {
			t.Errorf("ParseCVSS(%q): %v", tt.vector, err)
			continue
		}
		canon := tt.canon
		if canon == "" {
			canon = tt.vector
		}
		if c.ScoreText() != tt.score || c.Severity() != tt.severity || c.Vector != canon {
			t.Errorf("ParseCVSS(%q) = %s %s %s, want %s %s %s", tt.vector, c.ScoreText(), c.Severity(), c.Vector, tt.score, tt.severity, canon)
		}
	}
}

func TestParseCVSSErrors(t *testing.T) {
	tests := []struct{ vector, want string }{
		{"CVSS:3.1/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "base metric AV missing"},
		{"CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "AV:Q: bad value (want N, A, L or P)"},
		{"CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "metric AV given twice"},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/", "empty metric (a doubled or trailing /)"},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:Y", "unknown metric XX for CVSS 3.1"},
		{"cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "a vector starts with CVSS:3.1/ or CVSS:4.0/ (upper case)"},
		{" CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "a vector starts with CVSS:3.1/ or CVSS:4.0/ (upper case)"},
		{"CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS 3.0 is not scored; write the vector with the CVSS:3.1/ prefix"},
		{"CVSS:4.0/AC:L/AV:N/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", "metric AV out of order: CVSS 4.0 lists metrics in the specification's order (AV/AC/AT/PR/UI/VC/VI/VA/SC/SI/SA/…)"},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N", "base metric SA missing"},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:S/SA:N", "SI:S: bad value (want H, L or N)"},
		{"CVSS:4.0/AV:N", "base metric AC missing"},
		{"", "a vector starts with CVSS:3.1/ or CVSS:4.0/ (upper case)"},
	}
	for _, tt := range tests {
		_, err := ParseCVSS(tt.vector)
		if err == nil || err.Error() != tt.want || !errors.Is(err, ErrBadCVSS) {
			t.Errorf("ParseCVSS(%q) error = %v, want %q", tt.vector, err, tt.want)
		}
	}
}

func TestScoreLine(t *testing.T) {
	got, err := ScoreLine(" CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n")
	if want := "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\t9.8\tCritical"; err != nil || got != want {
		t.Errorf("ScoreLine = %q, %v, want %q", got, err, want)
	}
	_, err = ScoreLine("CVSS:3.1/AV:N")
	if want := "CVSS:3.1/AV:N: base metric AC missing"; err == nil || err.Error() != want {
		t.Errorf("ScoreLine error = %v, want %q", err, want)
	}
}

func TestSeverityOf(t *testing.T) {
	for _, tt := range []struct {
		score float64
		want  Severity
	}{{0, SeverityNone}, {0.1, SeverityLow}, {3.9, SeverityLow}, {4.0, SeverityMedium}, {6.9, SeverityMedium},
		{7.0, SeverityHigh}, {8.9, SeverityHigh}, {9.0, SeverityCritical}, {10, SeverityCritical}, {3.9999999, SeverityMedium}} {
		if got := SeverityOf(tt.score); got != tt.want {
			t.Errorf("SeverityOf(%v) = %v, want %v", tt.score, got, tt.want)
		}
	}
}

// cvss40Base enumerates every CVSS 4.0 base vector in the order of
// contrib/cvss/gen.js: specification order, the last metric fastest.
func cvss40Base(f func(string)) {
	metrics := []struct {
		name   string
		values []string
	}{
		{"AV", []string{"N", "A", "L", "P"}}, {"AC", []string{"L", "H"}}, {"AT", []string{"N", "P"}},
		{"PR", []string{"N", "L", "H"}}, {"UI", []string{"N", "P", "A"}},
		{"VC", []string{"H", "L", "N"}}, {"VI", []string{"H", "L", "N"}}, {"VA", []string{"H", "L", "N"}},
		{"SC", []string{"H", "L", "N"}}, {"SI", []string{"H", "L", "N"}}, {"SA", []string{"H", "L", "N"}},
	}
	var rec func(i int, v string)
	rec = func(i int, v string) {
		if i == len(metrics) {
			f(v)
			return
		}
		for _, x := range metrics[i].values {
			sep := "/"
			if i == 0 {
				sep = ""
			}
			rec(i+1, v+sep+metrics[i].name+":"+x)
		}
	}
	rec(0, "CVSS:4.0/")
}

func readGzipLines(t *testing.T, path string) (header, lines []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	s := bufio.NewScanner(z)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "#") {
			header = append(header, s.Text())
			continue
		}
		lines = append(lines, s.Text())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return header, lines
}

// TestCVSS40Reference checks the score of every one of the 104,976 CVSS 4.0
// base vectors against the FIRST reference (contrib/cvss/gen.js), and counts
// how many go-cvss's own Score gets wrong: that count is why score40 exists.
func TestCVSS40Reference(t *testing.T) {
	header, want := readGzipLines(t, "testdata/cvss40-base.txt.gz")
	var sum string
	for _, h := range header {
		if _, s, ok := strings.Cut(h, "sha256 of the \"VECTOR SCORE\\n\" lines: "); ok {
			sum = s
		}
	}
	h := sha256.New()
	i, ours, theirs := 0, 0, 0
	var examples []string
	cvss40Base(func(v string) {
		if i >= len(want) {
			i++
			return
		}
		fmt.Fprintf(h, "%s %s\n", v, want[i])
		c, err := ParseCVSS(v)
		if err != nil {
			t.Fatalf("ParseCVSS(%q): %v", v, err)
		}
		if c.ScoreText() != want[i] {
			ours++
			if ours <= 10 {
				t.Errorf("ParseCVSS(%q).Score = %s, want %s", v, c.ScoreText(), want[i])
			}
		}
		g, _ := gocvss40.ParseVector(v)
		if gs := strconv.FormatFloat(g.Score(), 'f', 1, 64); gs != want[i] {
			theirs++
			if len(examples) < 3 {
				examples = append(examples, v+" go-cvss "+gs+" reference "+want[i])
			}
		}
		i++
	})
	if i != 104976 || len(want) != 104976 {
		t.Fatalf("enumerated %d vectors, reference has %d, want 104976", i, len(want))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		t.Fatalf("rebuilt reference table has SHA-256 %s, header says %s: enumeration order differs from contrib/cvss/gen.js", got, sum)
	}
	if ours != 0 {
		t.Errorf("%d of 104976 CVSS 4.0 base vectors score differently from the reference", ours)
	}
	// The measurement behind the workaround (docs/dependencies.md §6): go-cvss v0.6.4
	// is 0.1 low on 450 vectors. If this changes, go-cvss was fixed or changed.
	t.Logf("go-cvss Score differs from the reference on %d of 104976 base vectors, e.g. %v", theirs, examples)
	if theirs != 450 {
		t.Errorf("go-cvss differs on %d vectors, measured 450 with v0.6.4: re-check the workaround", theirs)
	}
}

// TestCVSS31Reference checks every CVSS 3.1 base vector and 3000 seeded random
// vectors with temporal and environmental metrics against the reference.
func TestCVSS31Reference(t *testing.T) {
	_, lines := readGzipLines(t, "testdata/cvss31-sample.txt.gz")
	if len(lines) != 2592+3000 {
		t.Fatalf("reference has %d vectors, want %d", len(lines), 2592+3000)
	}
	bad := 0
	for _, l := range lines {
		v, want, _ := strings.Cut(l, " ")
		c, err := ParseCVSS(v)
		if err != nil {
			t.Errorf("ParseCVSS(%q): %v", v, err)
			continue
		}
		if c.ScoreText() != want {
			bad++
			if bad <= 10 {
				t.Errorf("ParseCVSS(%q).Score = %s, want %s", v, c.ScoreText(), want)
			}
		}
		// The canonical vector scores the same.
		if c2, err := ParseCVSS(c.Vector); err != nil || c2.Score != c.Score {
			t.Errorf("ParseCVSS(%q) (canonical of %q) = %v, %v", c.Vector, v, c2, err)
		}
		if _, err := gocvss31.ParseVector(c.Vector); err != nil {
			t.Errorf("go-cvss rejects canonical %q: %v", c.Vector, err)
		}
	}
	if bad != 0 {
		t.Errorf("%d of %d CVSS 3.1 vectors score differently from the reference", bad, len(lines))
	}
}

// TestCVSS40ReferenceSample checks 3000 seeded random v4.0 vectors with
// threat, environmental and supplemental metrics (CVSS-BTE) against the
// reference: the modified metrics and the X defaults of score40.
func TestCVSS40ReferenceSample(t *testing.T) {
	_, lines := readGzipLines(t, "testdata/cvss40-sample.txt.gz")
	if len(lines) != 3000 {
		t.Fatalf("reference has %d vectors, want 3000", len(lines))
	}
	bad := 0
	for _, l := range lines {
		v, want, _ := strings.Cut(l, " ")
		c, err := ParseCVSS(v)
		if err != nil {
			t.Errorf("ParseCVSS(%q): %v", v, err)
			continue
		}
		if c.ScoreText() != want {
			bad++
			if bad <= 10 {
				t.Errorf("ParseCVSS(%q).Score = %s, want %s", v, c.ScoreText(), want)
			}
		}
	}
	if bad != 0 {
		t.Errorf("%d of 3000 CVSS 4.0 vectors score differently from the reference", bad)
	}
}

func TestSeverityText(t *testing.T) {
	for s := SeverityNone; s <= SeverityCritical; s++ {
		if got, err := ParseSeverity(s.String()); err != nil || got != s {
			t.Errorf("ParseSeverity(%q) = %v, %v", s, got, err)
		}
		b, _ := s.MarshalText()
		var back Severity
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("UnmarshalText(%q) = %v, %v", b, back, err)
		}
	}
	if _, err := ParseSeverity("severe"); !errors.Is(err, ErrBadSeverity) {
		t.Errorf("ParseSeverity(severe) error = %v", err)
	}
}
