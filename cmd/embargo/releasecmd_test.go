package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/lists"
)

// releaseRow is the row of release id in `embargo release list`.
func releaseRow(list, id string) string {
	for line := range strings.Lines(list) {
		if strings.HasPrefix(line, id+" ") {
			return line
		}
	}
	return ""
}

// gotRelease reports whether every address in subs received the release
// whose envelope sender is bounce.
func gotRelease(h *daemontest.Harness, bounce string, subs []string) bool {
	var to []string
	for _, m := range h.Rec.Messages() {
		if m.From == bounce {
			to = append(to, m.To...)
		}
	}
	for _, s := range subs {
		if !slices.Contains(to, s) {
			return false
		}
	}
	return true
}

// TestReleaseListResume: releases the relay refuses are held by the
// announce fan-out; `embargo release list` and `embargo status` show them
// with the relay's reason; `embargo release resume` refuses a release that
// is not held and an unknown one, and resumes a held one through the
// running daemon (every subscriber gets it at once) and on the store of a
// stopped daemon (every subscriber gets it when it starts).
func TestReleaseListResume(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	cfg := h.ConfigFile()
	hc := h.Config()
	now := time.Now()
	key, _, err := daemon.ListKey(hc, config.Announce, now)
	if err != nil {
		t.Fatal(err)
	}
	ann := daemon.Roster(hc).List(lists.Announce)
	subs := []string{"r1@out.test", "r2@out.test", "r3@out.test"}
	b1, b3 := announce.BounceAddress(ann, "SEC-2026-0001"), announce.BounceAddress(ann, "SEC-2026-0003")

	// Three releases, written in the store of the stopped daemon: two due
	// now, whose sender the relay refuses, and one due in 30 days.
	h.Stop()
	db, err := bolt.Open(filepath.Join(h.Dir, daemon.DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, a := range subs {
			if err := announce.Activate(tx, a, now, announce.Options{List: ann}); err != nil {
				return err
			}
		}
		for id, at := range map[string]time.Time{"SEC-2026-0001": now.Add(-time.Minute), "SEC-2026-0002": now.Add(30 * 24 * time.Hour), "SEC-2026-0003": now.Add(-time.Minute)} {
			if err := announce.StartRelease(tx, id, announce.BounceAddress(ann, id), daemontest.SignedAdvisory(t, key, ann, id, now), at); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.Rec.FailMail(b1, 554)
	h.Rec.FailMail(b3, 554)
	h.Start()
	daemontest.WaitFor(t, "both refused releases to be held", func() bool {
		l := mustCLI(t, "release", "list", "--config", cfg)
		return strings.Contains(releaseRow(l, "SEC-2026-0001"), " held ") && strings.Contains(releaseRow(l, "SEC-2026-0003"), " held ")
	})

	// The daemon runs: list and status through the control socket.
	list := mustCLI(t, "release", "list", "--config", cfg)
	daemontest.MustContain(t, "release list", list, "ID", "STATE", "T (UTC)", "SENT", "HELD BECAUSE")
	daemontest.MustContain(t, "the held row", releaseRow(list, "SEC-2026-0001"), "held", "0/3", "the relay refused the message", "554", "sender refused by test")
	if row := releaseRow(list, "SEC-2026-0002"); !regexp.MustCompile(`^SEC-2026-0002 +scheduled +` + now.Add(30*24*time.Hour).UTC().Format("2006-01-02 15:04") + `:\d\d +- +-\n$`).MatchString(row) {
		t.Errorf("the scheduled row = %q", row)
	}
	status := mustCLI(t, "status", "--config", cfg)
	daemontest.MustContain(t, "status", status, "Held release:", "SEC-2026-0001 to the announce list", "0 of 3 sent", "the relay refused the message",
		"`embargo release resume SEC-2026-0001`", "SEC-2026-0003 to the announce list")
	var st statusJSON
	if err := json.Unmarshal([]byte(mustCLI(t, "status", "--config", cfg, "--json")), &st); err != nil || len(st.Held) != 2 || st.Held[0].Release != "SEC-2026-0001" || !strings.Contains(st.Held[0].Reason, "554") {
		t.Errorf("status --json held releases = %+v (%v)", st.Held, err)
	}

	// Errors an operator can act on.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"release", "resume", "SEC-2026-0002"}, 1, "release SEC-2026-0002 is scheduled, not held: only a held release can be resumed"},
		{[]string{"release", "resume", "SEC-2026-0009"}, 1, "no announce release SEC-2026-0009; `embargo release list` shows them"},
		{[]string{"release", "resume", "../x"}, 2, `"../x" is not a release ID`},
		{[]string{"release", "resume"}, 2, "usage: embargo release resume ID"},
		{[]string{"release", "list", "x"}, 1, "embargo release list takes no arguments"},
		{[]string{"release", "purge"}, 2, "unknown release subcommand"},
	} {
		code, _, errOut := runCLI(t, append(tc.args, "--config", cfg)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("embargo %s: exit %d, %q; want %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}

	// The relay is fixed; resumed through the daemon, the release goes on
	// at once.
	h.Rec.FailMail(b1, 0)
	daemontest.MustContain(t, "release resume", mustCLI(t, "release", "resume", "SEC-2026-0001", "--config", cfg),
		"release SEC-2026-0001 resumed: it goes on from where it stopped\n")
	daemontest.WaitFor(t, "every subscriber to get the resumed release", func() bool { return gotRelease(h, b1, subs) })
	daemontest.WaitFor(t, "the resumed release to be released", func() bool {
		return strings.Contains(releaseRow(mustCLI(t, "release", "list", "--config", cfg), "SEC-2026-0001"), " released ")
	})
	daemontest.MustContain(t, "the released row", releaseRow(mustCLI(t, "release", "list", "--config", cfg), "SEC-2026-0001"), "3/3")
	if strings.Contains(mustCLI(t, "status", "--config", cfg), "SEC-2026-0001 to the announce list") {
		t.Error("status still shows the resumed release as held")
	}
	if gotRelease(h, b3, subs[:1]) {
		t.Error("the release still held went out")
	}
	daemontest.MustContain(t, "the daemon's log", h.Logs.String(), "announce release resumed", "release=SEC-2026-0001")

	// Stopped: resumed on the store, and sent when the daemon starts.
	h.Stop()
	daemontest.MustContain(t, "offline release resume", mustCLI(t, "release", "resume", "SEC-2026-0003", "--config", cfg),
		"release SEC-2026-0003 resumed: it goes on from where it stopped; the daemon sends it when it starts\n")
	if row := releaseRow(mustCLI(t, "release", "list", "--config", cfg), "SEC-2026-0003"); !strings.Contains(row, " releasing ") {
		t.Errorf("after an offline resume: %q", row)
	}
	h.Rec.FailMail(b3, 0)
	h.Start()
	daemontest.WaitFor(t, "every subscriber to get the release resumed offline", func() bool { return gotRelease(h, b3, subs) })
}

// TestReleaseListEscapes: a hold reason quotes the relay's reply; release
// list and status write it on one line with its control and format
// characters escaped, never to the operator's terminal
// (docs/threat-model.md B10).
func TestReleaseListEscapes(t *testing.T) {
	at := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	reason := "the relay refused the message: 554 5.7.1 no\r\n\x1b]0;pwned\x07 \u202eevil \xff"
	want := `the relay refused the message: 554 5.7.1 no \x1b]0;pwned\a \u202eevil \xff`
	jobs := []announce.Job{{ID: "SEC-2026-0001", State: announce.JobHeld, At: at, Held: reason, HeldFor: announce.HoldRelay,
		Started: at, Sent: 2, Total: 5}}
	var b bytes.Buffer
	if err := writeReleases(&b, jobs); err != nil {
		t.Fatal(err)
	}
	if row := releaseRow(b.String(), "SEC-2026-0001"); !strings.Contains(row, "2/5") || !strings.HasSuffix(row, want+"\n") {
		t.Errorf("release list row = %q, want it to end in %q", row, want)
	}
	b.Reset()
	if err := writeStatus(&b, buildStatus(statusData{Held: jobs}, nil, at), &config.Config{DataDir: "/d"}, at); err != nil {
		t.Fatal(err)
	}
	daemontest.MustContain(t, "status", b.String(), "Held release:", "2 of 5 sent", want+"\n")
	if strings.ContainsAny(b.String(), "\x1b\x07\r\u202e") {
		t.Errorf("raw control or format characters reach the terminal: %q", b.String())
	}
	b.Reset()
	if err := writeReleases(&b, nil); err != nil || b.String() != "No announce releases.\n" {
		t.Errorf("an empty list = %q, %v", b.String(), err)
	}
}
