package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// rowFatalMarker in an outbound message to rowVictim makes the child die
// of a real stack overflow as the relay is about to take it: a row whose
// sending kills the process (docs/threat-model.md A6).
const (
	rowFatalMarker = "FATAL-row-4e1d-overflow-the-stack"
	rowVictim      = "bob@ex.test"
)

// The child's environment for the tick's failpoint: the incident whose
// tick overflows the stack, and how far ahead of the real clock the
// child's runs (so that the incidents' reminders are due).
const (
	fatalTickEnv  = "EMBARGO_TEST_FATAL_TICK"
	clockShiftEnv = "EMBARGO_TEST_CLOCK_SHIFT"
	// tickSpecEnv replaces the child's tick schedule (the tick still runs
	// at start): a test whose child must not tick again on the wall
	// clock's minute sets "@every 1h".
	tickSpecEnv = "EMBARGO_TEST_TICK_SPEC"
)

// withWorkFailpoints adds the failpoints of the work the daemon starts
// itself to a child's options (fatalChild).
func withWorkFailpoints(o daemon.Options) daemon.Options {
	o = daemon.WithSend(o, func(to []string, data []byte) {
		if len(to) == 1 && to[0] == rowVictim && bytes.Contains(data, []byte(rowFatalMarker)) {
			debug.SetMaxStack(1 << 20)
			fmt.Fprintln(os.Stderr, "failpoint: overflowing the stack while a row is sent", deeper(0))
		}
	})
	if id := os.Getenv(fatalTickEnv); id != "" {
		o = daemon.WithTick(o, func(inc workflow.ID) {
			if string(inc) == id {
				debug.SetMaxStack(1 << 20)
				fmt.Fprintln(os.Stderr, "failpoint: overflowing the stack while an incident is ticked", deeper(0))
			}
		})
	}
	if shift, err := time.ParseDuration(os.Getenv(clockShiftEnv)); err == nil {
		o.Now = func() time.Time { return time.Now().Add(shift) }
	}
	if spec := os.Getenv(tickSpecEnv); spec != "" {
		o.TickSpec = spec
	}
	return o
}

// startDying starts a child that may die before it listens: a row left
// "sending" is sent again at once at start, the tick runs at start. env
// is added to its environment.
func startDying(t *testing.T, cfg string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), fatalChildEnv+"="+cfg), env...)
	c := &child{cmd: cmd, out: &daemontest.SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return c
}

// waitFatal waits for the child to die of the stack overflow.
func waitFatal(t *testing.T, c *child, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the child is still running:\n%.3000s", what, c.out.String())
	}
	var ee *exec.ExitError
	out := c.out.String()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !stackOverflowed(out) {
		t.Fatalf("%s: the child ended with %v, want a fatal error (exit status 2):\n%.3000s", what, err, out)
	}
}

// stackOverflowed reports whether a child's output holds Go's fatal stack
// overflow. The runtime writes "fatal error: " and "stack overflow" in two
// writes to stderr, and another goroutine's log line can land between them.
func stackOverflowed(out string) bool {
	i := strings.Index(out, "fatal error: ")
	return i >= 0 && strings.Contains(out[i:], "stack overflow")
}

// TestProcessKillingRow: a queue row whose sending kills the whole process
// (a real "fatal error: stack overflow" in the child daemon, as the relay
// takes the report's copy to one member) is sent again at each start and
// kills it again; the second and third times alone. At the fourth start it is failed
// without an attempt, the SRC gets one alert naming the row, its kind and
// incident (never its content), every other row is delivered, and the
// daemon stays up and takes mail (docs/threat-model.md A6).
func TestProcessKillingRow(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.Stop()
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, cfg, strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
	crlf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

	// Death 1: the report is stored; its copy to bob kills the process as
	// it is sent, often before the 250 reached the client (its MTA would
	// send it again, a duplicate: the store is checked at the end).
	c := startChild(t, cfg, addr)
	daemontest.SendSMTP(addr, "rep1@out.test", []string{"security@ex.test"},
		crlf(daemontest.Report("rep1@out.test", "crash "+rowFatalMarker, "body "+rowFatalMarker)))
	waitFatal(t, c, "death 1")
	// Death 2: the copy is a suspect, sent again at start, alone.
	waitFatal(t, startDying(t, cfg), "death 2")
	// As the second start counted them: the copy, and rows in delivery
	// beside it at the first death (the ack, alice's copy) that the
	// second run had not sent alone yet when the copy killed it.
	copies := 0
	for _, x := range culprits(t, h.Dir, "row") {
		if x.Kind != "row" || x.Deaths != 1 {
			t.Fatalf("before the third start the table holds %+v; want rows with 1 death", x)
		}
		if x.RowKind == "report-copy" {
			copies++
		}
	}
	if copies == 0 {
		t.Fatal("the copy that killed the process has no death")
	}
	// Death 3: a row needs listd.RowPoisonDeaths, its second alone.
	waitFatal(t, startDying(t, cfg), "death 3")

	// The fourth start fails it, alerts, and goes on.
	c = startChild(t, cfg, addr)
	if err := daemontest.SendSMTP(addr, "rep2@out.test", []string{"security@ex.test"},
		crlf(daemontest.Report("rep2@out.test", "second", "fine"))); err != nil {
		t.Fatalf("a report after the failed row: %v", err)
	}
	// The first report's ack and alice's copy, the alert to alice and bob,
	// the second report's ack and two copies.
	msgs := waitDistinct(t, h.Rec, 2+2+3)
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
	checkRowKillerOutcome(t, h, msgs, c.out.String())
}

// checkRowKillerOutcome checks the relay and the store after the killer
// row failed.
func checkRowKillerOutcome(t *testing.T, h *daemontest.Harness, msgs []queuetest.Message, logs string) {
	t.Helper()
	s := culprits(t, h.Dir, "row")
	if len(s) != 1 || s[0].Kind != "row" || s[0].Deaths != listd.RowPoisonDeaths {
		t.Fatalf("attempt table %+v; want the row alone with %d deaths", s, listd.RowPoisonDeaths)
	}
	id := s[0].Row
	alerts := 0
	for _, m := range msgs {
		hdr, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		if m.To[0] == rowVictim && strings.Contains(hdr.Header.Get("Subject"), "crash") {
			t.Errorf("the killer row reached %v", m.To)
		}
		if hdr.Header.Get("Subject") != "[embargo] delivery failed" {
			continue
		}
		alerts++
		daemontest.MustContain(t, "the alert", string(m.Data), fmt.Sprintf("Queue row:  %d", id), "Kind:       report-copy",
			"Incident:   "+s[0].Incident, queue.ErrKilledProcess.Error(), fmt.Sprintf("embargo queue retry %d", id))
		if bytes.Contains(m.Data, []byte(rowFatalMarker)) {
			t.Errorf("the alert to %v quotes the row's content", m.To)
		}
	}
	if alerts != 2 {
		t.Errorf("%d alerts, want one to each SRC member (2):\n%s", alerts, daemontest.Summary(msgs))
	}
	if strings.Contains(logs, rowFatalMarker) {
		t.Error("the log quotes the row's content")
	}
	db, err := daemon.OpenStore(h.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if incs, _ := incidentdb.List(tx); len(incs) != 2 {
			t.Errorf("%d incidents; want the two reports'", len(incs))
		}
		rows, _ := queue.List(tx)
		if len(rows) != 1 || rows[0].ID != id || rows[0].State != queue.StateFailed || rows[0].To[0] != rowVictim ||
			!strings.Contains(rows[0].LastError, queue.ErrKilledProcess.Error()) {
			t.Errorf("queue %+v; want only the killer row, failed by its deaths", rows)
		}
		return nil
	})
}
