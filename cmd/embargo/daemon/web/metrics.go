package web

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Stats reads the daemon's numbers for one /metrics scrape.
type Stats func(ctx context.Context) (Snapshot, error)

// Snapshot is what the daemon knows about itself at one instant. Counters
// (…Total, Deliveries) count since the process started, as Prometheus
// counters do; the rest are gauges.
type Snapshot struct {
	MessagesIn  uint64 // inbound messages accepted (250 after commit)
	MessagesOut uint64 // outbound messages handed to the relay successfully

	Queued, Sending, Failed int       // outbound queue rows by state
	OldestQueued            time.Time // Created of the oldest row not failed; zero when the queue is empty

	// Deliveries counts delivery attempts by result, e.g. "delivered",
	// "partial", "deferred", "refused".
	Deliveries map[string]uint64
	// OpenIncidents counts the incidents not closed, by phase name.
	OpenIncidents map[string]int
	// DeadlinesMissed counts the deadlines of open incidents that are past
	// due and not met, by deadline name ("triage", "fix", "notice", …).
	DeadlinesMissed map[string]int
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
	var snap Snapshot
	up := 1
	if s.o.Stats != nil {
		ctx, cancel := context.WithTimeout(r.Context(), funcTimeout)
		var err error
		snap, err = s.o.Stats(ctx)
		cancel()
		if err != nil {
			s.log.Warn("metrics: stats failed", "err", err)
			snap, up = Snapshot{}, 0
		}
	}
	var b bytes.Buffer
	s.writeMetrics(&b, snap, up)
	h := w.Header()
	// Prometheus text exposition format 0.0.4.
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = w.Write(b.Bytes())
}

// expo writes the text exposition format by hand: one HELP and TYPE line per
// family, then its samples.
type expo struct{ b *bytes.Buffer }

func (e expo) family(name, typ, help string) {
	fmt.Fprintf(e.b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// sample writes name{labels} value; labels alternate name and value.
func (e expo) sample(name string, v float64, labels ...string) {
	e.b.WriteString(name)
	if len(labels) > 0 {
		e.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				e.b.WriteByte(',')
			}
			e.b.WriteString(labels[i])
			e.b.WriteString(`="`)
			e.b.WriteString(escapeLabel(labels[i+1]))
			e.b.WriteByte('"')
		}
		e.b.WriteByte('}')
	}
	e.b.WriteByte(' ')
	e.b.WriteString(formatValue(v))
	e.b.WriteByte('\n')
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabel escapes a label value: backslash, double quote and line feed.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes HELP text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *Server) writeMetrics(b *bytes.Buffer, snap Snapshot, up int) {
	e := expo{b}
	e.family("embargo_build_info", "gauge", "Always 1; the version label names the running build.")
	version := s.o.Version
	if version == "" {
		version = "unknown"
	}
	e.sample("embargo_build_info", 1, "version", version)

	e.family("embargo_store_up", "gauge", "1 if the last statistics read from the store succeeded.")
	e.sample("embargo_store_up", float64(up))

	e.family("embargo_messages_received_total", "counter", "Inbound messages accepted since start.")
	e.sample("embargo_messages_received_total", float64(snap.MessagesIn))
	e.family("embargo_messages_sent_total", "counter", "Outbound messages delivered to the relay since start.")
	e.sample("embargo_messages_sent_total", float64(snap.MessagesOut))

	e.family("embargo_queue_messages", "gauge", "Outbound queue rows by state.")
	e.sample("embargo_queue_messages", float64(snap.Queued), "state", "queued")
	e.sample("embargo_queue_messages", float64(snap.Sending), "state", "sending")
	e.sample("embargo_queue_messages", float64(snap.Failed), "state", "failed")
	e.family("embargo_queue_oldest_age_seconds", "gauge", "Age of the oldest outbound row not failed; 0 when the queue is empty.")
	age := 0.0
	if !snap.OldestQueued.IsZero() {
		age = max(0, s.o.Now().Sub(snap.OldestQueued).Seconds())
	}
	e.sample("embargo_queue_oldest_age_seconds", math.Round(age*1000)/1000)

	e.family("embargo_deliveries_total", "counter", "Delivery attempts since start, by result.")
	for _, k := range sortedKeys(snap.Deliveries) {
		e.sample("embargo_deliveries_total", float64(snap.Deliveries[k]), "result", k)
	}
	e.family("embargo_incidents_open", "gauge", "Incidents not closed, by phase.")
	for _, k := range sortedKeys(snap.OpenIncidents) {
		e.sample("embargo_incidents_open", float64(snap.OpenIncidents[k]), "phase", k)
	}
	e.family("embargo_deadlines_missed", "gauge", "Deadlines of open incidents past due and not met, by deadline.")
	for _, k := range sortedKeys(snap.DeadlinesMissed) {
		e.sample("embargo_deadlines_missed", float64(snap.DeadlinesMissed[k]), "deadline", k)
	}

	s.mu.Lock()
	keys := make([]requestKey, 0, len(s.requests))
	for k := range s.requests {
		keys = append(keys, k)
	}
	counts := make(map[requestKey]uint64, len(keys))
	for _, k := range keys {
		counts[k] = s.requests[k]
	}
	s.mu.Unlock()
	slices.SortFunc(keys, func(a, b requestKey) int {
		if c := strings.Compare(a.route, b.route); c != 0 {
			return c
		}
		return a.code - b.code
	})
	e.family("embargo_http_requests_total", "counter", "HTTP requests answered since start, by route and status code.")
	for _, k := range keys {
		e.sample("embargo_http_requests_total", float64(counts[k]), "route", k.route, "code", strconv.Itoa(k.code))
	}
}
