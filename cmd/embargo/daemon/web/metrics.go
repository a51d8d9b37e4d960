package web

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Stats reads the store's gauges for one /metrics scrape.
type Stats func(ctx context.Context) (Snapshot, error)

// Snapshot is what the store says at one instant: gauges only. The
// process's counters and histograms (messages, deliveries, durations) are
// the daemon's own collectors on Options.Registry.
type Snapshot struct {
	Queued, Sending, Failed int       // outbound queue rows by state
	OldestQueued            time.Time // Created of the oldest row not failed; zero when the queue is empty

	// OpenIncidents counts the incidents not closed, by phase name.
	OpenIncidents map[string]int
	// DeadlinesMissed counts the deadlines of open incidents that are past
	// due and not met, by deadline name ("triage", "fix", "notice", …).
	DeadlinesMissed map[string]int
}

// initMetrics registers the server's collectors (requests answered, build
// information, the store's gauges) and makes the /metrics handler, in the
// Prometheus text exposition format, over Options.Registry.
func (s *Server) initMetrics() {
	reg := s.o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "embargo_http_requests_total",
		Help: "HTTP requests answered since start, by route and status code.",
	}, []string{"route", "code"})
	version := s.o.Version
	if version == "" {
		version = "unknown"
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "embargo_build_info",
		Help:        "Always 1; the version label names the running build.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	for _, c := range []prometheus.Collector{s.requests, build, storeCollector{s}} {
		if err := reg.Register(c); err != nil {
			s.log.Error("metrics: collector not registered", "err", err)
		}
	}
	s.metricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{s},
		ErrorHandling: promhttp.ContinueOnError, // one failing collector leaves the others readable
	})
}

// countRequest counts one answered request.
func (s *Server) countRequest(route string, code int) {
	s.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// metricsAllowed: /metrics tells how many incidents are under embargo, so only
// the configured networks see it, and never through a proxy (a reverse proxy
// on the same host would otherwise make every visitor look like loopback).
func (s *Server) metricsAllowed(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	addr, err := netip.ParseAddr(remoteIP(r))
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range s.o.MetricsFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if !s.metricsAllowed(r) {
		notFound(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.metricsHandler.ServeHTTP(w, r)
}

// slogPrinter is promhttp's error log.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Warn("metrics: scrape", "err", v) }

// storeCollector reads Options.Stats at each scrape. A failed read reports
// embargo_store_up 0 and zeros, never stale numbers.
type storeCollector struct{ s *Server }

var (
	descStoreUp   = prometheus.NewDesc("embargo_store_up", "1 if the last statistics read from the store succeeded.", nil, nil)
	descQueue     = prometheus.NewDesc("embargo_queue_messages", "Outbound queue rows by state.", []string{"state"}, nil)
	descQueueAge  = prometheus.NewDesc("embargo_queue_oldest_age_seconds", "Age of the oldest outbound row not failed; 0 when the queue is empty.", nil, nil)
	descOpen      = prometheus.NewDesc("embargo_incidents_open", "Incidents not closed, by phase.", []string{"phase"}, nil)
	descDeadlines = prometheus.NewDesc("embargo_deadlines_missed", "Deadlines of open incidents past due and not met, by deadline.", []string{"deadline"}, nil)
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStoreUp, descQueue, descQueueAge, descOpen, descDeadlines} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	var snap Snapshot
	up := 1.0
	if c.s.o.Stats != nil {
		ctx, cancel := context.WithTimeout(context.Background(), funcTimeout)
		var err error
		snap, err = c.s.o.Stats(ctx)
		cancel()
		if err != nil {
			c.s.log.Warn("metrics: stats failed", "err", err)
			snap, up = Snapshot{}, 0
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descStoreUp, up)
	gauge(descQueue, float64(snap.Queued), "queued")
	gauge(descQueue, float64(snap.Sending), "sending")
	gauge(descQueue, float64(snap.Failed), "failed")
	age := 0.0
	if !snap.OldestQueued.IsZero() {
		age = max(0, c.s.o.Now().Sub(snap.OldestQueued).Seconds())
	}
	gauge(descQueueAge, age)
	for _, k := range sortedKeys(snap.OpenIncidents) {
		gauge(descOpen, float64(snap.OpenIncidents[k]), k)
	}
	for _, k := range sortedKeys(snap.DeadlinesMissed) {
		gauge(descDeadlines, float64(snap.DeadlinesMissed[k]), k)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
