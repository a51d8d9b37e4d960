package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// TestPowerFailEverySync is a failpoint at every fsync of a first start and
// a first report (docs/threat-model.md A1, A2): the scenario (the daemon
// starts on a data directory that does not exist, one report arrives, its
// acknowledgement leaves) is played once to count its fsyncs and fdatasyncs,
// then once for each of them with the power failing at that sync
// (powerfs.FailAtSync: nothing more reaches the disk). After each, the
// daemon starts on what survived: it must start (the store, its marker and
// the keys agree), a report answered 250 must be stored, a security key
// given to a reporter must still be the one in use, and a new report must be
// served. EMBARGO_POWERFAIL_EVERY=1 fails it at every sync (about 50 s), the
// default at every fourth.
func TestPowerFailEverySync(t *testing.T) {
	if testing.Short() {
		t.Skip("power failures at every sync skipped in -short mode")
	}
	if err := powerfs.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "SKIP TestPowerFailEverySync: %v\n", err)
		t.Skipf("needs FUSE: %v", err)
	}
	total, _, _ := powerFailAt(t, 0)
	if total < 5 {
		t.Fatalf("the scenario made %d syncs: it tests nothing", total)
	}
	// Each failure takes about a second: by default every fourth sync, from
	// a random one of the first four, so that runs cover them all.
	stride, first := 4, 1+rand.IntN(4)
	if os.Getenv("EMBARGO_POWERFAIL_EVERY") == "1" {
		stride, first = 1, 1
	}
	start := time.Now()
	var tried, accepted, acked []int
	for k := first; k <= total; k += stride {
		_, a, ack := powerFailAt(t, k)
		tried = append(tried, k)
		if a {
			accepted = append(accepted, k)
		}
		if ack {
			acked = append(acked, k)
		}
	}
	t.Logf("the scenario makes %d syncs; the power failed at syncs %v in turn, in %v; the report was answered 250 when it failed at %v, acknowledged at %v",
		total, tried, time.Since(start).Round(time.Millisecond), accepted, acked)
}

// powerFailAt plays the scenario with the power failing at its k-th sync (0:
// never), checks what survived, and returns the syncs the scenario made,
// whether the report was answered 250 and whether its acknowledgement left.
func powerFailAt(t *testing.T, k int) (int, bool, bool) {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	dataDir := filepath.Join(mnt, "embargo")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := powerfs.New()
	m, err := disk.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Unmount() }()
	rec := queuetest.NewRecorder(t)
	// The recording relay's rules with this configuration (docs/threat-model.md §2.2).
	rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test"}, Encrypted: []string{"distributors+bounces-"}})
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n[governance]\nquorum = 1\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[smtp]\nlisten = %q\nmin_free_bytes = 0\n[relay]\nurl = \"smtp://%s\"\n",
		dataDir, addr, rec.Addr()))
	if k > 0 {
		disk.FailAtSync(k)
	}

	cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
	var sent chan error
	if waitUntil(func() bool { return listening(addr) || disk.Failed() }) && !disk.Failed() {
		sent = make(chan error, 1)
		go func() { sent <- sendOne(addr, "first") }()
		waitUntil(func() bool { return len(sent) > 0 || disk.Failed() })
		// Its acknowledgement, unless the power fails first.
		waitUntil(func() bool { return len(rec.Messages()) >= 2 || disk.Failed() })
	}
	syncs := disk.Syncs()
	r, err := m.KillAndCut(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	accepted := false
	if sent != nil {
		select {
		case err := <-sent:
			accepted = err == nil
		case <-time.After(20 * time.Second):
			t.Fatalf("power failure at sync %d: the report's session did not end after the cut", k)
		}
	}
	ackKey := securityKeyIn(rec.Messages())
	if k == 0 && (!accepted || ackKey == "") {
		t.Fatalf("without a power failure: accepted %v, acknowledgement key %q\n%s", accepted, ackKey, out.String())
	}
	if m, err = disk.Mount(mnt); err != nil {
		t.Fatal(err)
	}

	// The start after the failure.
	before := len(rec.Messages())
	cmd, out = embargoProcess(t, dir, "serve", "--config", cfg)
	waitPort(t, addr, out)
	if err := sendOne(addr, "second"); err != nil {
		t.Errorf("power failure at sync %d: a new report: %v\n%s", k, err, out.String())
	}
	for end := time.Now().Add(10 * time.Second); securityKeyIn(rec.Messages()[before:]) == "" && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if after := securityKeyIn(rec.Messages()[before:]); ackKey != "" && after != ackKey {
		t.Errorf("power failure at sync %d: the first reporter was given security key %s, the next %q", k, ackKey, after)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if stored := storedIn(t, dataDir, dir, "first@out.test"); accepted && !stored {
		t.Errorf("power failure at sync %d: the report answered 250 is not in the store (names lost at the cut: %q)", k, r.LostNames)
	}
	return syncs, accepted, ackKey != ""
}

// waitUntil polls cond for at most 20 s and returns its last value.
func waitUntil(cond func() bool) bool {
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func sendOne(addr, name string) error {
	from := name + "@out.test"
	msg := fmt.Sprintf("From: %s\r\nSubject: report\r\nMessage-ID: <%s>\r\n\r\nbody\r\n", from, from)
	return daemontest.SendSMTP(addr, from, []string{"security@ex.test"}, []byte(msg))
}

var ackKeyRE = regexp.MustCompile(`gpg --encrypt --armor -r ([0-9A-F]{40})`)

// securityKeyIn returns the security key named in the first
// acknowledgement among msgs, or "".
func securityKeyIn(msgs []queuetest.Message) string {
	for _, m := range msgs {
		if k := ackKeyRE.FindStringSubmatch(string(m.Data)); k != nil {
			return k[1]
		}
	}
	return ""
}

// storedIn reports whether the report with Message-ID mid is in the store
// of dataDir, read in a copy under scratch (a page fault on a FUSE mount
// this process serves can deadlock it).
func storedIn(t *testing.T, dataDir, scratch, mid string) bool {
	t.Helper()
	check := filepath.Join(scratch, "check")
	if err := copyTree(dataDir, check); err != nil {
		t.Fatal(err)
	}
	db, err := daemon.OpenStore(check, true)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	defer db.Close()
	ok := false
	db.View(func(tx *bolt.Tx) error {
		_, ok = incidentdb.IncidentOf(tx, mid)
		return nil
	})
	return ok
}
