package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// The memory bound under header and MIME bombs (docs/threat-model.md C1),
// for `embargo serve` as a child process, so that its RSS is its own.
//
// The whole message is in memory from DATA on (smtpd reads it to the end
// before anything looks at it), so the message size limit is what bounds
// a session's memory; the header limits bound how much of it a parser
// turns into structures. A message in flight costs about 4.4 times its size
// until its copies are sealed and delivered (the raw bytes and their
// buffer, the decoded text and attachments, the archived copy in the bbolt
// transaction, the committee copies): measured with GOGC=25, which holds
// the heap near the live set, the worst burst of 8 messages of 2.8 MiB
// added 122 MiB of anonymous memory, 98 MiB live. `embargo serve` lets the
// heap grow to 5 times the live set (GOGC=400) under a soft limit of 256
// MiB (gc.go): the peak is that limit while the live set fits under it,
// and the live set beyond it. The bound on the anonymous memory a burst
// adds to the idle daemon is then
//
//	serveMemoryLimit + bombSessions × bombLimit × bombLiveFactor
//	= 256 MiB + 8 × 3 MiB × 5 = 376 MiB,
//
// and on the peak RSS (VmHWM) the same plus the store's pages the kernel
// maps in (at most what the store file grew by). Measured with serve's
// settings: idle 24 MiB RSS (5.5 MiB anonymous); each burst took the
// anonymous memory 147 to 248 MiB over idle, the RSS to at most 372 MiB
// with 118 MiB of it the store's pages. Before every part's header was
// bounded (lists/message bound.go, keys boundHeader), the burst of part
// headers of tiny fields took the daemon to 2.6 GiB.
//
// EMBARGO_BOMB_LIMIT_MIB lifts the configured max_message_bytes (and the
// messages grow with it) while the bound stays the one above: the check
// that the test fails without the size limit.
const (
	bombSessions   = 8       // concurrent SMTP sessions, each sending one message of the scenario
	bombLimit      = 3 << 20 // max_message_bytes of the test's configuration
	bombLiveFactor = 5       // live heap per byte of the messages in flight (measured 4.4, GOGC=25)
	mib            = 1 << 20
)

// bomb is one scenario: a message (@@ID@@ is replaced to make each copy
// unique) and the reply it must get: 0 for 250.
type bomb struct {
	name     string
	raw      string
	code     int
	enhanced string
}

// TestHeaderBombMemory (docs/threat-model.md C1) sends, over 8 concurrent
// SMTP sessions, the worst messages the limits allow (a header just under
// 100 KiB in 500 fields, parts whose headers are near the limit, 16 levels
// of nesting, base64 and quoted-printable bodies and lines at the limits,
// 199 parts) and some they refuse (a bigger header, more fields, a part
// header of tiny fields or one folded field to the size limit, deeper
// nesting, more parts, a longer line, a bigger message), and holds the
// child's peak memory to the bound above, for each burst.
func TestHeaderBombMemory(t *testing.T) {
	if raceDetector {
		t.Skip("the race detector's shadow memory makes the child another program: the bound holds without -race")
	}
	limit := bombLimit
	if s := os.Getenv("EMBARGO_BOMB_LIMIT_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("EMBARGO_BOMB_LIMIT_MIB=%q", s)
		}
		limit = n * mib
	}
	c := startBombChild(t, limit, bombSessions, "")
	bound := int64(serveMemoryLimit + bombSessions*bombLimit*bombLiveFactor)
	idle, store0 := c.status("VmRSS", "RssAnon"), c.storeSize()
	t.Logf("idle: RSS %.1f MiB (anonymous %.1f MiB); bound over idle %d MiB; %d sessions, max_message_bytes %d MiB",
		mibs(idle["VmRSS"]), mibs(idle["RssAnon"]), bound/mib, bombSessions, limit/mib)
	for _, b := range bombScenarios(limit) {
		anon, st, elapsed := c.burst(t, b)
		grown := c.storeSize() - store0
		t.Logf("%-44s %4.1f MiB: peak RSS %5.1f MiB (+%5.1f), anonymous %5.1f MiB (+%5.1f), store mapped %5.1f MiB, %v",
			b.name, mibs(int64(len(b.raw))), mibs(st["VmHWM"]), mibs(st["VmHWM"]-idle["VmRSS"]),
			mibs(anon), mibs(anon-idle["RssAnon"]), mibs(st["RssFile"]), elapsed.Round(time.Millisecond))
		if anon-idle["RssAnon"] > bound {
			t.Fatalf("%s: the anonymous memory rose %.1f MiB over idle, over the bound of %d MiB", b.name, mibs(anon-idle["RssAnon"]), bound/mib)
		}
		if st["VmHWM"]-idle["VmRSS"] > bound+grown {
			t.Fatalf("%s: the peak RSS rose %.1f MiB over idle, over the bound of %d MiB and the %.1f MiB the store grew by",
				b.name, mibs(st["VmHWM"]-idle["VmRSS"]), bound/mib, mibs(grown))
		}
	}
}

func mibs(n int64) float64 { return float64(n) / mib }

// bombChild is `embargo serve` in a child process, a recording relay and
// what was delivered so far.
type bombChild struct {
	t         *testing.T
	pid       int
	addr, dir string
	rec       *queuetest.Recorder
	delivered int
	seq       int
}

// startBombChild starts `embargo serve` with max_message_bytes limit, room
// for sessions connections from the test, smtpExtra in [smtp], a
// committee of two (alice with a key: her copies are sealed at delivery,
// as in production; bob without), no intake limits (every message is a
// report from a new sender), and GOGC and GOMEMLIMIT taken out of its
// environment so that serve's own settings hold (gc.go); it sends one
// report and waits for its mail, so that what follows starts idle.
func startBombChild(t *testing.T, limit, sessions int, smtpExtra string) *bombChild {
	t.Helper()
	rec := queuetest.NewRecorder(t)
	rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test", "bob@ex.test"}})
	alice := daemontest.NewGPG(t)
	afpr := alice.GenKey("Alice <alice@ex.test>")
	dir := t.TempDir()
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": alice.Export(afpr)})
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(dir, "embargo.toml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf("domain = \"ex.test\"\ndata_dir = %q\nkeys_dir = %q\n"+
		"[intake]\nacks_per_sender_per_day = 1000\nacks_per_day = 0\nnew_incidents_per_sender_per_hour = 0\nnew_incidents_per_client_per_hour = 0\n"+
		"[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\nfingerprint = %q\n[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n"+
		"[smtp]\nlisten = %q\nmax_message_bytes = %d\nmax_connections_per_ip = %d\n%s[relay]\nurl = \"smtp://%s\"\n",
		filepath.Join(dir, "data"), kd, afpr, addr, limit, sessions+2, smtpExtra, rec.Addr()))
	cmd := exec.Command(os.Args[0], "serve", "--config", cfg)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "EMBARGO_TEST_MAIN=1")
	out := &daemontest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitPort(t, addr, out)
	c := &bombChild{t: t, pid: cmd.Process.Pid, addr: addr, dir: dir, rec: rec}
	report := strings.ReplaceAll(daemontest.Report("warm@up.test", "warm up", "hello"), "\n", "\r\n")
	if err := daemontest.SendSMTP(addr, "warm@up.test", []string{"security@ex.test"}, []byte(report)); err != nil {
		t.Fatal(err)
	}
	c.wait(3) // the acknowledgement and two copies
	time.Sleep(500 * time.Millisecond)
	return c
}

// burst sends b over bombSessions concurrent sessions, checks each reply,
// waits for the mail the accepted ones cause (sealed at delivery: part of
// the cost), and returns the peak anonymous memory (RssAnon sampled every
// 2 ms) and the child's status at the end, VmHWM counted from the start of
// the burst.
func (c *bombChild) burst(t *testing.T, b bomb) (anonPeak int64, st map[string]int64, elapsed time.Duration) {
	t.Helper()
	peak := c.sampleAnon()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, bombSessions)
	for i := range bombSessions {
		c.seq++
		id := fmt.Sprintf("%06d", c.seq)
		raw := []byte(strings.ReplaceAll(b.raw, "@@ID@@", id))
		wg.Go(func() {
			errs[i] = daemontest.SendSMTP(c.addr, "bomber"+id+"@bomb.test", []string{"security@ex.test"}, raw)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if code, enh := daemontest.Code(err); code != b.code || b.code != 0 && enh != b.enhanced {
			t.Errorf("%s: %v, want %d %s", b.name, err, b.code, b.enhanced)
		}
	}
	if b.code == 0 {
		c.wait(c.delivered + 3*bombSessions) // each: the acknowledgement, alice's and bob's copies
	}
	elapsed = time.Since(start)
	time.Sleep(100 * time.Millisecond)
	return peak(), c.status("VmHWM", "RssFile"), elapsed
}

// sampleAnon resets the child's VmHWM and samples its RssAnon every 2 ms
// until the returned function, which returns the peak, is called.
func (c *bombChild) sampleAnon() (stop func() int64) {
	c.t.Helper()
	// proc(5): writing 5 to clear_refs resets VmHWM to the current RSS.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", c.pid), []byte("5"), 0); err != nil {
		c.t.Skipf("cannot reset the child's peak RSS: %v", err)
	}
	done := make(chan struct{})
	var anonPeak int64
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			anonPeak = max(anonPeak, c.status("RssAnon")["RssAnon"])
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() int64 {
		close(done)
		sampler.Wait()
		return anonPeak
	}
}

// wait waits for the relay to hold n messages.
func (c *bombChild) wait(n int) {
	c.t.Helper()
	c.rec.WaitFor(n, 2*time.Minute)
	c.delivered = n
}

// status reads fields of the child's /proc/PID/status, in bytes.
func (c *bombChild) status(names ...string) map[string]int64 {
	c.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.pid))
	if err != nil {
		c.t.Skipf("no /proc/PID/status: %v", err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		for _, n := range names {
			if k == n {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				out[n] = kb << 10
			}
		}
	}
	return out
}

// storeSize is the size of the child's store file.
func (c *bombChild) storeSize() int64 {
	fi, err := os.Stat(filepath.Join(c.dir, "data", daemon.DBFile))
	if err != nil {
		c.t.Fatal(err)
	}
	return fi.Size()
}

// Builders of the scenarios' messages (CRLF).

// topHeader is a report's header, then extra (MIME fields and the blank line).
func topHeader(extra string) string {
	return "From: bomber@@@ID@@.test\r\nTo: security@ex.test\r\nSubject: bomb\r\nMessage-ID: <@@ID@@@bomb.test>\r\n" +
		"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n" + extra
}

// fillerFields are n header fields of about total bytes together, folded
// into lines of at most 900 octets.
func fillerFields(prefix string, n, total int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-%s-%03d:", prefix, i)
		for left := total/n - 12; left > 0; left -= 880 {
			b.WriteString(" " + strings.Repeat("h", min(left, 880)) + "\r\n")
		}
	}
	return b.String()
}

// lines are about n bytes of lines of width octets, CRLF included.
func lines(n, width int, fill string) string {
	line := strings.Repeat(fill, (width-2)/len(fill)) + "\r\n"
	return strings.Repeat(line, n/len(line))
}

func multipart(boundary string, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	return b.String() + "--" + boundary + "--\r\n"
}

const mixedHeader = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"

// nest wraps leaf in depth levels of multipart/mixed.
func nest(depth int, leaf string) string {
	for i := depth - 1; i >= 0; i-- {
		leaf = fmt.Sprintf("Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n", i) + multipart(fmt.Sprintf("n%d", i), leaf)
	}
	return leaf
}

// bombScenarios are the messages, each as large as the limit allows where
// size is part of the attack.
func bombScenarios(limit int) []bomb {
	room := limit - 200<<10 // the header, the boundaries and some slack
	base64Part := func(name string, n int) string {
		return "Content-Type: application/octet-stream; name=\"" + name + "\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + lines(n, 78, "QUJD")
	}
	text := "Content-Type: text/plain\r\n\r\n"
	var nearLimit []string // parts whose header is near 100 KiB, as many as fit
	for range room / (100 << 10) {
		nearLimit = append(nearLimit, fillerFields("Part", 490, 98<<10)+text+"part\r\n")
	}
	many := func(n int) string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = base64Part(fmt.Sprintf("p%d.bin", i), room/n)
		}
		return topHeader(mixedHeader) + multipart("b", ps...)
	}
	return []bomb{
		{"header 99 KiB in 500 fields, text to the limit", topHeader(fillerFields("Bomb", 493, 99<<10)+text) + lines(room, 78, "t"), 0, ""},
		{"header 120 KiB", topHeader(fillerFields("Bomb", 400, 120<<10)+"\r\n") + "x\r\n", 552, "5.3.4"},
		{"600 header fields", topHeader(fillerFields("Bomb", 600, 30<<10)+"\r\n") + "x\r\n", 554, "5.6.0"},
		{fmt.Sprintf("%d parts, each header 98 KiB", len(nearLimit)), topHeader(mixedHeader) + multipart("b", nearLimit...), 0, ""},
		{"a part's header 120 KiB", topHeader(mixedHeader) + multipart("b", fillerFields("Part", 400, 120<<10)+text+"part\r\n"), 552, "5.3.4"},
		{"a part's header of tiny fields to the limit", topHeader(mixedHeader) + multipart("b", strings.Repeat("X:1\r\n", room/5)+text+"part\r\n"), 554, "5.6.0"},
		{"a part's header, one field folded to the limit", topHeader(mixedHeader) + multipart("b", "X-F: a\r\n"+strings.Repeat(" f\r\n", room/4)+text+"part\r\n"), 552, "5.3.4"},
		{"nested 16 deep, base64 to the limit", topHeader(nest(16, base64Part("deep.bin", room))), 0, ""},
		{"nested 17 deep", topHeader(nest(17, text+"x\r\n")), 554, "5.6.0"},
		{"base64 attachment to the limit", topHeader(mixedHeader) + multipart("b", text+"see attached\r\n", base64Part("poc.bin", room)), 0, ""},
		{"quoted-printable text to the limit", topHeader("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n") +
			strings.Repeat(strings.Repeat("q", 70)+"=3D=\r\n", room/76), 0, ""},
		{"199 parts to the limit", many(199), 0, ""},
		{"200 parts", many(200), 554, "5.6.0"},
		{"lines of 2000 octets to the limit", topHeader(text) + lines(room, 2000, "t"), 0, ""},
		// One long line then short ones: after its 500, go-smtp reads the
		// rest as commands, and a second long line would close the
		// connection under the client still writing.
		{"a line of 2001 octets", topHeader(text) + lines(2001, 2001, "t") + "end\r\n", 500, "5.4.0"},
		{"over the size limit", topHeader(text) + lines(limit+mib, 78, "t"), 552, "5.3.4"},
	}
}
