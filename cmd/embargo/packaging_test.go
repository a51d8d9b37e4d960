package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestSystemdUnit checks that contrib/systemd/embargo.service carries the
// hardening the unit is meant to have, and that systemd-analyze verify accepts it and
// the backup service and timer.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", "embargo.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"ProtectSystem=strict", "NoNewPrivileges=true", "StateDirectory=embargo", "PrivateTmp=true", "ProtectHome=true",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
		"SystemCallFilter=@system-service", "UMask=0077", "ReadWritePaths=/var/lib/embargo",
		"ExecReload=/bin/kill -HUP $MAINPID", "ExecStart=/usr/local/bin/embargo serve --config /etc/embargo/embargo.toml",
	} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("embargo.service lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// verify insists that ExecStart's binary exists: point it at this one.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"embargo.service", "embargo-backup.service", "embargo-backup.timer"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		daemontest.WriteFile(t, p, strings.ReplaceAll(string(b), "/usr/local/bin/embargo", self))
		units = append(units, p)
	}
	// verify prints unknown or misspelt directives but exits 0: any output fails.
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDockerfile checks the image recipe against the issue: multi-stage,
// static binary, CA roots for the relay's TLS, non-root, a volume, a
// HEALTHCHECK that needs no curl.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"AS build", "CGO_ENABLED=0", "COPY --from=build /etc/ssl/certs/ca-certificates.crt",
		"USER embargo", `VOLUME ["/var/lib/embargo"]`, `CMD ["/usr/local/bin/embargo", "healthcheck"`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestReadmeLayout keeps the README's Layout table true: one row per package
// of the module, no row for a package that is gone.
func TestReadmeLayout(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no Layout section")
	}
	if i := strings.Index(table, "\n## "); i >= 0 {
		table = table[:i]
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if pkg, ok := strings.CutPrefix(line, "| `"); ok {
			pkg, _, _ = strings.Cut(pkg, "`")
			if rows[pkg] {
				t.Errorf("README Layout lists %s twice", pkg)
			}
			rows[pkg] = true
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/embargo-project/embargo/"
	for _, p := range strings.Fields(string(out)) {
		p = strings.TrimPrefix(p, module)
		if !rows[p] {
			t.Errorf("package %s has no row in the README's Layout table", p)
		}
		delete(rows, p)
	}
	for p := range rows {
		t.Errorf("the README's Layout table lists %s, which is no package", p)
	}
}
