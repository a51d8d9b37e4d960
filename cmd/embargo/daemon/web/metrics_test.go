package web

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var loopback = map[string]string{"RemoteAddr": "127.0.0.1:9999"}

func TestMetrics(t *testing.T) {
	snap := Snapshot{
		Queued: 2, Sending: 1, Failed: 3,
		OldestQueued:    t0.Add(-90 * time.Second),
		OpenIncidents:   map[string]int{"triage": 1, "fix": 0, "embargo": 2, "disclosed": 1},
		DeadlinesMissed: map[string]int{"triage": 1, `we"ird\name`: 2},
	}
	// The daemon's own collectors share the registry.
	reg := prometheus.NewRegistry()
	daemonCounter := prometheus.NewCounter(prometheus.CounterOpts{Name: "embargo_messages_received_total", Help: "x"})
	reg.MustRegister(daemonCounter)
	daemonCounter.Add(12)
	s, _ := newTest(t, Options{Version: "1.2.3", Registry: reg, Stats: func(context.Context) (Snapshot, error) { return snap, nil }})
	get(t, s, "/healthz")
	get(t, s, "/nope")
	r := do(t, s, "GET", "/metrics", nil, loopback)
	if r.code != 200 {
		t.Fatalf("GET /metrics = %d", r.code)
	}
	if got := r.header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain; version=0.0.4; charset=utf-8") {
		t.Errorf("Content-Type = %q, want the text exposition format 0.0.4", got)
	}
	checkExposition(t, r.body)
	for _, want := range []string{
		`embargo_build_info{version="1.2.3"} 1`,
		"embargo_store_up 1",
		"embargo_messages_received_total 12",
		`embargo_queue_messages{state="queued"} 2`,
		`embargo_queue_messages{state="sending"} 1`,
		`embargo_queue_messages{state="failed"} 3`,
		"embargo_queue_oldest_age_seconds 90",
		`embargo_incidents_open{phase="embargo"} 2`,
		`embargo_incidents_open{phase="fix"} 0`,
		`embargo_deadlines_missed{deadline="triage"} 1`,
		`embargo_deadlines_missed{deadline="we\"ird\\name"} 2`,
		`embargo_http_requests_total{code="200",route="healthz"} 1`,
		`embargo_http_requests_total{code="404",route="none"} 1`,
	} {
		if !strings.Contains(r.body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
	// The scrape itself is counted for the next one.
	r = do(t, s, "GET", "/metrics", nil, loopback)
	if !strings.Contains(r.body, `embargo_http_requests_total{code="200",route="metrics"} 1`+"\n") {
		t.Errorf("second scrape does not count the first:\n%s", r.body)
	}
}

func TestMetricsStatsError(t *testing.T) {
	s, logs := newTest(t, Options{Stats: func(context.Context) (Snapshot, error) {
		return Snapshot{Queued: 5}, errors.New("store closed")
	}})
	r := do(t, s, "GET", "/metrics", nil, loopback)
	if r.code != 200 {
		t.Fatalf("GET /metrics = %d, want 200 with embargo_store_up 0", r.code)
	}
	checkExposition(t, r.body)
	if !strings.Contains(r.body, "embargo_store_up 0\n") || !strings.Contains(r.body, `embargo_queue_messages{state="queued"} 0`+"\n") {
		t.Errorf("a failed read must report store_up 0 and no stale numbers:\n%s", r.body)
	}
	if !strings.Contains(logs.String(), "store closed") {
		t.Errorf("stats error not logged")
	}
}

func TestMetricsEmptyQueueAge(t *testing.T) {
	s, _ := newTest(t, Options{Stats: func(context.Context) (Snapshot, error) { return Snapshot{}, nil }})
	r := do(t, s, "GET", "/metrics", nil, loopback)
	if !strings.Contains(r.body, "embargo_queue_oldest_age_seconds 0\n") {
		t.Errorf("empty queue age:\n%s", r.body)
	}
}

// checkExposition parses the body as Prometheus does (the text format
// 0.0.4): every family once, typed, with HELP, and counters, and only
// they, named _total.
func checkExposition(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, body)
	}
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
		if isCounter := f.GetType() == dto.MetricType_COUNTER; isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %v; counters, and only they, end in _total", name, f.GetType())
		}
	}
	return fams
}
