package smtpd

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
)

// acceptedRecorder records, for each Recipient call, what Accepted(ctx) held.
type acceptedRecorder struct {
	recorder
	mu   sync.Mutex
	seen [][]string
}

func (r *acceptedRecorder) Recipient(ctx context.Context, from, rcpt string) error {
	r.mu.Lock()
	r.seen = append(r.seen, Accepted(ctx))
	r.mu.Unlock()
	if strings.HasPrefix(rcpt, "refused") {
		return refusal(452, "4.5.3", "Send to this recipient in a separate message")
	}
	return nil
}

// TestAccepted: Recipient sees the recipients the transaction accepted before
// the one it judges, in order and without duplicates or refused ones; a new
// transaction starts empty.
func TestAccepted(t *testing.T) {
	rec := &acceptedRecorder{}
	_, addr := startServer(t, Options{}, rec)
	c := dialRaw(t, addr)
	c.greet()
	c.cmd("MAIL FROM:<a@b.test>")
	for _, r := range []string{"security@ex.org", "refused@ex.org", "security@ex.org", "other@ex.org"} {
		c.cmd("RCPT TO:<" + r + ">")
	}
	c.cmd("RSET")
	c.cmd("MAIL FROM:<a@b.test>")
	c.cmd("RCPT TO:<other@ex.org>")
	want := [][]string{nil, {"security@ex.org"}, {"security@ex.org"}, {"security@ex.org"}, nil}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.EqualFunc(rec.seen, want, slices.Equal) {
		t.Errorf("Accepted during RCPT = %q, want %q", rec.seen, want)
	}
	if got := Accepted(context.Background()); got != nil {
		t.Errorf("Accepted outside a Recipient call = %q, want nil", got)
	}
}
