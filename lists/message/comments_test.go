package message

import "testing"

// TestStripComments: comments go, nested or with quoted-pairs; quoted
// strings stay as written (RFC 5322 §3.2.2, §3.2.4).
func TestStripComments(t *testing.T) {
	for in, want := range map[string]string{
		`a (b; c) d`:             `a   d`,
		`a (b (c; d) e) f`:       `a   f`,
		`a "x (y) z" b`:          `a "x (y) z" b`,
		`a (b \) c) d`:           `a   d`,
		`a "q\"(" (c) d`:         `a "q\"("   d`,
		`mx; dkim=pass (ok; ok)`: `mx; dkim=pass  `,
	} {
		if got := StripComments(in); got != want {
			t.Errorf("StripComments(%q) = %q, want %q", in, got, want)
		}
	}
}
