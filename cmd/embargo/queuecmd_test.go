package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// failedRowID returns the ID of the failed row for addr in `queue list`.
func failedRowID(t *testing.T, list, addr string) string {
	t.Helper()
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == "failed" && f[4] == addr {
			return f[0]
		}
	}
	t.Fatalf("no failed row for %s in:\n%s", addr, list)
	return ""
}

// TestQueueRetryDrop: a row refused for good shows as failed in queue list;
// retry, while the daemon runs, sends it once the cause is fixed; drop
// deletes one; both also work on the store file when the daemon is stopped.
func TestQueueRetryDrop(t *testing.T) {
	h := newHarness(t, "", startOptions{})
	cfg := h.configFile()
	h.rec.FailRcpt("bob@ex.test", 550)
	h.mustSend("rep@out.test", []string{"security@ex.test"}, report("rep@out.test", "x", "y"))
	h.settle(3) // ack, alice's copy, alice's alert about bob (bob's alert fails too)

	list := mustCLI(t, "queue", "list", "--config", cfg)
	mustContain(t, "queue list", list, "STATE", "failed", "report-copy", "550")
	id := failedRowID(t, list, "bob@ex.test")

	// Online retry: the worker is kicked and delivers at once.
	h.rec.FailRcpt("bob@ex.test", 0)
	mustContain(t, "queue retry", mustCLI(t, "queue", "retry", id, "--config", cfg), "row "+id+" is due now and handed to the delivery worker")
	msgs := h.waitMail(4)
	if n := len(to(msgs, "bob@ex.test")); n != 1 {
		t.Fatalf("bob got %d messages after the retry, want 1", n)
	}
	waitFor(t, "the retried row to leave the queue", func() bool {
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
	h.rec.FailRcpt("alice@ex.test", 550)
	h.rec.FailRcpt("bob@ex.test", 550)
	h.mustSend("rep2@out.test", []string{"security@ex.test"}, report("rep2@out.test", "x2", "y2"))
	h.waitMail(5) // the second reporter's ack; alerts to alice and bob fail too (NoAlert)
	var a, b string
	waitFor(t, "both copies to fail", func() bool {
		l := mustCLI(t, "queue", "list", "--config", cfg)
		return strings.Count(l, "failed") >= 2 && strings.Contains(l, "alice@ex.test") && strings.Contains(l, "bob@ex.test")
	})
	list = mustCLI(t, "queue", "list", "--config", cfg)
	a, b = failedRowID(t, list, "alice@ex.test"), failedRowID(t, list, "bob@ex.test")
	mustContain(t, "queue drop", mustCLI(t, "queue", "drop", a, "--config", cfg), "row "+a+" dropped")
	if regexp.MustCompile(`(?m)^` + a + ` `).MatchString(mustCLI(t, "queue", "list", "--config", cfg)) {
		t.Errorf("row %s still listed after drop", a)
	}

	h.stop()
	h.rec.FailRcpt("bob@ex.test", 0)
	mustContain(t, "offline retry", mustCLI(t, "queue", "retry", b, "--config", cfg), "is due now; the daemon sends it when it starts")
	list = mustCLI(t, "queue", "list", "--config", cfg)
	if !regexp.MustCompile(`(?m)^` + b + ` +queued `).MatchString(list) {
		t.Errorf("row %s is not queued after an offline retry:\n%s", b, list)
	}
	h.start()
	before := len(to(h.rec.Messages(), "bob@ex.test"))
	waitFor(t, "the offline-retried row to be delivered at start", func() bool {
		return len(to(h.rec.Messages(), "bob@ex.test")) > before
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
