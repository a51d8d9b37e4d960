package daemon_test

import (
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestFreeSpaceEndToEnd: with less free on data_dir's file system than
// [smtp] min_free_bytes, MAIL gets 452 4.3.1 over SMTP (go-smtp's client and
// swaks) and LMTP, and nothing is stored (docs/threat-model.md A7). With room
// again (after the one-second cache) a report goes through, and a MAIL whose
// SIZE= needs more than two thirds of what is free is refused (RFC 1870,
// Postfix's rule). statfs is replaced by the test's answer here;
// TestDiskFullEndToEnd fills a real file system.
func TestFreeSpaceEndToEnd(t *testing.T) {
	const reserve = 1 << 20
	var free atomic.Uint64
	free.Store(reserve - 1)
	var dirs atomic.Value
	o := daemon.WithFreeSpace(daemon.Options{NoTick: true}, func(dir string) (uint64, error) {
		dirs.Store(dir)
		return free.Load(), nil
	})
	h := daemontest.New(t, daemontest.Config{Extra: "min_free_bytes = 1048576\n[lmtp]\nlisten = \"127.0.0.1:0\"\n"}, o)
	const rep = "rep@out.test"
	report := daemontest.Report(rep, "finding", "CANARY-diskfree")
	full := func(what string, err error) {
		t.Helper()
		if c, e := daemontest.Code(err); c != 452 || e != "4.3.1" {
			t.Fatalf("%s with too little free: %d %s, want 452 4.3.1 at MAIL", what, c, e)
		} else if !strings.Contains(err.Error(), "Insufficient system storage") {
			t.Fatalf("%s: %q, want the sentence", what, err)
		}
	}

	full("SMTP", h.Send(rep, []string{"security@ex.test"}, report))
	_, err := daemontest.Transact(h.D.LMTPAddr().String(), true, rep, []string{"security@ex.test"}, []byte(daemontest.CRLF(report)))
	full("LMTP", err)
	if swaks, err := exec.LookPath("swaks"); err == nil {
		out, err := exec.Command(swaks, "--server", h.Addr(), "--from", rep, "--to", "security@ex.test",
			"--header", "Subject: finding", "--body", "CANARY-diskfree").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "<** 452 4.3.1 Insufficient system storage") {
			t.Fatalf("swaks with too little free: %v\n%s", err, out)
		}
	} else {
		t.Log("swaks not installed: go-smtp's client only")
	}
	if n := len(listIncidents(t, h)); n != 0 {
		t.Fatalf("%d incidents after the refusals, want none", n)
	}
	if d, _ := dirs.Load().(string); d != h.Dir {
		t.Errorf("free space asked of %q, want data_dir %q", d, h.Dir)
	}

	// Room again: the cached answer expires within a second.
	free.Store(12 << 20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := h.Send(rep, []string{"security@ex.test"}, report)
		if err == nil {
			break
		}
		if c, _ := daemontest.Code(err); c != 452 || time.Now().After(deadline) {
			t.Fatalf("with room again: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(listIncidents(t, h)); n != 1 {
		t.Fatalf("%d incidents, want 1", n)
	}

	// SIZE=: 9 MiB needs 13.5 MiB free, 1 MiB fits.
	c, err := smtp.Dial(h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	full("MAIL SIZE=9 MiB with 12 MiB free", c.Mail(rep, &smtp.MailOptions{Size: 9 << 20}))
	if err := c.Mail(rep, &smtp.MailOptions{Size: 1 << 20}); err != nil {
		t.Fatalf("MAIL SIZE=1 MiB with 12 MiB free: %v", err)
	}
}
