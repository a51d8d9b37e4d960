package main

import (
	"bytes"
	"encoding"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
)

var updateContrib = flag.Bool("update-contrib", false, "rewrite contrib/embargo.toml from embargo.toml.tmpl")

// runCLI runs an embargo command line in-process.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("embargo %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestInitPassesCheck: what embargo init writes is a configuration embargo
// check accepts, with and without --demo, and it prints the DNS records.
func TestInitPassesCheck(t *testing.T) {
	for _, demo := range []bool{false, true} {
		name := "production"
		if demo {
			name = "demo"
		}
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "etc")
			args := []string{"init", dir, "--domain", "example.net"}
			if demo {
				args = append(args, "--demo")
			}
			out := mustCLI(t, args...)
			cfgPath := filepath.Join(dir, "embargo.toml")
			daemontest.MustContain(t, "init output", out, "Wrote "+cfgPath, "Generated the security list key", "Generated the DKIM key")
			for _, p := range []string{cfgPath, filepath.Join(dir, "data", "keys", "dkim.key"), filepath.Join(dir, "data", "keys", "security.key.asc")} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
				}
			}
			check := mustCLI(t, "check", "--config", cfgPath)
			daemontest.MustContain(t, "check output", check, "configuration is valid",
				"example.net.\tIN MX 10 ", `"v=spf1 mx -all"`, "embargo._domainkey.example.net.\tIN TXT", "v=DKIM1; k=rsa; p=", "_dmarc.example.net.\tIN TXT \"v=DMARC1;")
			if strings.Contains(check, "key: ") {
				t.Errorf("check reports key problems:\n%s", check)
			}
			// The records the configuration leaves incomplete are said, and
			// do not fail the check.
			daemontest.MustContain(t, "check output", check, "records: CVE records will be refused by their schema (cve.org_id): not set")
			if demo {
				daemontest.MustContain(t, "init --demo output", out, "gpg --batch --import "+filepath.Join(dir, "demo", "alice.secret.asc"), "alice@example.net")
				daemontest.MustContain(t, "check of the demo", check, "(3 members,")
				if strings.Contains(check, "warning") {
					t.Errorf("demo check warns:\n%s", check)
				}
			}
			// A second init refuses to overwrite the configuration.
			if code, _, errOut := runCLI(t, args...); code != 1 || !strings.Contains(errOut, "--force") {
				t.Errorf("second init: exit %d, %q; want 1 and a hint about --force", code, errOut)
			}
		})
	}
}

// TestContribConfig keeps contrib/embargo.toml equal to what init writes for
// a production host, valid, and covering every key config.go knows.
func TestContribConfig(t *testing.T) {
	want, err := renderConfig(contribVars)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "contrib", "embargo.toml")
	if *updateContrib {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("contrib/embargo.toml differs from embargo.toml.tmpl rendered for production: run go test ./cmd/embargo -run TestContribConfig -update-contrib")
	}
	if _, err := config.Parse(got, path); err != nil {
		t.Fatalf("contrib/embargo.toml does not validate: %v", err)
	}
	shown := shownKeys(string(got))
	for _, key := range tomlKeys(reflect.TypeFor[config.Config](), "") {
		if !shown[key] {
			t.Errorf("contrib/embargo.toml does not show the key %s (set, or commented out under its table)", key)
		}
	}
}

// shownKeys lists the keys a commented TOML file sets or shows commented out,
// dotted with their table; the name of a map's entry ([lists.security]) is
// left out, as in tomlKeys.
func shownKeys(text string) map[string]bool {
	header := regexp.MustCompile(`^#? *\[\[?([a-z_.]+)\]\]?\s*$`)
	key := regexp.MustCompile(`^#? *([a-z_]+) *=`)
	keys := map[string]bool{}
	table := ""
	for line := range strings.Lines(text) {
		if m := header.FindStringSubmatch(line); m != nil {
			table, _, _ = strings.Cut(m[1], ".")
			table += "."
			continue
		}
		if m := key.FindStringSubmatch(line); m != nil {
			keys[strings.TrimPrefix(table+m[1], ".")] = true
		}
	}
	return keys
}

// tomlKeys lists the TOML keys of a configuration type, dotted.
func tomlKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		// A type that decodes itself from a string (config.Date) is a value.
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
			out = append(out, tomlKeys(ft, prefix+tag+".")...)
			continue
		}
		out = append(out, prefix+tag)
	}
	return out
}

// TestCommandHelp: every command has --help with examples, exit status 0.
// The command table drives both the usage text and the dispatch.
func TestCommandHelp(t *testing.T) {
	var out, errb strings.Builder
	if rc := run([]string{"help"}, &out, &errb); rc != 0 {
		t.Fatalf("embargo help: exit %d", rc)
	}
	for _, c := range commands() {
		args := []string{c.name}
		if !strings.Contains(out.String(), "\n  embargo "+c.name) || !strings.Contains(out.String(), c.synopsis) {
			t.Errorf("embargo help does not list %s:\n%s", c.name, out.String())
		}
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			// flag writes usage to os.Stderr: run the real process.
			cmd := exec.Command(os.Args[0], append(args, "--help")...)
			cmd.Env = append(os.Environ(), "EMBARGO_TEST_MAIN=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("embargo %s --help: %v", args[0], err)
			}
			if help := string(out); !strings.Contains(help, "Examples:") || !strings.Contains(help, "embargo "+args[0]) {
				t.Errorf("embargo %s --help has no examples:\n%s", args[0], help)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	out := mustCLI(t, "version")
	if !regexp.MustCompile(`^embargo \S+ \(go1\.[0-9.]+.*\)\n$`).MatchString(out) {
		t.Errorf("embargo version = %q", out)
	}
}

func TestHealthcheck(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	out := mustCLI(t, "healthcheck", "--addr", h.Addr(), "--timeout", "2s")
	daemontest.MustContain(t, "healthcheck", out, "ok: 220 ")
	addr := h.Addr()
	h.Stop()
	if code, _, errOut := runCLI(t, "healthcheck", "--addr", addr, "--timeout", "1s"); code != 1 {
		t.Errorf("healthcheck on a stopped daemon: exit %d (%s), want 1", code, errOut)
	}
	for listen, want := range map[string]string{"0.0.0.0:25": "127.0.0.1:25", "[::]:25": "[::1]:25", "192.0.2.1:25": "192.0.2.1:25"} {
		if got := dialable(listen); got != want {
			t.Errorf("dialable(%q) = %q, want %q", listen, got, want)
		}
	}
}

// TestStatusCommand: status through the running daemon and on the file, in
// text and JSON.
func TestStatusCommand(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	cfg := h.ConfigFile()
	h.Rec.FailRcpt("bob@ex.test", 550)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	h.Settle(3)
	out := mustCLI(t, "status", "--config", cfg)
	daemontest.MustContain(t, "status", out, "Daemon:", "running", "Queue:", "failed", "queue retry", "Incidents:", "1 open (triage 1), 0 closed",
		"Next release:", "none scheduled", "Next deadlines:", "SEC-", "triage-escalation")
	h.Stop()
	out = mustCLI(t, "status", "--config", cfg, "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Daemon || st.Open["triage"] != 1 || st.Queue.Failed == 0 || len(st.Deadlines) < 2 || st.Deadlines[0].Name != "triage" {
		t.Errorf("status --json = %+v", st)
	}
}

// TestStatusCrashSuspects: a message, a queue row, an incident's tick, an
// announce batch, the governance tick and the weekly digest in progress at
// a death of the process are shown by status, each with its kind and its
// kind's limit, in text and JSON (docs/threat-model.md A6).
func TestStatusCrashSuspects(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	sum := strings.Repeat("ab", 32)
	sd := statusData{Suspects: []listd.Suspect{
		{Kind: "message", SHA256: sum, Deaths: 1, Last: now.Add(-time.Hour)},
		{Kind: "row", Row: 17, RowKind: "report-copy", Incident: "SEC-2026-0004", Deaths: 2, Last: now.Add(-time.Hour)},
		{Kind: "tick", Incident: "SEC-2026-0002", Deaths: 1, Last: now.Add(-time.Hour)},
		{Kind: "row", Row: 18, Deaths: 3, Last: now.Add(-time.Hour)},
		{Kind: "batch", Release: "sec-2026-0003", Batch: "100-200", Deaths: 3, Last: now.Add(-time.Hour)},
		{Kind: "batch", Release: "sec-2026-0003", Batch: "r7-9", Deaths: 1, Last: now.Add(-time.Hour)},
		{Kind: "governance", State: "0123456789abcdef", Deaths: 2, Last: now.Add(-time.Hour), Alerted: true},
		{Kind: "digest", State: "2026-11-30 0123456789abcdef", Deaths: 1, Last: now.Add(-time.Hour)},
	}}
	st := buildStatus(sd, nil, now)
	var b strings.Builder
	if err := writeStatus(&b, st, &config.Config{DataDir: "/d"}, now); err != nil {
		t.Fatal(err)
	}
	daemontest.MustContain(t, "status", b.String(), "Crash suspect:", "message sha256 "+sum, "1 death(s)", "quarantined on arrival at 2",
		"queue row 17 (report-copy, SEC-2026-0004), in progress at 2 death(s)", "sent alone, failed at 3",
		"queue row 18, in progress at 3 death(s)", "failed without an attempt",
		"tick of SEC-2026-0002, in progress at 1 death(s)", "run alone, skipped at 2",
		"announce batch 100-200 of release sec-2026-0003, in progress at 3 death(s)", "set aside, the release held",
		"announce batch r7-9 of release sec-2026-0003, in progress at 1 death(s)", "sent alone, set aside at 3",
		"governance tick (state 0123456789abcdef), in progress at 2 death(s)", "skipped until what it reads changes",
		"weekly digest (week and state 2026-11-30 0123456789abcdef), in progress at 1 death(s)")
	j, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(j), `"suspects":[{"kind":"message","sha256":"`+sum+`","deaths":1,`) ||
		!strings.Contains(string(j), `{"kind":"row","row":17,"row_kind":"report-copy","incident":"SEC-2026-0004","deaths":2,`) ||
		!strings.Contains(string(j), `"deaths":3,"last_death":"2026-12-03T08:00:00Z","release":"sec-2026-0003","batch":"100-200"}`) ||
		!strings.Contains(string(j), `{"kind":"governance","deaths":2,"last_death":"2026-12-03T08:00:00Z","state":"0123456789abcdef","alerted":true}`) {
		t.Errorf("status --json = %s (%v)", j, err)
	}
	b.Reset()
	if err := writeStatus(&b, buildStatus(statusData{}, nil, now), &config.Config{DataDir: "/d"}, now); err != nil || strings.Contains(b.String(), "Crash suspect") {
		t.Errorf("status without suspects shows %q (%v)", b.String(), err)
	}
}
