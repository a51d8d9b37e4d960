package smtpd

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// gated is a Handler whose Handle holds the message (and its budget) until the
// test opens the gate.
type gated struct {
	recorder
	gate    chan struct{}
	mu      sync.Mutex
	entered int
}

func newGated() *gated { return &gated{gate: make(chan struct{})} }

func (g *gated) Handle(ctx context.Context, env Envelope, msg []byte) error {
	g.mu.Lock()
	g.entered++
	g.mu.Unlock()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.recorder.Handle(ctx, env, msg)
}

func (g *gated) inHandle() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered
}

// bigMessage is a valid message of about n bytes.
func bigMessage(n int) string {
	head := "From: a@b.test\r\nTo: security@ex.org\r\nSubject: big\r\n\r\n"
	line := strings.Repeat("x", 76) + "\r\n"
	return head + strings.Repeat(line, (n-len(head))/len(line))
}

const (
	inflightMax    = 512 << 10 // MaxMessageBytes of these tests
	inflightBudget = 2 * inflightMax
)

func inflightOptions() Options {
	return Options{MaxMessageBytes: inflightMax, MaxInflightBytes: inflightBudget, InflightWait: 300 * time.Millisecond, MaxConnectionsPerIP: -1}
}

// TestInflightBurst (docs/threat-model.md C1): eight sessions send a message of
// nearly the size limit at once into a budget of two. Those that find no budget get
// 452 4.3.1 after their final dot, never 250 or 5xx; the budget is never exceeded;
// the others are handed over and get 250 once their Handler returns; a refused
// message sent again once the budget is free gets 250.
func TestInflightBurst(t *testing.T) {
	g := newGated()
	srv, addr := startServer(t, inflightOptions(), g)
	msg := bigMessage(500 << 10)
	const n = 8
	errs := make([]error, n)
	done := make(chan int, n)
	for i := range n {
		go func() {
			c := dialClient(t, addr)
			errs[i] = sendMessage(c, "a@b.test", []string{"security@ex.org"}, msg)
			done <- i
		}()
	}
	// The refused come back while the others wait in Handle.
	refused := 0
	deadline := time.After(30 * time.Second)
	for refused+g.inHandle() < n {
		select {
		case i := <-done:
			if code, enh := smtpCode(errs[i]); code != 452 || enh != "4.3.1" {
				t.Fatalf("session %d, while the budget is held: %v, want 452 4.3.1", i, errs[i])
			}
			refused++
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("stuck: %d refused, %d in Handle", refused, g.inHandle())
		}
	}
	held := g.inHandle()
	if held < 1 || held > 2 {
		t.Fatalf("%d messages in Handle at once, want 1 or 2 in a budget of two", held)
	}
	if peak := srv.inflight.Peak(); peak > inflightBudget {
		t.Errorf("peak in flight %d bytes, over the budget of %d", peak, inflightBudget)
	}
	if got, want := srv.inflight.InUse(), int64(held*inflightMax); got != want {
		t.Errorf("in flight with %d messages in Handle: %d bytes, want %d (their buffers)", held, got, want)
	}
	if got := srv.inflight.Refused(); got != int64(refused) {
		t.Errorf("Refused() = %d, want %d", got, refused)
	}
	close(g.gate)
	for range held {
		if i := <-done; errs[i] != nil {
			t.Errorf("session %d, handed over: %v, want 250", i, errs[i])
		}
	}
	waitFor(t, "the budget to be given back", func() bool { return srv.inflight.InUse() == 0 })
	if got := len(g.delivered()); got != held {
		t.Errorf("%d messages stored, want %d", got, held)
	}
	// The sender of a refused message tries again later.
	if err := sendMessage(dialClient(t, addr), "a@b.test", []string{"security@ex.org"}, msg); err != nil {
		t.Errorf("the refused message sent again with the budget free: %v, want 250", err)
	}
	if srv.inflight.InUse() != 0 {
		t.Errorf("%d bytes still held after every message was handled", srv.inflight.InUse())
	}
}

// TestInflightSizeAtMail: with the budget held by two messages in Handle, a SIZE= at
// MAIL gets 452 4.3.1, over SMTP and over an LMTP server that shares the budget; a
// MAIL without SIZE= is accepted and its message gets 452 4.3.1 after the final
// dot, nothing handed over; once the budget is free both go through.
func TestInflightSizeAtMail(t *testing.T) {
	g := newGated()
	budget := NewInflightBudget(inflightBudget, nil)
	opts := inflightOptions()
	opts.Inflight = budget
	_, addr := startServer(t, opts, g)
	lmtpRec := &recorder{}
	sock := startLMTPOpts(t, opts, lmtpRec)

	msg := bigMessage(500 << 10)
	first := make(chan error, 2)
	for i := range 2 {
		go func() { first <- sendMessage(dialClient(t, addr), "a@b.test", []string{"security@ex.org"}, msg) }()
		waitFor(t, "the message in Handle", func() bool { return g.inHandle() == i+1 })
	}

	c := dialClient(t, addr)
	err := c.Mail("a@b.test", &smtp.MailOptions{Size: 10000})
	if code, enh := smtpCode(err); code != 452 || enh != "4.3.1" {
		t.Errorf("MAIL SIZE=10000 with the budget held: %v, want 452 4.3.1", err)
	}
	lc := dialLMTP(t, sock)
	err = lc.Mail("a@b.test", &smtp.MailOptions{Size: 10000})
	if code, enh := smtpCode(err); code != 452 || enh != "4.3.1" {
		t.Errorf("LMTP MAIL SIZE=10000 with the shared budget held over SMTP: %v, want 452 4.3.1", err)
	}
	err = sendMessage(c, "a@b.test", []string{"security@ex.org"}, simpleMsg)
	if code, enh := smtpCode(err); code != 452 || enh != "4.3.1" {
		t.Errorf("a message without SIZE= with the budget held: %v, want 452 4.3.1", err)
	}
	if budget.Refused() != 3 {
		t.Errorf("Refused() = %d, want 3", budget.Refused())
	}

	close(g.gate)
	for range 2 {
		if err := <-first; err != nil {
			t.Errorf("a message in Handle: %v, want 250", err)
		}
	}
	if err := c.Mail("a@b.test", &smtp.MailOptions{Size: int64(len(simpleMsg))}); err != nil {
		t.Fatalf("MAIL SIZE= with the budget free: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, simpleMsg); err != nil {
		t.Errorf("the message again with the budget free: %v, want 250", err)
	}
	if err := sendMessage(lc, "a@b.test", []string{"security@ex.org"}, simpleMsg); err != nil {
		t.Errorf("over LMTP with the budget free: %v, want 250", err)
	}
	if got := len(g.delivered()); got != 3 {
		t.Errorf("%d messages stored over SMTP, want 3 (the refused one not among them)", got)
	}
}

// TestInflightLoneMaxMessage: a message of the largest size gets through a
// budget of exactly that size, and a budget set below it is raised to it.
func TestInflightLoneMaxMessage(t *testing.T) {
	const max = 300000 // no power of two: the buffer ends at the limit, not past it
	for _, budget := range []int64{max, 1000} {
		rec := &recorder{}
		srv, addr := startServer(t, Options{MaxMessageBytes: max, MaxInflightBytes: budget, InflightWait: -1}, rec)
		if got := srv.inflight.Limit(); got != max {
			t.Errorf("MaxInflightBytes %d: budget %d, want %d", budget, got, max)
		}
		// go-smtp's DATA reader refuses a message of exactly MaxMessageBytes (it
		// fails the read after the limit before it sees the final dot): 8 bytes less.
		msg := bigMessage(max)
		msg += strings.Repeat("y", max-8-len(msg)-2) + "\r\n"
		c := dialClient(t, addr)
		if err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, msg); err != nil {
			t.Errorf("budget %d: a lone message of the largest size: %v, want 250", budget, err)
		}
		if err := sendMessage(c, "a@b.test", []string{"security@ex.org"}, msg+"zzzzzzzzzz\r\n"); err == nil {
			t.Errorf("budget %d: a message one line over the limit was taken", budget)
		} else if code, _ := smtpCode(err); code != 552 {
			t.Errorf("budget %d: a message over the limit: %v, want 552", budget, err)
		}
		if n := len(rec.delivered()); n != 1 || len(rec.delivered()[0].msg) != len(msg) {
			t.Errorf("budget %d: %d messages stored, want the one of %d bytes", budget, n, len(msg))
		}
	}
}

// TestLeaseGivesUpWhenAllWait: when every session holding budget waits for more,
// none would give any back before the waits end, so the last to ask gives up at
// once instead of after its wait; released, it lets the other go on.
func TestLeaseGivesUpWhenAllWait(t *testing.T) {
	b := NewInflightBudget(100, nil)
	a, c := lease{b: b}, lease{b: b}
	if !a.grow(50, 0) || !c.grow(50, 0) {
		t.Fatal("the budget's first 100 bytes refused")
	}
	got := make(chan bool)
	go func() { got <- a.grow(30, time.Minute) }()
	waitFor(t, "the first lease to wait", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiting == 1 })
	start := time.Now()
	if c.grow(30, time.Minute) {
		t.Fatal("the second lease got bytes that are not there")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the second lease waited %v with every holder waiting", d)
	}
	c.release()
	if !<-got {
		t.Error("the first lease did not get the bytes the second gave back")
	}
	if b.InUse() != 80 || b.Peak() != 100 {
		t.Errorf("in use %d, peak %d; want 80, 100", b.InUse(), b.Peak())
	}
}
