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
// clients send reports; the child is killed and the power cut, at a random
// instant or at a random fsync: what was not synced is gone (half the cuts
// are torn: a random part of the unsynced pages is kept). The daemon starts
// again on what survived. After the cycles, a clean run serves a new report
// and drains the queue. Invariants, as TestCrashLoop's: every report
// answered 250 is in the store, once (one incident, one acknowledgement, one
// committee copy); the store passes bbolt's check; no incident ID named in
// an acknowledgement was given to another report; the security and DKIM
// keys given out are kept; each kill sends at most the deliveries in flight
// again. EMBARGO_POWERLOSS_CYCLES sets the cuts (default 8),
// EMBARGO_POWERLOSS_SEED the random choices (logged by every run).
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
	if s := os.Getenv("EMBARGO_POWERLOSS_SEED"); s != "" {
		fmt.Sscan(s, &seed) // the cuts of a logged run again (their timing still varies)
	}
	t.Logf("seed %d (EMBARGO_POWERLOSS_SEED)", seed)
	dir := t.TempDir()
	p := &powerLoop{
		t: t, dir: dir, mnt: filepath.Join(dir, "data"),
		// The data directory does not exist: the first start makes it, as
		// `embargo serve` on a fresh machine does.
		dataDir:    filepath.Join(dir, "data", "embargo"),
		rec:        queuetest.NewRecorder(t),
		rng:        rand.New(rand.NewPCG(seed, 42)),
		disk:       powerfs.New(),
		load:       &crashLoad{sent: map[string]string{}, accepted: map[string]string{}},
		ignoreSync: os.Getenv("EMBARGO_POWERLOSS_IGNORE_SYNC") == "1",
		addr:       daemontest.FreePort(t),
		cfg:        filepath.Join(dir, "embargo.toml"),
	}
	if err := os.Mkdir(p.mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if p.m, err = p.disk.Mount(p.mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.m.Unmount() })
	daemontest.WriteFile(t, p.cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\n[intake]\nacks_per_sender_per_day = 1000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n[governance]\nquorum = 1\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[smtp]\nlisten = %q\nmax_connections_per_ip = 50\nmin_free_bytes = 0\n[dkim]\nselector = \"pl\"\n[relay]\nurl = \"smtp://%s\"\n",
		p.dataDir, p.addr, p.rec.Addr()))
	// The recording relay's rules with this configuration (docs/threat-model.md
	// §2.2); not DKIM: a power cut may take the key generated at the first
	// start, and the next start makes another.
	p.rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test"}, Encrypted: []string{"distributors+bounces-"}})

	start := time.Now()
	for i := range cycles {
		p.cycle(i)
	}
	p.lastRun()
	stored, queued, incidents := p.readStore()
	t.Logf("%d cuts in %v, %d unsynced bytes dropped or torn in all (%d syncs)", cycles, time.Since(start).Round(time.Millisecond), p.dropped, p.disk.Syncs())
	checkIncidentIDs(t, incidents, p.rec.Messages())
	tallyCrashLoop(t, cycles, p.load, stored, p.rec.Messages(), p.lives, queued)
}

// powerLoop is the state of TestPowerLoss.
type powerLoop struct {
	t                 *testing.T
	dir, mnt, dataDir string
	cfg, addr         string
	rec               *queuetest.Recorder
	rng               *rand.Rand
	disk              *powerfs.Disk
	m                 *powerfs.Mount
	load              *crashLoad
	ignoreSync        bool
	lives             []int    // the relay's message count when each run started
	dkimKeys          []string // the DKIM key each run of the daemon signed with
	dropped           int64    // unsynced bytes discarded by the cuts
}

// cycle starts the daemon, lets eight clients send reports, kills it and
// cuts the power, and mounts what survived.
func (p *powerLoop) cycle(i int) {
	t := p.t
	p.lives = append(p.lives, len(p.rec.Messages()))
	cmd, out := embargoProcess(t, p.dir, "serve", "--config", p.cfg)
	waitPort(t, p.addr, out)
	p.dkimKeys = append(p.dkimKeys, readKey(t, p.dataDir))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { sendReports(p.addr, p.load, stop) })
	}
	// Cut while reports arrive: every second cycle after this run's first
	// 250 and a random part of a second, the others at a random fsync
	// (between two steps of a commit, most likely).
	if i%2 == 0 {
		waitAccepted(p.load, len(p.load.acceptedNow())+1, 10*time.Second)
		time.Sleep(time.Duration(p.rng.IntN(1200)) * time.Millisecond)
	} else {
		p.disk.FailAtSync(1 + p.rng.IntN(100))
		for end := time.Now().Add(5 * time.Second); !p.disk.Failed() && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	var tear *rand.Rand
	if i%4 >= 2 && !p.ignoreSync { // a lying disk torn is a damaged store, refused (A5)
		tear = p.rng
	}
	r, err := p.m.KillAndCut(cmd, tear)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("cut %d: %v", i+1, err)
	}
	p.dropped += r.Unsynced
	t.Logf("cut %d (torn %v): %d files, %d with unsynced data, %d unsynced bytes, %d pages dropped, %d kept torn; unsynced: %q; names not synced: %q; %d accepted so far",
		i+1, tear != nil, r.Files, r.DirtyFiles, r.Unsynced, r.DroppedPages, r.TornPages, r.DirtyNames, r.LostNames, len(p.load.accepted))
	if p.m, err = p.disk.Mount(p.mnt); err != nil {
		t.Fatal(err)
	}
	if p.ignoreSync {
		p.disk.IgnoreSync(true)
	}
}

// lastRun is a clean run after the cuts: the DKIM key of every run that sent
// mail is still there, a new report is served, the queue drains.
func (p *powerLoop) lastRun() {
	t := p.t
	p.lives = append(p.lives, len(p.rec.Messages()))
	cmd, out := embargoProcess(t, p.dir, "serve", "--config", p.cfg)
	waitPort(t, p.addr, out)
	final := readKey(t, p.dataDir)
	for i, k := range p.dkimKeys {
		if sent := p.lives[i+1] > p.lives[i]; sent && k != final {
			t.Errorf("run %d of the daemon signed mail with a DKIM key that a later cut replaced (generated again: the published key no longer matches)", i+1)
		}
	}
	n := p.load.next()
	from, mid := fmt.Sprintf("rep%d@out.test", n), fmt.Sprintf("crash%d@out.test", n)
	p.load.sent[mid] = from
	msg := fmt.Sprintf("From: %s\r\nSubject: after the cuts\r\nMessage-ID: <%s>\r\n\r\nbody\r\n", from, mid)
	if err := daemontest.SendSMTP(p.addr, from, []string{"security@ex.test"}, []byte(msg)); err != nil {
		t.Errorf("a new report after the cuts: %v\n%s", err, out.String())
	} else {
		p.load.accepted[mid] = from
	}
	progress, delivered := time.Now(), 0
	for !queueEmptyChild(p.dir, p.cfg) && time.Since(progress) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		if k := len(p.rec.Messages()); k > delivered {
			progress, delivered = time.Now(), k
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// readStore opens the store, with every opener's checks and bbolt's, in a
// copy: bbolt maps its file, and a page fault on a FUSE mount served by this
// very process can deadlock it. It returns the reports stored (Message-ID →
// sender), the rows still queued and the incidents.
func (p *powerLoop) readStore() (map[string]string, int, []workflow.Incident) {
	t := p.t
	check := filepath.Join(p.dir, "check")
	if err := copyTree(p.dataDir, check); err != nil {
		t.Fatal(err)
	}
	db, err := daemon.OpenStore(check, true)
	if err != nil {
		t.Fatalf("store after the cuts: %v", err)
	}
	defer db.Close()
	stored, queued := map[string]string{}, 0
	var incidents []workflow.Incident
	err = db.View(func(tx *bolt.Tx) error {
		for mid, from := range p.load.sent {
			if _, ok := incidentdb.IncidentOf(tx, mid); ok {
				stored[mid] = from
			}
		}
		rows, err := queue.List(tx)
		queued = len(rows)
		if err != nil {
			return err
		}
		incidents, err = incidentdb.List(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return stored, queued, incidents
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
