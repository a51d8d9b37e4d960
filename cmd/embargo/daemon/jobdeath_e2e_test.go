package daemon_test

import (
	"bytes"
	"fmt"
	"net/mail"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/workflow"
)

// jobShift is how far ahead of the real clock the children of
// TestProcessKilledInJob run: a week, past the proposals' deadlines
// (lazy_consensus_days = 5) and into the next week's digest.
const jobShift = 7 * 24 * time.Hour

// The protected subjects of the digest and of the skip alerts.
const (
	digestSubject = "[embargo] weekly digest, week of "
	skippedSuffix = " skipped"
)

// jobFixture is a store on which the governance tick and the weekly digest
// both fall due a week later: the committee alice and bob with keys, a
// distributor, an application alice approved (it passes by lazy
// consensus: the roster changes, the applicant is welcomed, the SRC told)
// and alice's /member remove of the distributor (one approval of two: it
// expires, the SRC told). An in-process daemon prepares it and stops; its
// first start recorded this week, so the next digest is the next week's.
// Each run works on its own copy.
type jobFixture struct {
	f                 *cmdFixture
	dist              *distributor
	app               *applicant
	appID, removeID   string
	week              time.Time // the week of the digest the runs send
	admitted, expired string    // the protected subjects of the SRC's notices
}

func newJobFixture(t *testing.T) *jobFixture {
	t.Helper()
	d := &distributor{addr: "one@vendor1.test"}
	f := newCmdFixtureWith(t, []*distributor{d}, "")
	jf := &jobFixture{f: f, dist: d, app: newApplicant(t, f, "person@newdistro.test", "security@newdistro.test")}
	jf.app.apply(t, f, application(jf.app.alias, d.addr))
	text, _ := decrypt(t, f.alice, f.next(3), "alice@ex.test", "A distributor application arrived") // alice, bob, the acknowledgement
	jf.appID = govRE.FindString(text)
	f.h.MustSend("alice@ex.test", []string{"security+" + jf.appID + "@ex.test"},
		f.signed(f.alice, f.afpr, "alice@ex.test", "security+"+jf.appID+"@ex.test", "", "/admit\n"))
	f.next(4) // the receipt, bob's copy, the approval's notice to alice and bob
	f.h.MustSend("alice@ex.test", []string{"security@ex.test"},
		f.signed(f.alice, f.afpr, "alice@ex.test", "security@ex.test", "", "/member remove "+d.addr+" no longer qualifies\n"))
	msgs := f.next(3) // the receipt, the signature awaited to alice and bob
	jf.removeID = govRE.FindString(f.receipt(f.alice, msgs, "alice@ex.test"))
	if jf.appID == "" || jf.removeID == "" || jf.appID == jf.removeID {
		t.Fatalf("proposals %q and %q", jf.appID, jf.removeID)
	}
	f.h.Stop()
	jf.week = workflow.ShiftStart(time.Now().Add(jobShift))
	jf.admitted = "[" + jf.appID + "] Roster change"
	jf.expired = "[" + jf.removeID + "] Roster proposal expired"
	return jf
}

// jobRun is one run of the fixture: its own copy of the data directory,
// relay and child configuration.
type jobRun struct {
	jf                  *jobFixture
	rec                 *queuetest.Recorder
	dataDir, file, addr string
	snaps               []killSnapshot
}

func (jf *jobFixture) newRun(t *testing.T) *jobRun {
	t.Helper()
	h := jf.f.h
	r := &jobRun{jf: jf, rec: queuetest.NewRecorder(t), dataDir: filepath.Join(t.TempDir(), "data")}
	h.Expect(r.rec)
	if err := copyDurable(h.Dir, r.dataDir); err != nil {
		t.Fatal(err)
	}
	r.addr = daemontest.FreePort(t)
	r.file = filepath.Join(t.TempDir(), "embargo.toml")
	toml := strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", r.addr), 1)
	toml = strings.Replace(toml, fmt.Sprintf("data_dir = %q", h.Dir), fmt.Sprintf("data_dir = %q", r.dataDir), 1)
	toml = strings.Replace(toml, "smtp://"+h.Rec.Addr(), "smtp://"+r.rec.Addr(), 1)
	daemontest.WriteFile(t, r.file, toml)
	return r
}

// start starts a child on the run's data directory, a week ahead.
func (r *jobRun) start(t *testing.T, env ...string) *child {
	t.Helper()
	return startDying(t, r.file, append([]string{clockShiftEnv + "=" + jobShift.String()}, env...)...)
}

// TestProcessKilledInJob: the governance tick and the weekly digest fall
// due at a child daemon's start, which is killed with SIGKILL once at a
// step boundary of one of them (docs/design.md §1, §6; docs/threat-model.md
// A2, A6): as it starts (inside its record in the in-flight file); inside
// its transaction once the governance record with its decisions, or the
// digest's week marker, is written and before its mail is rendered; at
// the end of the transaction function, its mail queued, before the
// commit; once it committed; and for the governance tick once the roster
// it changed was swapped in. The store the death leaves holds the whole
// step or none of it. The next start, on the same clock, finishes: each
// member gets the week's digest once, both governance decisions are made
// once with each of their mails (the applicant's welcome, the SRC's two
// notices) once, a copy comes again only when the relay had taken it and
// the store had not recorded it (checkResent), and one death quarantines
// nothing: no skip alert, the job run again alone and cleared.
func TestProcessKilledInJob(t *testing.T) {
	jf := newJobFixture(t)
	for _, p := range []struct {
		job, step string
		done      bool // the step committed at the death
	}{
		{listd.JobGov, "start", false},
		{listd.JobGov, "saved", false},
		{listd.JobGov, "queued", false},
		{listd.JobGov, "committed", true},
		{listd.JobGov, "refreshed", true},
		{listd.JobDigest, "start", false},
		{listd.JobDigest, "marked", false},
		{listd.JobDigest, "queued", false},
		{listd.JobDigest, "committed", true},
	} {
		t.Run(p.job+" "+p.step, func(t *testing.T) {
			t.Parallel()
			r := jf.newRun(t)
			arg := strings.ReplaceAll(p.job, " ", "-") + ":" + p.step
			c := r.start(t, killAtEnv+"=job "+arg, killMarkerEnv+"="+filepath.Join(t.TempDir(), "killed"))
			if err := waitKilled(c); err != nil {
				t.Fatal(err)
			}
			r.snaps = append(r.snaps, deathSnapshot(t, r.dataDir, len(r.rec.Messages()), nil))
			r.checkDeath(t, p.job, p.done)
			// The job with a death runs again alone and is cleared; a
			// digest whose commit came before the death is not run again
			// (its week is sent: the counts show it once), and its count
			// is cleared as the next start finds the week sent.
			r.finish(t, p.job)
			r.checkSuspects(t)
		})
	}
}

// checkDeath checks what the store holds after a death in job: its step
// whole (done) or none of it. The governance tick's step is both
// decisions with their mail (the welcome: queued, or at the relay); the
// digest's, its week marker with its mail.
func (r *jobRun) checkDeath(t *testing.T, job string, done bool) {
	t.Helper()
	db, err := daemon.OpenStore(r.dataDir, true)
	if err != nil {
		t.Fatalf("the store after the death: %v", err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		st, err := govdb.Load(tx)
		if err != nil {
			t.Fatal(err)
		}
		open := len(st.Open())
		marked := incidentdb.Meta(tx, "digest_week") == r.jf.week.Format(time.RFC3339) // listd's metaDigest
		rows := queuedKinds(t, tx)
		welcome := rows["gov-distributor-welcome"] + distinctTo(t, r.rec.Messages(), r.jf.app.alias)
		digest := rows["digest"]
		if digest == 0 && r.sentDigest() {
			digest = 1
		}
		switch {
		case job == listd.JobGov && done && (open != 0 || welcome != 1):
			t.Errorf("killed after the governance tick's commit: %d proposals open (want 0), %d welcomes queued or sent (want 1)", open, welcome)
		case job == listd.JobGov && !done && (open != 2 || welcome != 0 || rows["gov-roster-change"] != 0):
			t.Errorf("killed before the governance tick's commit: %d proposals open (want 2), %d welcomes and %d notices queued (want none)",
				open, welcome, rows["gov-roster-change"])
		case job == listd.JobGov && marked:
			t.Error("killed in the governance tick: the digest after it is marked sent")
		case job == listd.JobDigest && open != 0:
			t.Errorf("killed in the digest: %d proposals open, want the governance tick done before it", open)
		case job == listd.JobDigest && (marked != done || (digest > 0) != done):
			t.Errorf("killed in the digest (committed: %v): the week marked %v, %d digest rows queued or sent", done, marked, digest)
		}
		return nil
	})
}

// queuedKinds counts the queue's rows by kind.
func queuedKinds(t *testing.T, tx *bolt.Tx) map[string]int {
	t.Helper()
	rows, err := queue.List(tx)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range rows {
		n[r.Kind]++
	}
	return n
}

// sentDigest reports whether the relay got alice's digest (sealed: the
// outer subject is generic, so this reads the protected one).
func (r *jobRun) sentDigest() bool {
	alice := &mailbox{g: r.jf.f.alice, addr: "alice@ex.test"}
	return alice.count(r.rec.Messages(), digestSubject) > 0
}

// finish starts the child once more, waits for every mail of both jobs
// and, unless clears is "", for the log line saying that job ran again
// after its death and was cleared; then it stops the child and checks
// what came (checkJobMail, checkStore). It returns the child's output.
func (r *jobRun) finish(t *testing.T, clears string) string {
	t.Helper()
	jf := r.jf
	c := r.start(t)
	waitListen(t, c, r.addr)
	boxes := []*mailbox{{g: jf.f.alice, addr: "alice@ex.test"}, {g: jf.f.bob, addr: "bob@ex.test"}}
	// Generous: the start's tick seals for two members, gpg decrypts each
	// new copy, on two CPUs shared with parallel runs and the race
	// detector.
	daemontest.WaitForWithin(t, 90*time.Second, "the digest, the welcome, both notices and the job cleared", func() bool {
		if clears != "" && !clearedJob(c.out.String(), clears) {
			return false
		}
		msgs := r.rec.Messages()
		if distinctTo(t, msgs, jf.app.alias) == 0 {
			return false
		}
		for _, b := range boxes {
			if b.count(msgs, digestSubject) == 0 || b.count(msgs, jf.admitted) == 0 || b.count(msgs, jf.expired) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // nothing more should come
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
	r.checkJobMail(t, boxes)
	r.checkStore(t)
	return c.out.String()
}

// clearedJob reports whether a child's log says that job ran without a
// death after one and its count was cleared (listd's forgetWork).
func clearedJob(out, job string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "ran without a death after one; cleared") && strings.Contains(l, `job="`+job+`"`) {
			return true
		}
	}
	return false
}

// checkJobMail: each member got the digest and both notices once (one
// Message-ID each), no skip alert; the applicant one welcome; a copy again
// only as the death allows.
func (r *jobRun) checkJobMail(t *testing.T, boxes []*mailbox) {
	t.Helper()
	jf := r.jf
	msgs := r.rec.Messages()
	for _, b := range boxes {
		for _, s := range []string{digestSubject, jf.admitted, jf.expired} {
			if n := b.count(msgs, s); n != 1 {
				t.Errorf("%s got %d messages %q, want 1", b.addr, n, s)
			}
		}
		for s := range b.subj {
			if strings.HasSuffix(b.subj[s], skippedSuffix) {
				t.Errorf("%s was told %q after one death", b.addr, b.subj[s])
			}
		}
	}
	if n := distinctTo(t, msgs, jf.app.alias); n != 1 {
		t.Errorf("the applicant got %d welcomes, want 1", n)
	}
	if n := distinctTo(t, msgs, jf.dist.addr); n != 0 {
		t.Errorf("the distributor whose removal expired got %d messages", n)
	}
	again := checkResent(t, msgs, r.snaps, nil)
	t.Logf("%d copies, %d sent again", len(msgs), again)
}

// checkStore: the store passes its check; the application passed and the
// removal expired, once each; the roster holds the new distributor once
// and the old one still; the week's digest is marked sent.
func (r *jobRun) checkStore(t *testing.T) {
	t.Helper()
	db, err := daemon.OpenStore(r.dataDir, true) // the pre-open check and bbolt's
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		st, err := govdb.Load(tx)
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]governance.Status{}
		for _, p := range st.Proposals {
			status[p.ID] = p.Status
		}
		if len(st.Proposals) != 2 || status[r.jf.appID] != governance.StatusPassed || status[r.jf.removeID] != governance.StatusExpired {
			t.Errorf("proposals %v; want %s passed and %s expired", status, r.jf.appID, r.jf.removeID)
		}
		entries := map[string]int{}
		for _, e := range st.Overrides {
			entries[strings.ToLower(e.Email)]++
			if e.Removed {
				t.Errorf("%s removed", e.Email)
			}
		}
		if len(st.Overrides) != 1 || entries[r.jf.app.alias] != 1 {
			t.Errorf("roster changes by mail %v; want the new distributor once", entries)
		}
		if w := incidentdb.Meta(tx, "digest_week"); w != r.jf.week.Format(time.RFC3339) {
			t.Errorf("the digest marker is %q, want %s", w, r.jf.week.Format(time.RFC3339))
		}
		return nil
	})
}

// checkSuspects: one death quarantined nothing, and the job's count was
// cleared: the attempt table is empty.
func (r *jobRun) checkSuspects(t *testing.T) {
	t.Helper()
	for _, s := range suspects(t, r.dataDir) {
		t.Errorf("after the job ran again, the attempt table holds %+v", s)
	}
}

// mailbox reads the sealed mail to one member: each distinct copy
// (Message-ID) decrypted once, its protected subject kept.
type mailbox struct {
	g    *daemontest.GPG
	addr string
	subj map[string]string // Message-ID → protected subject
}

// count reads the new copies to the member among msgs and says how many
// distinct ones have a protected subject beginning with prefix.
func (b *mailbox) count(msgs []queuetest.Message, prefix string) int {
	if b.subj == nil {
		b.subj = map[string]string{}
	}
	for _, m := range msgs {
		if len(m.To) != 1 || m.To[0] != b.addr || !bytes.Contains(m.Data, []byte("BEGIN PGP MESSAGE")) {
			continue
		}
		id := messageIDOf(m)
		if _, ok := b.subj[id]; ok {
			continue
		}
		plain, _ := b.g.DecryptMIME(m.Data)
		if in, err := mail.ReadMessage(bytes.NewReader(plain)); err == nil {
			b.subj[id] = in.Header.Get("Subject")
		}
	}
	n := 0
	for _, s := range b.subj {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}
