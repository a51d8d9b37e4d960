package web

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var loopback = map[string]string{"RemoteAddr": "127.0.0.1:9999"}

func TestMetrics(t *testing.T) {
	snap := Snapshot{
		MessagesIn: 12, MessagesOut: 30,
		Queued: 2, Sending: 1, Failed: 3,
		OldestQueued:    t0.Add(-90 * time.Second),
		Deliveries:      map[string]uint64{"delivered": 30, "deferred": 4, "refused": 1},
		OpenIncidents:   map[string]int{"triage": 1, "fix": 0, "embargo": 2, "disclosed": 1},
		DeadlinesMissed: map[string]int{"triage": 1, `we"ird\name`: 2},
	}
	s, _ := newTest(t, Options{Version: "1.2.3", Stats: func(context.Context) (Snapshot, error) { return snap, nil }})
	get(t, s, "/healthz")
	get(t, s, "/nope")
	r := do(t, s, "GET", "/metrics", nil, loopback)
	if r.code != 200 {
		t.Fatalf("GET /metrics = %d", r.code)
	}
	if got := r.header.Get("Content-Type"); got != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	checkExposition(t, r.body)
	for _, want := range []string{
		`embargo_build_info{version="1.2.3"} 1`,
		"embargo_store_up 1",
		"embargo_messages_received_total 12",
		"embargo_messages_sent_total 30",
		`embargo_queue_messages{state="queued"} 2`,
		`embargo_queue_messages{state="sending"} 1`,
		`embargo_queue_messages{state="failed"} 3`,
		"embargo_queue_oldest_age_seconds 90",
		`embargo_deliveries_total{result="deferred"} 4`,
		`embargo_deliveries_total{result="delivered"} 30`,
		`embargo_incidents_open{phase="embargo"} 2`,
		`embargo_incidents_open{phase="fix"} 0`,
		`embargo_deadlines_missed{deadline="triage"} 1`,
		`embargo_deadlines_missed{deadline="we\"ird\\name"} 2`,
		`embargo_http_requests_total{route="healthz",code="200"} 1`,
		`embargo_http_requests_total{route="none",code="404"} 1`,
	} {
		if !strings.Contains(r.body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
	// The scrape itself is counted for the next one.
	r = do(t, s, "GET", "/metrics", nil, loopback)
	if !strings.Contains(r.body, `embargo_http_requests_total{route="metrics",code="200"} 1`+"\n") {
		t.Errorf("second scrape does not count the first:\n%s", r.body)
	}
}

func TestMetricsStatsError(t *testing.T) {
	s, logs := newTest(t, Options{Stats: func(context.Context) (Snapshot, error) {
		return Snapshot{MessagesIn: 5}, errors.New("store closed")
	}})
	r := do(t, s, "GET", "/metrics", nil, loopback)
	if r.code != 200 {
		t.Fatalf("GET /metrics = %d, want 200 with embargo_store_up 0", r.code)
	}
	checkExposition(t, r.body)
	if !strings.Contains(r.body, "embargo_store_up 0\n") || !strings.Contains(r.body, "embargo_messages_received_total 0\n") {
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

var (
	metricName  = `[a-zA-Z_:][a-zA-Z0-9_:]*`
	labelPair   = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"`
	sampleLine  = regexp.MustCompile(`^(` + metricName + `)(\{` + labelPair + `(,` + labelPair + `)*\})? (\S+)$`)
	helpLine    = regexp.MustCompile(`^# HELP (` + metricName + `) .*$`)
	typeLine    = regexp.MustCompile(`^# TYPE (` + metricName + `) (counter|gauge|histogram|summary|untyped)$`)
	counterName = regexp.MustCompile(`_total$`)
)

// checkExposition validates the text format 0.0.4 as Prometheus parses it:
// every sample belongs to a family announced by HELP and TYPE just before,
// each family appears once, values are floats, the body ends with a newline.
func checkExposition(t *testing.T, body string) {
	t.Helper()
	if !strings.HasSuffix(body, "\n") {
		t.Errorf("exposition does not end with a newline")
	}
	seen := map[string]bool{}
	current, typ := "", ""
	for i, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		switch {
		case helpLine.MatchString(l):
			name := helpLine.FindStringSubmatch(l)[1]
			if seen[name] {
				t.Errorf("line %d: family %s announced twice", i+1, name)
			}
			seen[name], current, typ = true, name, ""
		case typeLine.MatchString(l):
			m := typeLine.FindStringSubmatch(l)
			if m[1] != current {
				t.Errorf("line %d: TYPE for %s after HELP for %s", i+1, m[1], current)
			}
			typ = m[2]
			if (typ == "counter") != counterName.MatchString(m[1]) {
				t.Errorf("line %d: %s is a %s; counters, and only they, end in _total", i+1, m[1], typ)
			}
		case sampleLine.MatchString(l):
			m := sampleLine.FindStringSubmatch(l)
			if m[1] != current || typ == "" {
				t.Errorf("line %d: sample %s outside its family (%s)", i+1, m[1], current)
			}
			if _, err := strconv.ParseFloat(m[len(m)-1], 64); err != nil {
				t.Errorf("line %d: value %q is not a float", i+1, m[len(m)-1])
			}
		default:
			t.Errorf("line %d does not parse: %q", i+1, l)
		}
	}
}
