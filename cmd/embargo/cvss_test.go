package main

import (
	"strings"
	"testing"
)

func TestCVSSCommand(t *testing.T) {
	var out, errb strings.Builder
	rc := runIO([]string{"cvss", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}, nil, &out, &errb)
	want := "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\t9.8\tCritical\nCVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N\t9.3\tCritical\n"
	if rc != 0 || out.String() != want {
		t.Errorf("cvss = %d %q (stderr %q), want 0 %q", rc, out.String(), errb.String(), want)
	}
	out.Reset()
	errb.Reset()
	in := "# vectors\nCVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N\n\nCVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n"
	rc = runIO([]string{"cvss"}, strings.NewReader(in), &out, &errb)
	if rc != 1 {
		t.Errorf("cvss with a bad vector: exit %d, want 1", rc)
	}
	if out.String() != "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N\t0.0\tNone\n" {
		t.Errorf("stdout = %q", out.String())
	}
	if !strings.Contains(errb.String(), "AV") {
		t.Errorf("stderr %q does not name the bad metric AV", errb.String())
	}
}
