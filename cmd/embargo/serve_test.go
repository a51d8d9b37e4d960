package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestMain lets the test binary act as the embargo command, so tests can run
// the real process (signals, exit codes) without a separate build step.
func TestMain(m *testing.M) {
	if os.Getenv("EMBARGO_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// embargoProcess starts `embargo ARGS…` as a child process.
func embargoProcess(t *testing.T, dir string, args ...string) (*exec.Cmd, *daemontest.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "EMBARGO_TEST_MAIN=1")
	cmd.Dir = dir
	out := &daemontest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, out
}

func waitPort(t *testing.T, addr string, out *daemontest.SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon did not listen on %s:\n%s", addr, out.String())
}

// waitFiles waits until dir holds at least n files and returns their contents.
func waitFiles(t *testing.T, dir string, n int, within time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		entries, _ := os.ReadDir(dir)
		if len(entries) >= n || time.Now().After(deadline) {
			var out [][]byte
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err == nil {
					out = append(out, b)
				}
			}
			if len(out) < n {
				t.Fatalf("%s holds %d files after %v, want %d", dir, len(out), within, n)
			}
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeDevDefaultWithSwaks is the README's tour: the embedded default, a
// report sent with swaks, the acknowledgement in ./embargo-data/outbox/new/.
func TestServeDevDefaultWithSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Skip("swaks not installed (.ci/run installs it)")
	}
	work := t.TempDir()
	addr := daemontest.FreePort(t)
	_, out := embargoProcess(t, work, "serve", "--listen", addr)
	waitPort(t, addr, out)

	cmd := exec.Command(swaks, "--server", addr, "--from", "reporter@example.net", "--to", "security@example.test",
		"--header", "Subject: heap overflow in the parser", "--body", "Steps to reproduce: CANARY-swaks")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, b)
	}
	sent := time.Now()
	files := waitFiles(t, filepath.Join(work, "embargo-data", "outbox", "new"), 2, 5*time.Second)
	t.Logf("acknowledgement and copy in the outbox %v after swaks returned", time.Since(sent).Round(time.Millisecond))
	var ack, copy bool
	for _, f := range files {
		switch {
		case bytes.Contains(f, []byte("Vulnerability report received")) && bytes.Contains(f, []byte("reporter@example.net")):
			ack = true
			if bytes.Contains(f, []byte("CANARY-swaks")) {
				t.Error("the acknowledgement quotes the report")
			}
		case bytes.Contains(f, []byte("alice@example.test")) && bytes.Contains(f, []byte("CANARY-swaks")):
			copy = true
		}
	}
	if !ack || !copy {
		t.Errorf("outbox: ack=%v copy to alice=%v", ack, copy)
	}

	// An address that is not ours: refused at RCPT, never relayed.
	cmd = exec.Command(swaks, "--server", addr, "--from", "x@example.net", "--to", "victim@gmail.test", "--quit-after", "RCPT")
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "550 5.1.1") {
		t.Errorf("swaks to a foreign address:\n%s\nwant 550 5.1.1 at RCPT", b)
	}
	if strings.Contains(out.String(), "CANARY-swaks") {
		t.Error("the canary reached the daemon's log")
	}
}

// TestServeGracefulShutdown: SIGTERM lets an in-flight SMTP session finish,
// then the process closes the store and exits 0.
func TestServeGracefulShutdown(t *testing.T) {
	work := t.TempDir()
	addr := daemontest.FreePort(t)
	cmd, out := embargoProcess(t, work, "serve", "--listen", addr, "--data", filepath.Join(work, "state"))
	waitPort(t, addr, out)

	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("rep@out.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("security@example.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: rep@out.test\r\nSubject: in flight\r\n\r\n")
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	io.WriteString(w, "still sending\r\n")
	if err := w.Close(); err != nil {
		t.Fatalf("in-flight message after SIGTERM: %v, want 250", err)
	}
	c.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not exit after SIGTERM:\n%s", out.String())
	}
	// The store was closed cleanly and holds the message.
	var list bytes.Buffer
	if rc := run([]string{"incident", "list", "--data", filepath.Join(work, "state")}, &list, io.Discard); rc != 0 || !strings.Contains(list.String(), "SEC-") {
		t.Errorf("after shutdown: incident list = %d %q", rc, list.String())
	}
	// The log names the listener as a URL and never the message.
	logs := out.String()
	if !strings.Contains(logs, "smtp://"+addr) {
		t.Errorf("log does not name the listener smtp://%s:\n%s", addr, logs)
	}
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "in flight") || strings.Contains(sc.Text(), "still sending") {
			t.Errorf("log line carries message content: %s", sc.Text())
		}
	}
}

// TestServeFlags: bad flags and arguments give exit status 2 and a usage line.
func TestServeFlags(t *testing.T) {
	var out, errb strings.Builder
	if rc := run([]string{"serve", "extra"}, &out, &errb); rc != 2 {
		t.Errorf("serve extra: exit %d, want 2", rc)
	}
	if rc := run([]string{"bogus"}, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("bogus: exit %d %q", rc, errb.String())
	}
	errb.Reset()
	if rc := run([]string{"serve", "--config", "/nonexistent.toml"}, &out, &errb); rc != 1 {
		t.Errorf("serve with a missing config: exit %d, want 1", rc)
	}
}
