package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// failedRowID returns the ID of the failed row for addr in `queue list`.
func failedRowID(t *testing.T, list, addr string) string {
	t.Helper()
	if id := failedRow(list, addr); id != "" {
		return id
	}
	t.Fatalf("no failed row for %s in:\n%s", addr, list)
	return ""
}

func hasFailedRow(list, addr string) bool { return failedRow(list, addr) != "" }

// failedRow is the ID of the first failed row to addr in queue list's output.
func failedRow(list, addr string) string {
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == "failed" && f[4] == addr {
			return f[0]
		}
	}
	return ""
}

// TestQueueRetryDrop: a row refused for good shows as failed in queue list;
// retry, while the daemon runs, sends it once the cause is fixed; drop
// deletes one; both also work on the store file when the daemon is stopped.
func TestQueueRetryDrop(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{Commands: storeCommands()})
	cfg := h.ConfigFile()
	h.Rec.FailRcpt("bob@ex.test", 550)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	h.Settle(3) // ack, alice's copy, alice's alert about bob (bob's alert fails too)

	list := mustCLI(t, "queue", "list", "--config", cfg)
	daemontest.MustContain(t, "queue list", list, "STATE", "failed", "report-copy", "550")
	id := failedRowID(t, list, "bob@ex.test")

	// Online retry: the worker is kicked and delivers at once.
	h.Rec.FailRcpt("bob@ex.test", 0)
	daemontest.MustContain(t, "queue retry", mustCLI(t, "queue", "retry", id, "--config", cfg), "row "+id+" is due now and handed to the delivery worker")
	msgs := h.WaitMail(4)
	if n := len(daemontest.To(msgs, "bob@ex.test")); n != 1 {
		t.Fatalf("bob got %d messages after the retry, want 1", n)
	}
	daemontest.WaitFor(t, "the retried row to leave the queue", func() bool {
		return !regexp.MustCompile(`(?m)^` + id + ` `).MatchString(mustCLI(t, "queue", "list", "--config", cfg))
	})

	// Errors an operator can act on.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"queue", "retry", "999"}, 1, "no queue row 999"},
		{[]string{"queue", "drop", "999"}, 1, "no queue row 999"},
		{[]string{"queue", "retry", "x1"}, 2, "is not a queue row ID"},
		{[]string{"queue", "retry"}, 2, "usage: embargo queue retry|drop ID"},
		{[]string{"queue", "purge"}, 2, "unknown queue subcommand"},
	} {
		code, _, errOut := runCLI(t, append(tc.args, "--config", cfg)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("embargo %s: exit %d, %q; want %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}

	// Online drop of a failed row, then offline retry and drop.
	h.Rec.FailRcpt("alice@ex.test", 550)
	h.Rec.FailRcpt("bob@ex.test", 550)
	h.MustSend("rep2@out.test", []string{"security@ex.test"}, daemontest.Report("rep2@out.test", "x2", "y2"))
	h.WaitMail(5) // the second reporter's ack; alerts to alice and bob fail too (NoAlert)
	var a, b string
	daemontest.WaitFor(t, "both copies to fail", func() bool {
		// A failed row for each; other rows to them may still be in
		// flight (the worker claims several at once).
		l := mustCLI(t, "queue", "list", "--config", cfg)
		return hasFailedRow(l, "alice@ex.test") && hasFailedRow(l, "bob@ex.test")
	})
	list = mustCLI(t, "queue", "list", "--config", cfg)
	a, b = failedRowID(t, list, "alice@ex.test"), failedRowID(t, list, "bob@ex.test")
	daemontest.MustContain(t, "queue drop", mustCLI(t, "queue", "drop", a, "--config", cfg), "row "+a+" dropped")
	if regexp.MustCompile(`(?m)^` + a + ` `).MatchString(mustCLI(t, "queue", "list", "--config", cfg)) {
		t.Errorf("row %s still listed after drop", a)
	}

	h.Stop()
	h.Rec.FailRcpt("bob@ex.test", 0)
	daemontest.MustContain(t, "offline retry", mustCLI(t, "queue", "retry", b, "--config", cfg), "is due now; the daemon sends it when it starts")
	list = mustCLI(t, "queue", "list", "--config", cfg)
	if !regexp.MustCompile(`(?m)^` + b + ` +queued `).MatchString(list) {
		t.Errorf("row %s is not queued after an offline retry:\n%s", b, list)
	}
	before := len(daemontest.To(h.Rec.Messages(), "bob@ex.test")) // counted before the start, which may deliver at once
	h.Start()
	daemontest.WaitFor(t, "the offline-retried row to be delivered at start", func() bool {
		return len(daemontest.To(h.Rec.Messages(), "bob@ex.test")) > before
	})
}

// TestOneLineEscapes: a relay's reply reaches the operator's terminal on one
// row, its control and format characters and invalid bytes escaped.
func TestOneLineEscapes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"550 5.1.1 no such\r\n user", "550 5.1.1 no such user"},
		{"550 \x1b]0;pwned\x07 \x1b[2J", `550 \x1b]0;pwned\a \x1b[2J`},
		{"550 \u202egnp.exe", `550 \u202egnp.exe`},
		{"550 caf\xe9", `550 caf\xe9`},
		{"550 café", "550 café"},
		{strings.Repeat("x", 100), strings.Repeat("x", 80) + "…"},
	} {
		if got := oneLine(c.in, 80); got != c.want {
			t.Errorf("oneLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
