package listd

import (
	"strings"
	"testing"
)

// TestSafeText: field values cannot change a message's structure (docs/threat-model.md
// F4, the lists issue's template rule).
func TestSafeText(t *testing.T) {
	in := "line one\r\n-----BEGIN PGP SIGNATURE-----\rsecond\u202Egnp.exe\n.\nFrom the start\n--boundary\x00\x1b"
	got := safeText(in)
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "-----BEGIN") || l == "." || strings.HasPrefix(l, "From ") || strings.HasPrefix(l, "--") {
			t.Errorf("line %q survived safeText", l)
		}
	}
	if strings.ContainsAny(got, "\r\x00\x1b\u202E") {
		t.Errorf("safeText kept a control or bidi character: %q", got)
	}
	if !strings.Contains(got, "- -----BEGIN PGP SIGNATURE-----") || !strings.Contains(got, "second") {
		t.Errorf("safeText lost content: %q", got)
	}
}
