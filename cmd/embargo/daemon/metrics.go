package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/smtpd"
)

// metrics are the daemon's Prometheus collectors, on a registry of its own
// (one process may run several daemons: the drill, the tests). /metrics
// exposes it, with the HTTP server's collectors and the store's gauges
// (daemon/web). The library packages (queue, listd) know nothing of
// Prometheus: they report through func fields of their Options, wired here.
type metrics struct {
	reg        *prometheus.Registry
	received   prometheus.Counter
	sent       prometheus.Counter
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	release    prometheus.Histogram
	command    prometheus.Histogram
	refused    *prometheus.CounterVec
	acksHeld   *prometheus.CounterVec
	distWarn   *prometheus.CounterVec
	senders    *prometheus.CounterVec
	bounces    *prometheus.CounterVec
}

// refusedInflight is embargo_intake_refused_total's reason for smtpd's
// budget of message bytes in flight (smtp.max_inflight_bytes).
const refusedInflight = "inflight"

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "embargo_messages_received_total",
			Help: "Inbound messages accepted since start (answered 250 after their commit).",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "embargo_messages_sent_total",
			Help: "Outbound messages delivered to the relay since start, wholly or to some recipients.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_deliveries_total",
			Help: "Delivery attempts since start, by result: delivered, partial, deferred, refused.",
		}, []string{"result"}),
		// From a few seconds (delivered at once) to the queue lifetime of days.
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "embargo_delivery_latency_seconds",
			Help:    "Time from enqueueing an outbound message (or retrying it by hand) to its delivery to the relay.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 12),
		}),
		release: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "embargo_release_duration_seconds",
			Help:    "Time to compose a release at T (advisory, channels, distributors, the SRC's pack) in its transaction.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		command: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "embargo_command_duration_seconds",
			Help:    "Time to handle one signed command message: apply its commands and compose the receipt and what they cause.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_intake_refused_total",
			Help: "Mail refused with a temporary reply since start by an intake limit, by reason: sender (new_incidents_per_sender_per_hour) or client (new_incidents_per_client_per_hour), a report that would have opened a new incident, 450 4.7.1; inflight (smtp.max_inflight_bytes), a MAIL whose SIZE= or a message that did not fit in the bytes all sessions may hold in memory at once, 452 4.3.1.",
		}, []string{"reason"}),
		acksHeld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_acks_suppressed_total",
			Help: "Acknowledgements to reporters (and replies to distributor applicants) not sent since start, their message taken as always, by the limit that held them back: sender (acks_per_sender_per_day) or global (acks_per_day, all addresses together).",
		}, []string{"limit"}),
		distWarn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_distributor_warnings_total",
			Help: "Encrypted warnings to a member whose post to distributors@ was refused (plaintext, or not signed by a pinned key) since start, by result: sent (queued), held (the member was warned in the last hour).",
		}, []string{"result"}),
		senders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_sender_checks_total",
			Help: "Messages whose sender embargo checked itself on the SMTP listener ([intake] verify = \"own\") since start, by result: authenticated (a DMARC pass, or an aligned DKIM or SPF pass), unauthenticated, or unchecked (the checks failed; the message was taken as always).",
		}, []string{"result"}),
		bounces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "embargo_bounces_total",
			Help: "Delivery status notifications at the private lists' per-copy bounce addresses since start, by the kind of the copy (unknown: no copy matches the address) and result: alerted, limited (alerted already today), no-alert (a copy of an alert), delayed, other (not a failure), unknown.",
		}, []string{"kind", "result"}),
	}
	for _, r := range []string{"authenticated", "unauthenticated", "unchecked"} {
		m.senders.WithLabelValues(r)
	}
	// Every result is reported from the start, zero included, so that the
	// series do not come and go.
	for _, r := range []string{"delivered", "partial", "deferred", "refused"} {
		m.deliveries.WithLabelValues(r)
	}
	for _, r := range []string{listd.LimitSender, listd.LimitClient, refusedInflight} {
		m.refused.WithLabelValues(r)
	}
	for _, l := range []string{listd.AckLimitSender, listd.AckLimitGlobal} {
		m.acksHeld.WithLabelValues(l)
	}
	for _, r := range []string{listd.WarningSent, listd.WarningHeld} {
		m.distWarn.WithLabelValues(r)
	}
	m.bounces.WithLabelValues("unknown", listd.BounceUnknown)
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		m.received, m.sent, m.deliveries, m.latency, m.release, m.command, m.refused, m.acksHeld, m.distWarn, m.senders, m.bounces,
	)
	return m
}

// observe is listd's Options.Observe: how long a command message or a
// release took.
func (m *metrics) observe(event string, took time.Duration) {
	switch event {
	case "command":
		m.command.Observe(took.Seconds())
	case "release":
		m.release.Observe(took.Seconds())
	}
}

// ackHeld is listd's Options.AckHeld: an acknowledgement a limit held back
// (docs/threat-model.md B8).
func (m *metrics) ackHeld(limit string) { m.acksHeld.WithLabelValues(limit).Inc() }

// distWarning is listd's Options.DistributorWarning: a warning to a member
// whose post to distributors@ was refused, sent or held back
// (docs/threat-model.md G2).
func (m *metrics) distWarning(result string) { m.distWarn.WithLabelValues(result).Inc() }

// senderChecked counts one message whose sender embargo checked itself.
func (m *metrics) senderChecked(result string) { m.senders.WithLabelValues(result).Inc() }

// bounced is listd's Options.Bounced: a bounce at a per-copy address of a
// private list (docs/design.md §4, docs/threat-model.md G7).
func (m *metrics) bounced(kind, result string) { m.bounces.WithLabelValues(kind, result).Inc() }

// delivered is the queue's Options.Delivered: the row reached the relay at at.
func (m *metrics) delivered(r queue.Row, at time.Time) {
	since := r.Created
	if r.Requeued.After(since) {
		since = r.Requeued
	}
	m.latency.Observe(max(0, at.Sub(since).Seconds()))
}

// relay counts each delivery attempt of r by result.
func (m *metrics) relay(r queue.Relay) queue.Relay { return countingRelay{r, m} }

type countingRelay struct {
	queue.Relay
	m *metrics
}

func (r countingRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	err := r.Relay.Send(ctx, from, to, data)
	r.count(to, err)
	return err
}

// MaxBatch and SendBatch pass batches on to a relay that takes them (the
// Maildir), so that counting does not undo them.
func (r countingRelay) MaxBatch() int {
	if br, ok := r.Relay.(queue.BatchRelay); ok {
		return br.MaxBatch()
	}
	return 1
}

func (r countingRelay) SendBatch(ctx context.Context, msgs []queue.Outgoing) []error {
	errs := r.Relay.(queue.BatchRelay).SendBatch(ctx, msgs)
	for i, err := range errs {
		r.count(msgs[i].To, err)
	}
	return errs
}

// count records one delivery attempt by its result.
func (r countingRelay) count(to []string, err error) {
	var rcptErr *queue.RcptError
	result := "deferred"
	switch {
	case err == nil:
		result = "delivered"
	case errors.As(err, &rcptErr) && len(rcptErr.Failed) < len(to):
		result = "partial"
	case queue.IsPermanent(err):
		result = "refused"
	}
	if result == "delivered" || result == "partial" {
		r.m.sent.Inc()
	}
	r.m.deliveries.WithLabelValues(result).Inc()
}

// handler counts the messages h accepted (committed and answered 250).
func (m *metrics) handler(h smtpd.Handler) smtpd.Handler { return countingHandler{h, m} }

type countingHandler struct {
	smtpd.Handler
	m *metrics
}

func (h countingHandler) Handle(ctx context.Context, env smtpd.Envelope, msg []byte) error {
	err := h.Handler.Handle(ctx, env, msg)
	var lr *listd.LimitRefusal
	switch {
	case err == nil:
		h.m.received.Inc()
	case errors.As(err, &lr):
		h.m.refused.WithLabelValues(lr.Reason).Inc()
	}
	return err
}

var _ smtpd.Handler = countingHandler{}
