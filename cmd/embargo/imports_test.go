package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// forbiddenImports are packages the embargo binary must never link, with
// the reason (docs/threat-model.md §2.6). The list is checked against the
// binary's whole import graph, third-party modules included, so a
// dependency that starts to pull one in fails too.
var forbiddenImports = map[string]string{
	"os/exec":                     "nothing in the daemon runs a program or a shell: a value from mail can never reach a command line",
	"plugin":                      "no code is loaded at run time",
	"golang.org/x/crypto/openpgp": "deprecated and unmaintained; OpenPGP is github.com/ProtonMail/go-crypto only (docs/design.md §1)",
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest":           "the test harness (it runs gpg) is for tests only",
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/postfixtest": "the Postfix test instance (it runs postfix) is for tests only",
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs":   "the power-loss file system is for tests only",
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest":      "the recording relay is for tests only",
	"github.com/embargo-project/embargo/workflow/record/recordtest":              "record fixtures are for tests only",
}

// TestBinaryImports lists the packages `go list -deps` says the embargo
// binary links (tests excluded) and fails on any forbidden one, or on any
// package below it (golang.org/x/crypto/openpgp/armor and the like).
func TestBinaryImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 || !slices.Contains(deps, "go.etcd.io/bbolt") {
		t.Fatalf("go list -deps gave %d packages, without bbolt: not the binary's graph", len(deps))
	}
	for _, d := range deps {
		for bad, why := range forbiddenImports {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				t.Errorf("the embargo binary links %s: %s", d, why)
			}
		}
	}
}
