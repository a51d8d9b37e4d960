package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/smtpd"
)

// The budget of message bytes in flight (docs/threat-model.md C1), for
// `embargo serve` as a child. Every session holds its whole message in
// memory, so without the budget the peak grows with the number of sessions:
// 40 sessions of 10 MiB messages are 400 MiB of buffers alone, 1.7 GiB at
// the measured 4.4 bytes of heap per byte in flight. With it the bound
// follows from the budget alone, whatever the number of sessions:
//
//	serveMemoryLimit + max_inflight_bytes × bombLiveFactor
//	= 256 MiB + 48 MiB × 5 = 496 MiB
//
// over idle, at the default budget for the default max_message_bytes.
//
// EMBARGO_INFLIGHT_MIB sets max_inflight_bytes (e.g. 4096, the budget
// lifted) while the bound stays the default's: the check that the test
// fails without the budget.
const (
	inflightSessions = 40
	inflightLimit    = smtpd.DefaultMaxMessageBytes
)

// TestInflightBurstMemory sends a burst of 40 concurrent sessions, each with
// a message of nearly max_message_bytes (10 MiB), to `embargo serve` at its
// default budget: every session gets 250 or 452 4.3.1 (never 5xx), some get
// 250 and their mail is delivered, and the child's peak anonymous memory and
// RSS over idle stay under the bound derived from the budget.
func TestInflightBurstMemory(t *testing.T) {
	if raceDetector {
		t.Skip("the race detector's shadow memory makes the child another program: the bound holds without -race")
	}
	extra := ""
	if s := os.Getenv("EMBARGO_INFLIGHT_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("EMBARGO_INFLIGHT_MIB=%q", s)
		}
		extra = fmt.Sprintf("max_inflight_bytes = %d\n", n*mib)
	}
	c := startBombChild(t, inflightLimit, inflightSessions, extra)
	budget := smtpd.DefaultInflightBytes(inflightLimit)
	bound := int64(serveMemoryLimit) + budget*bombLiveFactor
	idle, store0 := c.status("VmRSS", "RssAnon"), c.storeSize()

	room := inflightLimit - 200<<10
	msg := topHeader("Content-Type: text/plain\r\n\r\n") + lines(room, 998, "t")
	peak := c.sampleAnon()
	start := time.Now()
	errs := make([]error, inflightSessions)
	var wg sync.WaitGroup
	for i := range inflightSessions {
		c.seq++
		id := fmt.Sprintf("%06d", c.seq)
		raw := []byte(strings.ReplaceAll(msg, "@@ID@@", id))
		wg.Go(func() {
			errs[i] = daemontest.SendSMTP(c.addr, "burst"+id+"@bomb.test", []string{"security@ex.test"}, raw)
		})
	}
	wg.Wait()
	accepted := 0
	for i, err := range errs {
		switch code, enh := daemontest.Code(err); {
		case err == nil:
			accepted++
		case code != 452 || enh != "4.3.1":
			t.Errorf("session %d: %v, want 250 or 452 4.3.1", i, err)
		}
	}
	if accepted == 0 {
		t.Fatal("no message of the burst was accepted")
	}
	c.wait(c.delivered + 3*accepted) // each: the acknowledgement, alice's and bob's copies
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond)
	anon, st := peak(), c.status("VmHWM", "RssFile")
	grown := c.storeSize() - store0
	t.Logf("%d sessions of %.1f MiB, budget %d MiB, bound over idle %d MiB: %d accepted, %d refused 452; peak RSS %.1f MiB (+%.1f), anonymous %.1f MiB (+%.1f), store grew %.1f MiB, %v",
		inflightSessions, mibs(int64(len(msg))), budget/mib, bound/mib, accepted, inflightSessions-accepted,
		mibs(st["VmHWM"]), mibs(st["VmHWM"]-idle["VmRSS"]), mibs(anon), mibs(anon-idle["RssAnon"]), mibs(grown), elapsed.Round(time.Millisecond))
	if anon-idle["RssAnon"] > bound {
		t.Fatalf("the anonymous memory rose %.1f MiB over idle, over the bound of %d MiB", mibs(anon-idle["RssAnon"]), bound/mib)
	}
	if st["VmHWM"]-idle["VmRSS"] > bound+grown {
		t.Fatalf("the peak RSS rose %.1f MiB over idle, over the bound of %d MiB and the %.1f MiB the store grew by",
			mibs(st["VmHWM"]-idle["VmRSS"]), bound/mib, mibs(grown))
	}
}
