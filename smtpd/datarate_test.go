package smtpd

import (
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"
)

// The minimum data rate's tests run with a rate and a grace small enough for a test
// to take about a second, and a ReadTimeout far above both: only the rate explains a
// close before it (docs/threat-model.md B7).
const (
	testRate    = 1000 // bytes per second
	testGrace   = 400 * time.Millisecond
	testTimeout = 8 * time.Second
)

func rateOptions() Options {
	return Options{MinDataRate: testRate, DataRateGrace: testGrace, ReadTimeout: testTimeout}
}

// pace writes piece every interval in the background until the server closes the
// connection or 5 s pass.
func pace(t *testing.T, c *rawConn, piece string, every time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(every) {
			if _, err := c.nc.Write([]byte(piece)); err != nil {
				return // the server closed: expected
			}
		}
	}()
	t.Cleanup(func() { c.nc.Close(); <-done })
}

// expectTooSlow reads past BDAT's "250 Continue" replies to the reply that ends the
// transfer and checks that it is the minimum data rate's 421, after the grace and
// well before the read timeout, and that the connection closed.
func expectTooSlow(t *testing.T, c *rawConn, start time.Time) {
	t.Helper()
	r := c.read()
	for r.code == 250 {
		r = c.read()
	}
	took := time.Since(start)
	want := fmt.Sprintf("Data arriving too slowly (below %d bytes/s)", testRate)
	if r.code != 421 || r.enhanced != "4.4.2" || !strings.Contains(r.text, want) {
		t.Errorf("reply to the slow transfer = %v, want 421 4.4.2 %q", r, want)
	}
	if !c.closed() {
		t.Error("connection open after the 421")
	}
	if took < testGrace || took > testTimeout/2 {
		t.Errorf("slow transfer cut after %v, want after the %v grace and well before the %v read timeout", took, testGrace, testTimeout)
	}
}

// dataCmd sends DATA and expects 354.
func dataCmd(t *testing.T, c *rawConn) {
	t.Helper()
	if r := c.cmd("DATA"); r.code != 354 {
		t.Fatalf("DATA = %v, want 354", r)
	}
}

// TestMinDataRate: a DATA or BDAT transfer that falls below the minimum rate once the
// grace has passed gets 421 4.4.2 saying so, long before ReadTimeout, the connection
// closes, and nothing reaches the Handler: a client that goes silent, one that drips
// a byte every 10 ms (100 bytes/s), and one that sends two-byte BDAT chunks,
// pipelined (the waits between chunks belong to the transfer).
func TestMinDataRate(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *rawConn)
	}{
		{"silent after DATA", func(t *testing.T, c *rawConn) { dataCmd(t, c) }},
		{"drip in DATA", func(t *testing.T, c *rawConn) {
			dataCmd(t, c)
			drip(t, c, "Subject: slow\r\n", 10*time.Millisecond)
		}},
		{"silent in BDAT", func(t *testing.T, c *rawConn) { c.send("BDAT 1000 LAST\r\nSubject: slow\r\n") }},
		{"drip in BDAT", func(t *testing.T, c *rawConn) {
			c.send("BDAT 100000 LAST\r\n")
			drip(t, c, "Subject: slow\r\n", 10*time.Millisecond)
		}},
		{"small BDAT chunks", func(t *testing.T, c *rawConn) { pace(t, c, "BDAT 2\r\nab", 40*time.Millisecond) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			_, addr := startServer(t, rateOptions(), rec)
			c := dialRaw(t, addr)
			c.greet()
			begin(t, c)
			start := time.Now()
			tc.run(t, c)
			expectTooSlow(t, c, start)
			if got := len(rec.delivered()); got != 0 {
				t.Errorf("Handle called %d times, want 0", got)
			}
		})
	}
}

// TestMinDataRateLMTP: LMTP takes the same limits ([smtp] min_data_rate).
func TestMinDataRateLMTP(t *testing.T) {
	rec := &recorder{}
	sock := startLMTPOpts(t, rateOptions(), rec)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := newRaw(t, nc)
	if r := c.read(); r.code != 220 {
		t.Fatalf("greeting = %v", r)
	}
	if r := c.cmd("LHLO mta.test"); r.code != 250 {
		t.Fatalf("LHLO = %v", r)
	}
	begin(t, c)
	start := time.Now()
	dataCmd(t, c)
	drip(t, c, "Subject: slow\r\n", 10*time.Millisecond)
	expectTooSlow(t, c, start)
	if got := len(rec.delivered()); got != 0 {
		t.Errorf("Handle called %d times, want 0", got)
	}
}

// TestMinDataRateOverTLS: over STARTTLS conn counts ciphertext, about 23 bytes for a
// one-byte TLS 1.3 record; a byte every 100 ms is still below the rate.
func TestMinDataRateOverTLS(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	rec := &recorder{}
	opts := rateOptions()
	opts.TLSConfig = serverCfg
	_, addr := startServer(t, opts, rec)
	c := dialTLS(t, addr, clientCfg)
	begin(t, c)
	start := time.Now()
	dataCmd(t, c)
	drip(t, c, "Subject: slow\r\n", 100*time.Millisecond)
	expectTooSlow(t, c, start)
	if got := len(rec.delivered()); got != 0 {
		t.Errorf("Handle called %d times, want 0", got)
	}
}

// TestMinDataRateBursty: a client above the rate on average is not cut although it
// pauses, whether the pauses are shorter than the grace or one is longer than the
// grace but paid for by the bytes sent before it (4000 bytes buy 4 s at 1000 bytes/s).
// An idle timeout of one grace, or a rate measured since the last read, would cut the
// second; a deadline of one grace from the start would cut both.
func TestMinDataRateBursty(t *testing.T) {
	line := strings.Repeat("x", 98) + "\r\n"
	tests := []struct {
		name   string
		bursts int
		lines  int // per burst, 100 bytes each
		pause  time.Duration
	}{
		{"pauses under the grace", 5, 20, 300 * time.Millisecond},
		{"a pause beyond the grace, paid for", 2, 40, 1500 * time.Millisecond},
	}
	for _, tc := range tests {
		bursts := make([]string, tc.bursts)
		for i := range bursts {
			bursts[i] = strings.Repeat(line, tc.lines)
		}
		bursts[0] = "Subject: bursts\r\n\r\n" + bursts[0]
		want := strings.Join(bursts, "")
		for _, mode := range []string{"DATA", "BDAT"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				rec := &recorder{}
				_, addr := startServer(t, rateOptions(), rec)
				c := dialRaw(t, addr)
				c.greet()
				begin(t, c)
				if mode == "DATA" {
					dataCmd(t, c)
				}
				var r response
				for i, b := range bursts {
					if i > 0 {
						time.Sleep(tc.pause)
					}
					switch last := i == len(bursts)-1; {
					case mode == "DATA" && last:
						c.send(b + ".\r\n")
						r = c.read()
					case mode == "DATA":
						c.send(b)
					case last:
						r = bdat(c, b)
					default:
						c.send(fmt.Sprintf("BDAT %d\r\n%s", len(b), b))
						if r := c.read(); r.code != 250 {
							t.Fatalf("BDAT chunk %d = %v, want 250", i+1, r)
						}
					}
				}
				if r.code != 250 {
					t.Fatalf("reply to the bursty message = %v, want 250", r)
				}
				if got := rec.delivered(); len(got) != 1 || string(got[0].msg) != want {
					t.Errorf("Handle got %d messages, want the one sent", len(got))
				}
			})
		}
	}
}

// TestMinDataRateBetweenTransfers: the rate holds during a transfer only. Idle time
// between transactions, longer than the grace, is the read timeout's business (here
// none, so go-smtp sets no deadline of its own that would hide a rate deadline left
// behind). Each transfer starts its own clock and count: the 20 seconds that the
// first message's 20 kB bought do not carry over to a silent third transfer.
func TestMinDataRateBetweenTransfers(t *testing.T) {
	rec := &recorder{}
	opts := rateOptions()
	opts.ReadTimeout = -1
	_, addr := startServer(t, opts, rec)
	c := dialRaw(t, addr)
	c.greet()
	big := simpleMsg + strings.Repeat(strings.Repeat("y", 98)+"\r\n", 200)
	for i, send := range []func(testing.TB, *rawConn) response{inData(big), inBDAT(simpleMsg)} {
		if r := send(t, c); r.code != 250 {
			t.Fatalf("message %d = %v, want 250", i+1, r)
		}
		time.Sleep(2 * testGrace)
		if r := c.cmd("NOOP"); r.code != 250 {
			t.Fatalf("NOOP after message %d and a pause = %v, want 250", i+1, r)
		}
	}
	begin(t, c)
	start := time.Now()
	dataCmd(t, c)
	expectTooSlow(t, c, start)
	if got := len(rec.delivered()); got != 2 {
		t.Errorf("Handle called %d times, want 2", got)
	}
}

// TestMinDataRateOff: MinDataRate < 0 ([smtp] min_data_rate = 0) keeps the old
// behaviour: a message trickled at 100 bytes/s for longer than the grace is taken, and
// a silent DATA lasts until ReadTimeout. With the rate on, the same trickle is cut.
func TestMinDataRateOff(t *testing.T) {
	const slowTimeout = 1500 * time.Millisecond
	trickle := func(t *testing.T, c *rawConn) response {
		dataCmd(t, c)
		msg := "Subject: slow\r\n\r\n" + strings.Repeat("12345678\r\n", 12) + ".\r\n"
		for i := 0; i < len(msg); i += 10 {
			// Raw writes: with the rate on the server may have closed.
			_, _ = c.nc.Write([]byte(msg[i:min(i+10, len(msg))]))
			time.Sleep(100 * time.Millisecond)
		}
		return c.read()
	}
	tests := []struct {
		name string
		rate int64
		run  func(t *testing.T, c *rawConn) response
		code int
		text string
		took time.Duration // at least
		kept int
	}{
		{"trickle, rate off", -1, trickle, 250, "", 0, 1},
		{"trickle, rate on", testRate, trickle, 421, "too slowly", 0, 0},
		{"silent DATA, rate off", -1, func(t *testing.T, c *rawConn) response { dataCmd(t, c); return c.read() },
			421, "Timeout during message transfer", slowTimeout, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			_, addr := startServer(t, Options{MinDataRate: tc.rate, DataRateGrace: testGrace, ReadTimeout: slowTimeout}, rec)
			c := dialRaw(t, addr)
			c.greet()
			begin(t, c)
			start := time.Now()
			r := tc.run(t, c)
			if r.code != tc.code || !strings.Contains(r.text, tc.text) {
				t.Errorf("reply = %v, want %d %q", r, tc.code, tc.text)
			}
			if took := time.Since(start); took < tc.took {
				t.Errorf("answered after %v, want the read timeout, %v", took, tc.took)
			}
			if got := len(rec.delivered()); got != tc.kept {
				t.Errorf("Handle called %d times, want %d", got, tc.kept)
			}
		})
	}
}

// TestDataRateDeadline: the grace holds until the bytes have bought more; a huge
// count does not overflow; a rate ≤ 0 is off.
func TestDataRateDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newDataRate(500, 10*time.Second)
	for _, tc := range []struct {
		n    int64
		want time.Duration
	}{
		{0, 10 * time.Second},
		{4999, 10 * time.Second},
		{7500, 15 * time.Second},
		{math.MaxInt64, maxRateCredit * time.Second},
	} {
		if got := r.deadline(start, tc.n).Sub(start); got != tc.want {
			t.Errorf("deadline after %d bytes = start + %v, want + %v", tc.n, got, tc.want)
		}
	}
	if !strings.Contains(r.tooSlow.text, "below 500 bytes/s") {
		t.Errorf("reply %q does not name the rate", r.tooSlow.text)
	}
	for _, off := range []int64{0, -1} {
		if r := newDataRate(off, time.Second); r.min != 0 {
			t.Errorf("newDataRate(%d) = %+v, want off", off, r)
		}
	}
}
