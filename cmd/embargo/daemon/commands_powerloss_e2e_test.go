package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// The knobs of TestPowerLossCommands (besides EMBARGO_POWERFAIL_EVERY=1,
// the power failed at every sync, and EMBARGO_POWERLOSS_SEED).
// EMBARGO_POWERCMD_IGNORE_SYNC=1 makes the disk ignore fsync from the
// command message on, as a disk that lies about its write cache would: the
// test must fail, a command answered 250 lost at the cut.
const (
	powerCmdCutsEnv   = "EMBARGO_POWERCMD_CUTS" // the random cuts, default 6
	powerCmdIgnoreEnv = "EMBARGO_POWERCMD_IGNORE_SYNC"
)

// TestPowerLossCommands: a committee member's signed commands, encrypted to
// the security key as the committee requires, handled by a child daemon
// whose data directory is on powerfs, with the power failing while it
// handles them (docs/threat-model.md A1, A2, E3). Three command messages
// in an incident's thread: /accept, /lead, /severity high, /cve, /set and
// /disclose; a governance command (/member remove of a distributor, which
// opens a proposal: the quorum is 2); /notify, which sends the distributors
// their embargoed notices. Each is played once without a failure, counting
// its fsyncs and fdatasyncs from its arrival until its mail has left, and
// recording what it sends (distinct messages by recipient and kind) and
// what it stores (the incident's history entries of the message, the
// proposals, the phase). Then, from the state before it, with the power
// failing at a sync or cut at a random instant:
//
//   - right after the cut, before anything is sent again: a command answered
//     250 is applied, entirely; one not answered is applied entirely or not
//     at all;
//   - the daemon starts on what survived; alice's MTA sends again what got
//     no 250 (a duplicate if it was stored), and alice herself sends the same
//     signed text again in a new message (a new Message-ID);
//   - then the store passes the daemon's checks and records the step exactly
//     as the run without a failure did (each command applied once, one
//     proposal with one approval), the same messages were sent, each queued
//     once (one Message-ID; a copy in flight at the cut may go twice), alice
//     has the step's receipt and one more for her resend, which says it was
//     a replay and applied nothing.
//
// Subtest "each sync" fails the power at every second sync of each message
// (from the first or the second, at random; EMBARGO_POWERFAIL_EVERY=1:
// every sync); "random cuts" cuts EMBARGO_POWERCMD_CUTS times (default 6), each
// during a step chosen in turn, at a random sync or instant, half of them
// torn, seeded by EMBARGO_POWERLOSS_SEED. About 30 s; under the race
// detector, which slows the child daemons about fourfold, every eighth sync
// (one or two of each message) and 3 cuts by default.
func TestPowerLossCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("power cuts under signed commands skipped in -short mode")
	}
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the power-loss file system needs FUSE: %v", err)
	}
	s := newCmdPower(t)
	t.Run("each sync", func(t *testing.T) {
		stride := 2
		if raceEnabled {
			stride = 8
		}
		first := 1 + rand.IntN(stride)
		if os.Getenv("EMBARGO_POWERFAIL_EVERY") == "1" {
			stride, first = 1, 1
		}
		start := time.Now()
		for i, st := range s.steps {
			var tried, accepted, applied []int
			for k := first; k <= s.refs[i].syncs; k += stride {
				ok, done := s.run(t, i, powerCut{k: k})
				if ok {
					accepted = append(accepted, k)
				}
				if done {
					applied = append(applied, k)
				}
				tried = append(tried, k)
			}
			t.Logf("%s: %d syncs; the power failed at syncs %v in turn; the message was answered 250 at %v, applied at %v",
				st.name, s.refs[i].syncs, tried, accepted, applied)
		}
		t.Logf("in %v", time.Since(start).Round(time.Millisecond))
	})
	t.Run("random cuts", func(t *testing.T) {
		cuts := 6
		if raceEnabled {
			cuts = 3
		}
		if v := os.Getenv(powerCmdCutsEnv); v != "" {
			fmt.Sscan(v, &cuts)
		}
		seed := uint64(time.Now().UnixNano())
		if v := os.Getenv("EMBARGO_POWERLOSS_SEED"); v != "" {
			fmt.Sscan(v, &seed)
		}
		t.Logf("seed %d (EMBARGO_POWERLOSS_SEED), %d cuts (%s)", seed, cuts, powerCmdCutsEnv)
		rng := rand.New(rand.NewPCG(seed, 3))
		start := time.Now()
		for c := range cuts {
			i := c % len(s.steps)
			pc := powerCut{delay: time.Duration(rng.Int64N(int64(s.refs[i].took) + 1))}
			if rng.IntN(2) == 0 {
				pc = powerCut{k: 1 + rng.IntN(s.refs[i].syncs)}
			}
			// A lying disk torn is a damaged store, refused (A5): not torn.
			if rng.IntN(2) == 0 && os.Getenv(powerCmdIgnoreEnv) != "1" {
				pc.tear = rand.New(rand.NewPCG(rng.Uint64(), 5))
			}
			ok, done := s.run(t, i, pc)
			t.Logf("cut %d, %s: at sync %d or after %v, torn %v: answered 250 %v, applied %v", c+1, s.steps[i].name, pc.k, pc.delay.Round(time.Millisecond), pc.tear != nil, ok, done)
		}
		t.Logf("in %v", time.Since(start).Round(time.Millisecond))
	})
}

// cmdStep is one command message of the scenario: raw is what alice's MTA
// sends, and sends again after a lost 250; again is alice's own resend of
// the same signed text in a new message.
type cmdStep struct {
	name          string
	rcpt          string
	raw, again    []byte
	mid, againMID string
}

// stepRef is what one step does without a power failure.
type stepRef struct {
	syncs   int            // syncs from the message's arrival until its mail has left
	took    time.Duration  // how long that took
	effects map[string]int // distinct messages sent (raw's and again's), by recipient and kind
	applied string         // the store's record of the step (summary)
}

// cmdPower is the scenario of TestPowerLossCommands.
type cmdPower struct {
	f      *cmdFixture
	dists  []*distributor
	kinds  map[string]string // Message-ID → kind (kindOf)
	steps  []cmdStep
	base   []string // the data directory before each step (off powerfs)
	before []string // the summary of base[i] for step i
	refs   []stepRef
}

// powerCut is where the power fails: at the k-th sync after the command
// message arrives (k > 0), else after delay; torn with tear.
type powerCut struct {
	k     int
	delay time.Duration
	tear  *rand.Rand
}

// newCmdPower sets the incident up (a report, acknowledged and copied to
// the committee, with two distributors on the roster) in the harness, then
// plays each step once on powerfs without a failure.
func newCmdPower(t *testing.T) *cmdPower {
	d1, d2 := &distributor{addr: "one@vendor1.test"}, &distributor{addr: "two@vendor2.test"}
	f := newCmdFixtureWith(t, []*distributor{d1, d2}, "\n[commands]\nrequire_encryption = true\n")
	f.h.Stop()
	T := workflow.NextSlot(time.Now().UTC().Add(10*24*time.Hour), nil)
	s := &cmdPower{f: f, dists: []*distributor{d1, d2}, kinds: map[string]string{}, base: []string{f.h.Dir}}
	s.steps = []cmdStep{
		s.step("commands", "security+"+f.id+"@ex.test", "/accept\n/lead me\n/severity high\n/cve CVE-2026-12345\n"+
			"/set summary <<END\nheap overflow in the parser\nEND\n/set mitigation <<END\nDisable the parser.\nEND\n"+
			"/disclose "+T.Format("2006-01-02")+"\n"),
		s.step("governance", "security@ex.test", "/member remove two@vendor2.test no longer maintained\n"),
		s.step("notify", "security+"+f.id+"@ex.test", "/notify\n"),
	}
	for i, st := range s.steps {
		s.before = append(s.before, s.summary(t, s.base[i], st))
		ref, after := s.reference(t, i)
		s.refs = append(s.refs, ref)
		s.base = append(s.base, after)
		t.Logf("%s without a failure: %d syncs in %v; sends %v; stores %q", st.name, ref.syncs, ref.took.Round(time.Millisecond), ref.effects, ref.applied)
	}
	return s
}

// step signs text as alice, encrypted to the security key.
func (s *cmdPower) step(name, rcpt, text string) cmdStep {
	f := s.f
	enc := f.alice.Must([]byte(text), "--sign", "--encrypt", "--armor", "-u", f.afpr, "-r", f.secFpr)
	msg := func(mid string) []byte {
		m := fmt.Sprintf("From: alice@ex.test\nTo: %s\nSubject: Encrypted message\nDate: %s\nMessage-ID: <%s>\n\n%s",
			rcpt, time.Now().Format(time.RFC1123Z), mid, strings.ReplaceAll(string(enc), "\r\n", "\n"))
		return []byte(strings.ReplaceAll(m, "\n", "\r\n"))
	}
	mid := fmt.Sprintf("%s.%d@ex.test", name, time.Now().UnixNano())
	return cmdStep{name: name, rcpt: rcpt, raw: msg(mid), again: msg("again." + mid), mid: mid, againMID: "again." + mid}
}

// reference plays step i without a failure; it returns what the step did
// and the data directory after it, copied off powerfs.
func (s *cmdPower) reference(t *testing.T, i int) (stepRef, string) {
	t.Helper()
	st, rec := s.steps[i], s.f.h.Rec
	p := newPowerDisk(t, s.base[i])
	cfg, addr := s.config(t, p.dataDir)
	c := startDying(t, cfg)
	waitListen(t, c, addr)
	quiet(p.disk, rec)
	before, syncs, start := len(rec.Messages()), p.disk.Syncs(), time.Now()
	if err := daemontest.SendSMTP(addr, "alice@ex.test", []string{st.rcpt}, st.raw); err != nil {
		t.Fatalf("%s: %v\n%.3000s", st.name, err, c.out.String())
	}
	quiet(p.disk, rec)
	ref := stepRef{syncs: p.disk.Syncs() - syncs, took: time.Since(start) - quietFor}
	if err := daemontest.SendSMTP(addr, "alice@ex.test", []string{st.rcpt}, st.again); err != nil {
		t.Fatalf("%s sent again by alice: %v", st.name, err)
	}
	quiet(p.disk, rec)
	stopChild(t, c)
	msgs := rec.Messages()[before:]
	ref.effects, _ = s.effectsOf(t, msgs)
	after := p.copyOut(t)
	ref.applied = s.summary(t, after, st)
	for _, r := range s.receipts(t, msgs) {
		if strings.Contains(r, "Nothing applied") || strings.Contains(r, "refused") && !strings.Contains(r, "a replay") {
			t.Fatalf("%s: the commands were refused:\n%s", st.name, r)
		}
	}
	if ref.applied == s.before[i] || ref.syncs < 4 {
		t.Fatalf("%s changed nothing in the store (%q) or made %d syncs: the scenario tests nothing", st.name, ref.applied, ref.syncs)
	}
	return ref, after
}

// run plays step i from the state before it with the power failing as pc
// says, checks the invariants, and reports whether the command message was
// answered 250 before the cut, and whether it was applied at the cut.
func (s *cmdPower) run(t *testing.T, i int, pc powerCut) (accepted, applied bool) {
	t.Helper()
	st, ref, rec := s.steps[i], s.refs[i], s.f.h.Rec
	what := fmt.Sprintf("%s, power failed at sync %d or after %v", st.name, pc.k, pc.delay.Round(time.Millisecond))
	p := newPowerDisk(t, s.base[i])
	cfg, addr := s.config(t, p.dataDir)
	c := startDying(t, cfg)
	waitListen(t, c, addr)
	quiet(p.disk, rec)
	before := len(rec.Messages())
	if os.Getenv(powerCmdIgnoreEnv) == "1" {
		p.disk.IgnoreSync(true)
	}
	if pc.k > 0 {
		p.disk.FailAtSync(pc.k)
	}
	sent := make(chan error, 1)
	go func() { sent <- daemontest.SendSMTP(addr, "alice@ex.test", []string{st.rcpt}, st.raw) }()
	if pc.k > 0 {
		// Until the power fails; a run may make fewer syncs than the one
		// without a failure did (the queue's commits group differently):
		// then cut once it is idle.
		syncs, since := p.disk.Syncs(), time.Now()
		for end := time.Now().Add(20 * time.Second); !p.disk.Failed() && time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
			if n := p.disk.Syncs(); n != syncs || len(sent) == 0 {
				syncs, since = n, time.Now()
			} else if time.Since(since) > quietFor {
				break
			}
		}
	} else {
		time.Sleep(pc.delay)
	}
	r := p.killAndCut(t, c, pc.tear)
	var err error
	select {
	case err = <-sent:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: the session did not end after the cut", what)
	}
	accepted = err == nil
	switch got := s.summary(t, p.copyOut(t), st); {
	case got == ref.applied:
		applied = true
	case got == s.before[i] && !accepted:
	case got == s.before[i]:
		t.Errorf("%s: answered 250, and not applied after the cut (names lost: %q)", what, r.LostNames)
	default:
		t.Errorf("%s: after the cut the store records\n%q\nwant before the step\n%q\nor after it\n%q", what, got, s.before[i], ref.applied)
	}

	c = startDying(t, cfg)
	waitListen(t, c, addr)
	if !accepted {
		if err := daemontest.SendSMTP(addr, "alice@ex.test", []string{st.rcpt}, st.raw); err != nil {
			t.Errorf("%s: sent again after the cut: %v", what, err)
		}
	}
	if err := daemontest.SendSMTP(addr, "alice@ex.test", []string{st.rcpt}, st.again); err != nil {
		t.Errorf("%s: alice's own resend: %v", what, err)
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if eff, _ := s.effectsOf(t, rec.Messages()[before:]); covers(eff, ref.effects) {
			break
		}
	}
	quiet(p.disk, rec)
	stopChild(t, c)
	if got := s.summary(t, p.copyOut(t), st); got != ref.applied {
		t.Errorf("%s: the store records\n%q\nwant, as without a failure,\n%q", what, got, ref.applied)
	}
	s.checkMail(t, what, rec.Messages()[before:], ref)
	return accepted, applied
}

// checkMail compares what a run with a power failure sent with what the
// run without one did, and reads alice's receipts.
func (s *cmdPower) checkMail(t *testing.T, what string, msgs []queuetest.Message, ref stepRef) {
	t.Helper()
	eff, times := s.effectsOf(t, msgs)
	for k := range mergeKeys(eff, ref.effects) {
		if eff[k] != ref.effects[k] {
			t.Errorf("%s: %d distinct messages to %s, want %d", what, eff[k], k, ref.effects[k])
		}
	}
	for id, n := range times {
		if n > 2 {
			t.Errorf("%s: %s sent %d times, want at most twice (once more if in flight at the cut)", what, id, n)
		}
	}
	replays, others := 0, 0
	for _, r := range s.receipts(t, msgs) {
		if strings.Contains(r, "already processed (a replay); nothing applied") {
			replays++
		} else {
			others++
		}
	}
	if replays != 1 || others != 1 {
		t.Errorf("%s: alice got %d receipts saying her resend was a replay and %d others, want one of each", what, replays, others)
	}
}

// receipts decrypts alice's distinct receipts among msgs.
func (s *cmdPower) receipts(t *testing.T, msgs []queuetest.Message) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		id := messageIDOf(m)
		if seen[id] || s.kindOf(t, id, m) != "receipt" {
			continue
		}
		seen[id] = true
		plain, status := s.f.alice.DecryptMIME(m.Data)
		if !strings.Contains(status, "DECRYPTION_OKAY") {
			t.Fatalf("alice cannot decrypt her receipt %s: %s", id, status)
		}
		out = append(out, daemontest.MIMEText(plain))
	}
	return out
}

// summary is what the store at dir records of step st, after the daemon's
// checks of the store: the incident's phase and its history entries of
// the step's two messages, and the governance proposals.
func (s *cmdPower) summary(t *testing.T, dir string, st cmdStep) string {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store fails the daemon's checks: %v", err)
	}
	defer db.Close()
	var b strings.Builder
	err = db.View(func(tx *bolt.Tx) error {
		inc, err := incidentdb.Get(tx, workflow.ID(s.f.id))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "phase %s;", inc.Phase)
		for _, c := range inc.History {
			switch strings.Trim(c.MessageID, "<>") {
			case st.mid:
				fmt.Fprintf(&b, " %s;", c.Command)
			case st.againMID:
				fmt.Fprintf(&b, " again: %s;", c.Command)
			}
		}
		g, err := govdb.Load(tx)
		for _, p := range g.Proposals {
			fmt.Fprintf(&b, " proposal %s %s %s, %d approvals;", p.Kind, p.Email, p.Status, len(p.Approvals))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// config writes the harness's configuration for a child on dataDir and a
// free port.
func (s *cmdPower) config(t *testing.T, dataDir string) (file, addr string) {
	t.Helper()
	addr = daemontest.FreePort(t)
	toml := strings.Replace(s.f.h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1)
	toml = strings.Replace(toml, fmt.Sprintf("data_dir = %q", s.f.h.Dir), fmt.Sprintf("data_dir = %q", dataDir), 1)
	file = filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, file, toml)
	return file, addr
}

// killAndCut kills the child and cuts the power (torn with tear), and
// mounts what survived. A thread of the child waiting in an fsync that the
// failed disk never answers (FailAtSync) dies only once the cut answers it.
func (p *powerDisk) killAndCut(t *testing.T, c *child, tear *rand.Rand) powerfs.CutReport {
	t.Helper()
	r, err := p.m.KillAndCut(c.cmd, tear)
	if err != nil {
		t.Fatal(err)
	}
	if p.m, err = p.disk.Mount(p.mnt); err != nil {
		t.Fatal(err)
	}
	return r
}

// quietFor is how long quiet waits without a sync or a message.
const quietFor = 300 * time.Millisecond

// quiet waits until the disk has made no sync and the relay taken no
// message for quietFor, at most 20 s: the daemon is idle.
func quiet(disk *powerfs.Disk, rec *queuetest.Recorder) {
	syncs, n, since := disk.Syncs(), len(rec.Messages()), time.Now()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if s2, n2 := disk.Syncs(), len(rec.Messages()); s2 != syncs || n2 != n {
			syncs, n, since = s2, n2, time.Now()
		} else if time.Since(since) >= quietFor {
			return
		}
	}
}

// effectsOf counts the distinct messages among msgs (by Message-ID) by
// recipient and kind (kindOf), and how often each Message-ID was sent.
func (s *cmdPower) effectsOf(t *testing.T, msgs []queuetest.Message) (map[string]int, map[string]int) {
	t.Helper()
	kinds, times := map[string]string{}, map[string]int{}
	for _, m := range msgs {
		id := messageIDOf(m)
		if _, ok := kinds[id]; !ok {
			kinds[id] = strings.Join(m.To, ",") + " " + s.kindOf(t, id, m)
		}
		times[id]++
	}
	eff := map[string]int{}
	for _, k := range kinds {
		eff[k]++
	}
	return eff, times
}

// kindOf is what kind of mail m is. Its Message-ID does not say
// (docs/threat-model.md D7), so it is read from the Subject, inside the
// encryption with the recipient's key: its words before the first colon,
// incident tags removed ("receipt" for "[SEC-2026-0001] receipt: applied").
// Each Message-ID is read once.
func (s *cmdPower) kindOf(t *testing.T, id string, m queuetest.Message) string {
	t.Helper()
	if k, ok := s.kinds[id]; ok {
		return k
	}
	data := m.Data
	if bytes.Contains(data, []byte("BEGIN PGP MESSAGE")) {
		g := s.gpgFor(m.To)
		if g == nil {
			t.Fatalf("no key of the test's to read %s to %v", id, m.To)
		}
		plain, status := g.DecryptMIME(data)
		if !strings.Contains(status, "DECRYPTION_OKAY") {
			t.Fatalf("%v cannot decrypt %s: %s", m.To, id, status)
		}
		data = plain
	}
	subject := ""
	if msg, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		subject = msg.Header.Get("Subject")
	}
	k, _, _ := strings.Cut(strings.TrimSpace(incidentTag.ReplaceAllString(subject, "")), ":")
	s.kinds[id] = k
	return k
}

// incidentTag is an incident's or a proposal's tag in a Subject.
var incidentTag = regexp.MustCompile(`\[[^\]]*\]`)

// gpgFor is the GnuPG home of the one recipient in to, or nil.
func (s *cmdPower) gpgFor(to []string) *daemontest.GPG {
	if len(to) != 1 {
		return nil
	}
	switch to[0] {
	case "alice@ex.test":
		return s.f.alice
	case "bob@ex.test":
		return s.f.bob
	case s.f.reporterAddr:
		return s.f.reporter
	}
	for _, d := range s.dists {
		if d.addr == to[0] {
			return d.g
		}
	}
	return nil
}

func messageIDOf(m queuetest.Message) string {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return ""
	}
	return msg.Header.Get("Message-Id")
}

// covers reports whether got has at least want's count of every key.
func covers(got, want map[string]int) bool {
	for k, n := range want {
		if got[k] < n {
			return false
		}
	}
	return true
}

func mergeKeys(a, b map[string]int) map[string]bool {
	keys := map[string]bool{}
	for _, m := range []map[string]int{a, b} {
		for k := range m {
			keys[k] = true
		}
	}
	return keys
}
