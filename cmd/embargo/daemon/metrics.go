package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/smtpd"
)

// metrics are the process-lifetime counters of /metrics that the store
// does not keep: messages accepted, and delivery attempts by result.
type metrics struct {
	in, out    atomic.Uint64
	mu         sync.Mutex
	deliveries map[string]uint64
}

func newMetrics() *metrics {
	return &metrics{deliveries: map[string]uint64{"delivered": 0, "partial": 0, "deferred": 0, "refused": 0}}
}

func (c *metrics) delivery(result string) {
	c.mu.Lock()
	c.deliveries[result]++
	c.mu.Unlock()
}

// relay counts each delivery attempt of r by result.
func (c *metrics) relay(r queue.Relay) queue.Relay { return countingRelay{r, c} }

type countingRelay struct {
	queue.Relay
	c *metrics
}

func (r countingRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	err := r.Relay.Send(ctx, from, to, data)
	var rcptErr *queue.RcptError
	switch {
	case err == nil:
		r.c.out.Add(1)
		r.c.delivery("delivered")
	case errors.As(err, &rcptErr) && len(rcptErr.Failed) < len(to):
		r.c.out.Add(1)
		r.c.delivery("partial")
	case queue.IsPermanent(err):
		r.c.delivery("refused")
	default:
		r.c.delivery("deferred")
	}
	return err
}

// handler counts the messages h accepted (committed and answered 250).
func (c *metrics) handler(h smtpd.Handler) smtpd.Handler { return countingHandler{h, c} }

type countingHandler struct {
	smtpd.Handler
	c *metrics
}

func (h countingHandler) Handle(ctx context.Context, env smtpd.Envelope, msg []byte) error {
	err := h.Handler.Handle(ctx, env, msg)
	if err == nil {
		h.c.in.Add(1)
	}
	return err
}

var _ smtpd.Handler = countingHandler{}
