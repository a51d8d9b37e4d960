package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// TestPowerLoss is the power-loss loop of docs/threat-model.md §2.4: the
// daemon runs as a child process with its data directory on powerfs, a FUSE
// file system that keeps every write since the last fsync in memory; eight
// clients send reports; at a random instant the child is killed and the
// power cut (at a random instant, or at a random fsync): what was not synced is gone (half the cuts are torn: a random
// part of the unsynced pages is kept). The daemon starts again on what
// survived. After the cycles, a clean run serves a new report and drains the
// queue. Invariants, as TestCrashLoop's: every report answered 250 is in the
// store, once (one incident, one acknowledgement, one committee copy); the
// store passes bbolt's check; no incident ID named in an acknowledgement was
// given to another report; each kill sends at most the deliveries in flight
// again. EMBARGO_POWERLOSS_CYCLES sets the cuts (default 8).
//
// EMBARGO_POWERLOSS_IGNORE_SYNC=1 makes the disk ignore fsync from the
// second run of the daemon on (the store and keys exist by then), as bbolt's
// NoSync would, and tears no cut: the test must fail, losing reports
// answered 250. (Torn, the store is damaged and refused at the next start.)
func TestPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("power-loss loop skipped in -short mode")
	}
	if err := powerfs.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "SKIP TestPowerLoss: %v\n", err)
		t.Skipf("power-loss loop needs FUSE: %v", err)
	}
	cycles := 8
	if s := os.Getenv("EMBARGO_POWERLOSS_CYCLES"); s != "" {
		fmt.Sscan(s, &cycles)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 42))
	t.Logf("seed %d", seed)
	rec := queuetest.NewRecorder(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "data")
	// The data directory does not exist: the first start makes it, as
	// `embargo serve` on a fresh machine does.
	dataDir := filepath.Join(mnt, "embargo")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := powerfs.New()
	m, err := disk.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n[intake]\nacks_per_sender_per_day = 1000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n[governance]\nquorum = 1\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[smtp]\nlisten = %q\nmax_connections_per_ip = 50\nmin_free_bytes = 0\n[dkim]\nselector = \"pl\"\n[relay]\nurl = \"smtp://%s\"\n",
		dataDir, addr, rec.Addr()))

	ignoreSync := os.Getenv("EMBARGO_POWERLOSS_IGNORE_SYNC") == "1"
	start := time.Now()
	load := &crashLoad{sent: map[string]string{}, accepted: map[string]string{}}
	var lives []int
	var dropped int64
	var dkimKeys []string // the DKIM key each run of the daemon signed with
	for i := range cycles {
		lives = append(lives, len(rec.Messages()))
		cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
		waitPort(t, addr, out)
		dkimKeys = append(dkimKeys, readKey(t, dataDir))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { sendReports(addr, load, stop) })
		}
		// Cut while reports arrive: every second cycle after this run's
		// first 250 and a random part of a second, the others at a random
		// fsync (between two steps of a commit, most likely).
		if i%2 == 0 {
			waitAccepted(load, len(load.acceptedNow())+1, 10*time.Second)
			time.Sleep(time.Duration(rng.IntN(1200)) * time.Millisecond)
		} else {
			disk.FailAtSync(1 + rng.IntN(100))
			for end := time.Now().Add(5 * time.Second); !disk.Failed() && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		var tear *rand.Rand
		if i%4 >= 2 && !ignoreSync { // a lying disk torn is a damaged store, refused (A5)
			tear = rng
		}
		r, err := m.Cut(tear)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("cut %d: %v", i+1, err)
		}
		dropped += r.Unsynced
		t.Logf("cut %d (torn %v): %d files, %d with unsynced data, %d unsynced bytes, %d pages dropped, %d kept torn; unsynced: %q; names not synced: %q; %d accepted so far",
			i+1, tear != nil, r.Files, r.DirtyFiles, r.Unsynced, r.DroppedPages, r.TornPages, r.DirtyNames, r.LostNames, len(load.accepted))
		if m, err = disk.Mount(mnt); err != nil {
			t.Fatal(err)
		}
		if ignoreSync {
			disk.IgnoreSync(true)
		}
	}

	// A last, clean run serves a new report and drains the queue.
	lives = append(lives, len(rec.Messages()))
	cmd, out := embargoProcess(t, dir, "serve", "--config", cfg)
	waitPort(t, addr, out)
	final := readKey(t, dataDir)
	for i, k := range dkimKeys {
		if sent := lives[i+1] > lives[i]; sent && k != final {
			t.Errorf("run %d of the daemon signed mail with a DKIM key that a later cut replaced (generated again: the published key no longer matches)", i+1)
		}
	}
	n := load.next()
	from, mid := fmt.Sprintf("rep%d@out.test", n), fmt.Sprintf("crash%d@out.test", n)
	load.sent[mid] = from
	msg := fmt.Sprintf("From: %s\r\nSubject: after the cuts\r\nMessage-ID: <%s>\r\n\r\nbody\r\n", from, mid)
	if err := daemontest.SendSMTP(addr, from, []string{"security@ex.test"}, []byte(msg)); err != nil {
		t.Errorf("a new report after %d cuts: %v\n%s", cycles, err, out.String())
	} else {
		load.accepted[mid] = from
	}
	progress, delivered := time.Now(), 0
	for !queueEmptyChild(dir, cfg) && time.Since(progress) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		if k := len(rec.Messages()); k > delivered {
			progress, delivered = time.Now(), k
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	// The store is checked in a copy: bbolt maps its file, and a page fault
	// on a FUSE mount served by this very process can deadlock it.
	check := filepath.Join(dir, "check")
	if err := copyTree(dataDir, check); err != nil {
		t.Fatal(err)
	}
	db, err := daemon.OpenStore(check, true)
	if err != nil {
		t.Fatalf("store after %d cuts: %v", cycles, err)
	}
	stored, queued := map[string]string{}, 0
	var incidents []workflow.Incident
	db.View(func(tx *bolt.Tx) error {
		for mid, from := range load.sent {
			if _, ok := incidentdb.IncidentOf(tx, mid); ok {
				stored[mid] = from
			}
		}
		rows, _ := queue.List(tx)
		queued = len(rows)
		incidents, err = incidentdb.List(tx)
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cuts in %v, %d unsynced bytes dropped or torn in all (%d syncs)", cycles, time.Since(start).Round(time.Millisecond), dropped, disk.Syncs())
	checkIncidentIDs(t, incidents, rec.Messages())
	tallyCrashLoop(t, cycles, load, stored, rec.Messages(), lives, queued)
}

func (l *crashLoad) acceptedNow() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.accepted)
}

// waitAccepted waits until n reports were accepted, at most d.
func waitAccepted(l *crashLoad, n int, d time.Duration) {
	for end := time.Now().Add(d); len(l.acceptedNow()) < n && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
}

// readKey returns the DKIM key the daemon generated in dataDir.
func readKey(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "keys", "dkim.key"))
	if err != nil {
		t.Fatalf("dkim key: %v", err)
	}
	return string(b)
}

// checkIncidentIDs: each stored report is one incident, and an incident ID
// an acknowledgement named belongs to the reporter it was sent to: an ID
// given out and then lost in a cut and given to another report would be two
// reporters told the same tracking ID.
func checkIncidentIDs(t *testing.T, incidents []workflow.Incident, msgs []queuetest.Message) {
	t.Helper()
	owner := map[workflow.ID]string{}
	per := map[string]int{}
	for _, inc := range incidents {
		owner[inc.ID] = inc.Reporter
		per[inc.Reporter]++
	}
	for rep, k := range per {
		if k > 1 {
			t.Errorf("%s's report is %d incidents", rep, k)
		}
	}
	idRE := regexp.MustCompile(`SEC-\d{4}-\d{4,}`)
	keyRE := regexp.MustCompile(`gpg --encrypt --armor -r ([0-9A-F]{40})`)
	told := 0
	fprs := map[string]int{}
	for _, m := range msgs {
		if len(m.To) != 1 || !strings.HasPrefix(m.To[0], "rep") {
			continue
		}
		for _, k := range keyRE.FindAllStringSubmatch(string(m.Data), -1) {
			fprs[k[1]]++
		}
		ids := map[string]bool{}
		for _, id := range idRE.FindAllString(string(m.Data), -1) {
			ids[id] = true
		}
		if len(ids) != 1 {
			t.Errorf("the acknowledgement to %s names %d incident IDs, want 1", m.To[0], len(ids))
			continue
		}
		for id := range ids {
			told++
			if got := owner[workflow.ID(id)]; got != m.To[0] {
				t.Errorf("%s was told %s, which is in the store as the report of %q", m.To[0], id, got)
			}
		}
	}
	if told == 0 {
		t.Error("no acknowledgement reached the relay")
	}
	// The security key, given to reporters in each acknowledgement, is the
	// one they encrypt to: a cut must not replace it.
	if len(fprs) != 1 {
		t.Errorf("the acknowledgements gave reporters %d different security keys (fingerprint: acknowledgements): %v", len(fprs), fprs)
	}
}

// queueEmptyChild asks the running daemon, through `embargo status --json`
// in a child process (the command would map the store itself, in this
// process, if the daemon did not answer), whether its queue is empty.
func queueEmptyChild(dir, cfg string) bool {
	cmd := exec.Command(os.Args[0], "status", "--json", "--config", cfg)
	cmd.Env = append(os.Environ(), "EMBARGO_TEST_MAIN=1")
	cmd.Dir = dir
	out, err := cmd.Output()
	var st struct{ Queue queue.Counts }
	if err != nil || json.Unmarshal(out, &st) != nil {
		return false
	}
	return st.Queue.Queued+st.Queue.Sending == 0
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(to, 0o700)
		case !fi.Mode().IsRegular():
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		outf, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(outf, in)
		return errors.Join(err, outf.Close())
	})
}
