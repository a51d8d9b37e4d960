package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// TestDiskFullEndToEnd fills a real (FUSE) file system under the daemon
// with reports over SMTP (docs/threat-model.md A7). With the reserve, MAIL
// gets 452 4.3.1 once statfs shows less free than [smtp] min_free_bytes,
// before any commit fails. With the reserve off, reports go on until a
// commit meets ENOSPC, which answers 451, never 250 or 5xx. Once the disk
// has room again the same daemon takes mail, without a restart; the store
// passes its checks and holds every report that got 250 exactly once. The
// daemon runs as a child: the test process serves the file system, and
// bbolt's page faults on it must not stop the server's goroutines.
func TestDiskFullEndToEnd(t *testing.T) {
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the full file system needs FUSE: %v", err)
	}
	const reserve = 512 << 10
	disk := powerfs.New()
	mnt := t.TempDir()
	m, err := disk.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	// One sender's reports, as many as fill the disk: no intake limit.
	h := daemontest.New(t, daemontest.Config{Extra: "[intake]\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n"},
		daemon.Options{NoTick: true})
	h.Stop()
	dataDir := filepath.Join(mnt, "data")
	addr := daemontest.FreePort(t)
	toml := strings.Replace(h.TOML, fmt.Sprintf("data_dir = %q", h.Dir), fmt.Sprintf("data_dir = %q", dataDir), 1)
	toml = strings.Replace(toml, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1)
	cfg := func(minFree int) string {
		p := filepath.Join(t.TempDir(), "embargo.toml")
		daemontest.WriteFile(t, p, strings.Replace(toml, "[smtp]\n", fmt.Sprintf("[smtp]\nmin_free_bytes = %d\n", minFree), 1))
		return p
	}
	body := strings.Repeat("a finding on a disk that fills up\n", 480) // 16 KiB
	accepted := map[string]bool{}
	n := 0
	send := func() (string, int, string) {
		n++
		subj := fmt.Sprintf("full-%03d", n)
		err := daemontest.SendSMTP(addr, "rep@out.test", []string{"security@ex.test"},
			[]byte(daemontest.CRLF(daemontest.Report("rep@out.test", subj, body))))
		code, enh := daemontest.Code(err)
		if err == nil {
			code, accepted[subj] = 250, true
		}
		return subj, code, enh
	}

	// The reserve: 452 4.3.1 at MAIL before the disk is full.
	c := startChild(t, cfg(reserve), addr)
	disk.SetCapacity(disk.Used() + reserve + 1<<20)
	for code, enh := 250, ""; code != 452; time.Sleep(100 * time.Millisecond) {
		var subj string
		subj, code, enh = send()
		switch {
		case code == 452 && enh == "4.3.1":
			if free := statfsFree(t, dataDir); free >= reserve {
				t.Fatalf("%s: 452 with %d bytes free, more than the reserve", subj, free)
			}
		case code != 250 || n > 200:
			t.Fatalf("%s with the reserve: %d %s, want 250 until 452 4.3.1 at MAIL\n%.3000s", subj, code, enh, c.out.String())
		}
	}
	t.Logf("with the reserve: %d reports taken, then 452 4.3.1 with %d bytes free", len(accepted), statfsFree(t, dataDir))
	stopChild(t, c)

	// No reserve: the commit meets ENOSPC and answers 451.
	c = startChild(t, cfg(0), addr)
	full := 0
	for full < 3 {
		subj, code, enh := send()
		switch {
		case code == 451:
			full++
		case code == 250 && full == 0 && n < 400:
		case code == 250:
			// A small commit may fit in pages the store freed: not
			// an error, as long as it is stored (checked below).
		default:
			t.Fatalf("%s without the reserve: %d %s, want 250 until the disk is full, then 451\n%.3000s", subj, code, enh, c.out.String())
		}
	}
	t.Logf("without the reserve: %d reports taken in all, %d bytes free", len(accepted), statfsFree(t, dataDir))

	// Room again: the same daemon takes mail.
	disk.SetCapacity(disk.Used() + 16<<20)
	if subj, code, enh := send(); code != 250 {
		t.Fatalf("%s with room again: %d %s, want 250 without a restart\n%.3000s", subj, code, enh, c.out.String())
	}
	stopChild(t, c)
	checkFullStore(t, dataDir, accepted)
}

// checkFullStore checks a copy of the store in dataDir (bbolt maps it: not
// in the process that serves the file system) and that it holds each
// accepted report's incident exactly once.
func checkFullStore(t *testing.T, dataDir string, accepted map[string]bool) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, daemon.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), daemon.DBFile)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := daemon.CheckStoreFile(path); err != nil {
		t.Fatalf("the store after the full disk: %v", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := map[string]int{}
	db.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, inc := range incs {
			got[inc.Subject]++
		}
		return nil
	})
	for subj := range accepted {
		if got[subj] != 1 {
			t.Errorf("%s got 250 and is stored %d times", subj, got[subj])
		}
	}
	for subj, k := range got {
		if !accepted[subj] {
			t.Errorf("%s is stored %d times without a 250", subj, k)
		}
	}
}

func statfsFree(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// stopChild stops the child with SIGTERM and waits for a clean exit.
func stopChild(t *testing.T, c *child) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("the child did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
}
