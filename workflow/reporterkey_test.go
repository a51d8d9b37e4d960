package workflow

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseReporterKey(t *testing.T) {
	const fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
	for in, want := range map[string]string{
		"/reporter-key " + fpr:                                             "/reporter-key " + fpr,
		"/reporter-key " + strings.ToLower(fpr):                            "/reporter-key " + fpr,
		"/reporter-key 0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567": "/reporter-key " + fpr,
		"/reporter-key 0x" + fpr:                                           "/reporter-key " + fpr,
		"/reporter-key NONE":                                               "/reporter-key none",
		"/reporter-key " + strings.Repeat("AB", 32):                        "/reporter-key " + strings.Repeat("AB", 32),
		"/reporter-key":                                                    "",
		"/reporter-key 0123456789ABCDEF":                                   "",
		"/reporter-key " + fpr[:39] + "G":                                  "",
		"/reporter-key " + fpr + " " + fpr:                                 "",
	} {
		cmds, err := Parse(in + "\n")
		switch {
		case want == "" && !errors.Is(err, ErrSyntax):
			t.Errorf("%q: %v, want a syntax error", in, err)
		case want != "" && (err != nil || len(cmds) != 1 || cmds[0].String() != want):
			t.Errorf("%q: %v %v, want %q", in, cmds, err, want)
		}
	}
}

// TestReporterKeyCommand: /reporter-key pins one of the keys that arrived,
// or none; the SRC alone may; the receipt says which and how it arrived.
func TestReporterKeyCommand(t *testing.T) {
	const k1, k2 = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	inc := triage()
	inc.ReporterKeys = []ReporterKey{{Fingerprint: k1, At: mon.Add(-time.Hour), Authenticated: "the report"}, {Fingerprint: k2, At: mon.Add(-time.Minute)}}
	inc.PinnedReporterKey = k1
	tests := []struct {
		name, text string
		by         Signer
		pinned     string
		result     string // in the receipt line, or the refusal
		err        error
	}{
		{"pin the other key", "/reporter-key " + k2, alice, k2, "pinned the reporter key " + k2 + " (arrived 2026-11-23 08:59 UTC (Monday), sender not authenticated): mail to the reporter is encrypted to it, in place of " + k1, nil},
		{"already pinned", "/reporter-key " + k1, alice, k1, "is pinned already", nil},
		{"unpin", "/reporter-key none", bob, "", "unpinned the reporter key " + k1, nil},
		{"a key that never arrived", "/reporter-key 3333333333333333333333333333333333333333", alice, k1, "no key with fingerprint 3333333333333333333333333333333333333333 arrived for this incident (the keys that arrived: " + k1, ErrGuard},
		{"an associate may not", "/reporter-key " + k2, carol, k1, "", ErrNotAllowed},
		{"the fix team may not", "/reporter-key " + k2, eng, k1, "", ErrNotAllowed},
		{"the reporter may not", "/reporter-key " + k2, rep, k1, "", ErrNotAllowed},
	}
	for _, tc := range tests {
		in := inc
		in.FixTeam = []string{"eng@ex.org"}
		r, err := Apply(in, tc.text+"\n", at(tc.by, mon), mon, env)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
			continue
		}
		if r.Incident.PinnedReporterKey != tc.pinned {
			t.Errorf("%s: pinned %q, want %q", tc.name, r.Incident.PinnedReporterKey, tc.pinned)
		}
		if text := r.Receipt.Text(); !strings.Contains(text, tc.result) {
			t.Errorf("%s: receipt lacks %q:\n%s", tc.name, tc.result, text)
		}
	}
	// Nothing pinned: none is refused.
	in := inc
	in.PinnedReporterKey = ""
	if _, err := Apply(in, "/reporter-key none\n", at(alice, mon), mon, env); !errors.Is(err, ErrGuard) {
		t.Errorf("none with nothing pinned: %v", err)
	}
	if inc.PinnedReporterKey != k1 || len(inc.ReporterKeys) != 2 {
		t.Error("Apply changed its input")
	}
}
