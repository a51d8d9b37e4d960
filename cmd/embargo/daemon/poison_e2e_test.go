package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// fatalChildEnv names the configuration file of a child process that runs
// the daemon with the fatal failpoint (fatalChild). Only this test binary
// reads it: the failpoint is set through export_test.go, which no other
// build has, so no environment or configuration can reach it in embargo.
const fatalChildEnv = "EMBARGO_TEST_FATAL_CHILD"

// fatalMarker in a message makes the child die as a fatal runtime error
// does: no recover() sees it, no deferred function runs.
const fatalMarker = "FATAL-b7c2-overflow-the-stack"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(fatalChildEnv); cfg != "" {
		os.Exit(fatalChild(cfg))
	}
	os.Exit(m.Run())
}

// fatalChild runs the daemon on the configuration file cfg until SIGTERM,
// with a failpoint on arrival that overflows the goroutine's stack for a
// message holding fatalMarker: Go's "fatal error: stack overflow", which
// ends the process with exit status 2 whatever recovers.
func fatalChild(cfg string) int {
	c, err := config.Load(cfg)
	if err == nil {
		err = c.Resolve()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	o := daemon.WithPanic(daemon.Options{Logger: daemon.NewLogger("debug", os.Stderr), MinBackoff: 20 * time.Millisecond},
		func(raw []byte) {
			if bytes.Contains(raw, []byte(fatalMarker)) {
				debug.SetMaxStack(1 << 20) // die in a moment, not after a gigabyte
				fmt.Fprintln(os.Stderr, "failpoint: overflowing the stack", deeper(0))
			}
		})
	o = withWorkFailpoints(o)  // rowdeath_e2e_test.go: the rows' and ticks' failpoints
	o = withBatchFailpoints(o) // batchdeath_e2e_test.go: the fan-out's batches' and the tick's jobs'
	o = withReleaseClock(o)    // releasedeath_e2e_test.go: the release's clock
	o = withKillPoint(o)       // killpoint_e2e_test.go: kill -9 at a step boundary
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := daemon.New(c, o).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// deeper recurses without end.
//
//go:noinline
func deeper(n int) int {
	var pad [256]byte
	pad[n%len(pad)] = byte(n)
	return deeper(n+1) + int(pad[(n+7)%len(pad)])
}

// child is one run of the daemon as a child process.
type child struct {
	cmd *exec.Cmd
	out *daemontest.SyncBuffer
}

func startChild(t *testing.T, cfg, addr string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fatalChildEnv+"="+cfg)
	c := &child{cmd: cmd, out: &daemontest.SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not listen on %s:\n%s", addr, c.out.String())
		}
	}
}

// TestProcessKillingMessage: a message whose processing kills the whole
// process (a fatal error recover() cannot catch) is sent again by its MTA
// after each death; the daemon dies with it twice, and at its third arrival
// keeps it in quarantine unprocessed, answers 250, and alerts the SRC once,
// naming it without its content. Other mail goes through between the
// deaths, and a clean run writes no attempt entry (docs/threat-model.md A6,
// G6).
func TestProcessKillingMessage(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.MustSend("rep1@out.test", []string{"security@ex.test"}, daemontest.Report("rep1@out.test", "first", "fine"))
	h.WaitMail(3)
	h.Stop()
	if s := suspects(t, h.Dir); len(s) != 0 {
		t.Fatalf("a clean run wrote attempt entries: %v", s)
	}
	if fi, err := os.Stat(filepath.Join(h.Dir, listd.InflightFile)); err != nil || fi.Size() != 0 {
		t.Fatalf("after a clean stop the in-flight file is %v, %v; want empty", fi, err)
	}

	addr := daemontest.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, cfg, strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
	poison := []byte(strings.ReplaceAll(daemontest.Report("mallory@out.test", "crash", fatalMarker), "\n", "\r\n"))
	send := func(raw []byte) error {
		return daemontest.SendSMTP(addr, "mallory@out.test", []string{"security@ex.test"}, raw)
	}

	for death := 1; death <= listd.PoisonDeaths; death++ {
		c := startChild(t, cfg, addr)
		if death == 2 { // a suspect is known: the other mail still goes through
			if err := daemontest.SendSMTP(addr, "rep2@out.test", []string{"security@ex.test"},
				[]byte(strings.ReplaceAll(daemontest.Report("rep2@out.test", "second", "fine"), "\n", "\r\n"))); err != nil {
				t.Fatalf("a report between the deaths: %v", err)
			}
		}
		if err := send(poison); err == nil {
			t.Fatalf("arrival %d of the killer was answered 250", death)
		}
		err := c.cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !stackOverflowed(c.out.String()) {
			t.Fatalf("arrival %d: the child ended with %v, want a fatal error (exit status 2):\n%.2000s", death, err, c.out.String())
		}
	}

	c := startChild(t, cfg, addr)
	for i := range 2 { // the MTA that lost the 250 sends it again: a duplicate
		if err := send(poison); err != nil {
			t.Fatalf("arrival %d of the killer: %v, want 250 (quarantined)\n%s", listd.PoisonDeaths+1+i, err, c.out.String())
		}
	}
	if err := daemontest.SendSMTP(addr, "rep3@out.test", []string{"security@ex.test"},
		[]byte(strings.ReplaceAll(daemontest.Report("rep3@out.test", "third", "fine"), "\n", "\r\n"))); err != nil {
		t.Fatalf("a report after the quarantine: %v", err)
	}
	msgs := waitDistinct(t, h.Rec, 3*3+2) // three reports (ack and two copies each), the alert to alice and bob
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v", err)
	}
	checkKillerOutcome(t, h, msgs, poison, c.out.String())
}

// checkKillerOutcome checks the relay, the log and the store after the
// killer's quarantine.
func checkKillerOutcome(t *testing.T, h *daemontest.Harness, msgs []queuetest.Message, poison []byte, logs string) {
	t.Helper()
	alerts := 0
	for _, m := range msgs {
		if hdr, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil && hdr.Header.Get("Subject") == "[quarantine] poison" {
			alerts++
		}
		if bytes.Contains(m.Data, []byte(fatalMarker)) {
			t.Errorf("the killer's content reached %v", m.To)
		}
	}
	if alerts != 2 {
		t.Errorf("%d poison alerts, want one to each SRC member (2):\n%s", alerts, daemontest.Summary(msgs))
	}
	sum := sha256.Sum256(poison)
	if !strings.Contains(logs, hex.EncodeToString(sum[:])) || strings.Contains(logs, fatalMarker) {
		t.Errorf("the log should name the killer by its SHA-256 and never quote it:\n%s", logs)
	}
	s := culprits(t, h.Dir, "message")
	if len(s) != 1 || s[0].SHA256 != hex.EncodeToString(sum[:]) || s[0].Deaths != listd.PoisonDeaths {
		t.Errorf("attempt table %v; want the killer alone with %d deaths", s, listd.PoisonDeaths)
	}
	db, err := daemon.OpenStore(h.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		kept := 0
		for seq := uint64(1); ; seq++ {
			r, err := incidentdb.Message(tx, seq)
			if err != nil {
				break
			}
			if r.Note == listd.NotePoison {
				kept++
				if raw, _ := incidentdb.Raw(tx, seq); !bytes.Equal(raw, poison) || r.Incident != "" {
					t.Errorf("quarantined message %d: incident %q, %d bytes; want the killer's bytes, no incident", seq, r.Incident, len(raw))
				}
			}
		}
		if kept != 1 || len(incs) != 3 {
			t.Errorf("%d messages in quarantine and %d incidents; want the killer once and the three reports", kept, len(incs))
		}
		return nil
	})
}

// culprits is the attempt table of the store in dir without its
// bystanders: work of another kind than the killer's (the weekly digest a
// start runs, an incident's tick) that was in progress at one death, never
// alerted, and not yet run alone again when the test stopped. One death is
// no evidence (docs/threat-model.md A6); the bystanders are logged.
func culprits(t *testing.T, dir, kind string) []listd.Suspect {
	t.Helper()
	var out []listd.Suspect
	for _, x := range suspects(t, dir) {
		if x.Kind != kind && x.Deaths == 1 && !x.Alerted {
			t.Logf("a bystander in the attempt table: %+v", x)
			continue
		}
		out = append(out, x)
	}
	return out
}

// suspects reads the attempt table of the store in dir.
func suspects(t *testing.T, dir string) []listd.Suspect {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s []listd.Suspect
	db.View(func(tx *bolt.Tx) error { s = listd.Suspects(tx); return nil })
	return s
}

// waitDistinct waits until the relay holds n distinct messages (recipients
// and Message-ID: a copy in delivery when the process died is sent again,
// with the same Message-ID), then a moment more, and returns one of each.
func waitDistinct(t *testing.T, rec *queuetest.Recorder, n int) []queuetest.Message {
	t.Helper()
	distinct := func() []queuetest.Message {
		seen := map[string]bool{}
		var out []queuetest.Message
		for _, m := range rec.Messages() {
			id := ""
			if hdr, err := mail.ReadMessage(bytes.NewReader(m.Data)); err == nil {
				id = hdr.Header.Get("Message-ID")
			}
			if k := strings.Join(m.To, ",") + " " + id; !seen[k] {
				seen[k] = true
				out = append(out, m)
			}
		}
		return out
	}
	for deadline := time.Now().Add(20 * time.Second); len(distinct()) < n && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // nothing more should come
	out := distinct()
	if len(out) != n {
		t.Fatalf("the relay got %d distinct messages, want %d:\n%s", len(out), n, daemontest.Summary(out))
	}
	return out
}
