package web

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		health   func(context.Context) error
		method   string
		wantCode int
		wantBody string
	}{
		{"healthy", func(context.Context) error { return nil }, "GET", 200, "ok\n"},
		{"no check configured", nil, "GET", 200, "ok\n"},
		{"store down", func(context.Context) error { return errors.New("bolt: database not open /secret/path") }, "GET", 503, "unavailable\n"},
		{"HEAD", func(context.Context) error { return nil }, "HEAD", 200, "ok\n"}, // the recorder keeps HEAD bodies; net/http drops them
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTest(t, Options{Health: tt.health})
			r := do(t, s, tt.method, "/healthz", nil, nil)
			if r.code != tt.wantCode || r.body != tt.wantBody {
				t.Errorf("%s /healthz = %d %q, want %d %q", tt.method, r.code, r.body, tt.wantCode, tt.wantBody)
			}
			if got := r.header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q", got)
			}
		})
	}
}

// TestSecurityHeaders checks the headers every response carries, whatever
// the route or the status.
func TestSecurityHeaders(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	targets := []struct{ method, target string }{
		{"GET", "/healthz"},
		{"GET", "/metrics"},
		{"GET", "/.well-known/openpgpkey/policy"},
		{"GET", "/.well-known/openpgpkey/hu/" + WKDHash("security@example.test")},
		{"GET", "/unsubscribe/tok"},
		{"POST", "/unsubscribe/tok"},
		{"GET", "/advisories/"},
		{"GET", "/advisories/SEC-2026-0001"},
		{"GET", "/advisories/feed.atom"},
		{"GET", "/advisories/feed.json"},
		{"GET", "/advisories/SEC-2026-0001.osv.json"},
		{"GET", "/nothing-here"},
		{"DELETE", "/healthz"},
	}
	for _, tt := range targets {
		r := do(t, s, tt.method, tt.target, nil, nil)
		for h, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"Referrer-Policy":        "no-referrer",
			"X-Frame-Options":        "DENY",
		} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s %s: %s = %q, want %q", tt.method, tt.target, h, got, want)
			}
		}
		c := r.header.Get("Content-Security-Policy")
		if !strings.HasPrefix(c, "default-src 'none'; style-src 'sha256-") || !strings.Contains(c, "frame-ancestors 'none'") {
			t.Errorf("%s %s: Content-Security-Policy = %q", tt.method, tt.target, c)
		}
		if r.header.Get("Content-Type") == "" && r.code != 405 {
			t.Errorf("%s %s: no Content-Type", tt.method, tt.target)
		}
	}
}

// TestInlineStyleMatchesCSP: the one <style> element of each page hashes to
// the CSP's style-src, so the browser applies it and nothing else.
func TestInlineStyleMatchesCSP(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	for _, target := range []string{"/advisories/", "/advisories/SEC-2026-0001", "/unsubscribe/x"} {
		r := get(t, s, target)
		m := regexp.MustCompile(`<style>(.*?)</style>`).FindAllStringSubmatch(r.body, -1)
		if len(m) != 1 || m[0][1] != css {
			t.Errorf("GET %s: style elements %q, want exactly the css constant", target, m)
		}
		if strings.Contains(r.body, "<script") || strings.Contains(r.body, " style=") {
			t.Errorf("GET %s: script or inline style attribute in page", target)
		}
	}
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	s, _ := newTest(t, Options{})
	tests := []struct {
		method, target string
		want           int
	}{
		{"POST", "/healthz", 405},
		{"PUT", "/metrics", 405},
		{"DELETE", "/advisories/", 405},
		{"POST", "/advisories/feed.json", 405},
		{"PUT", "/unsubscribe/tok", 405},
		{"POST", "/.well-known/openpgpkey/policy", 405},
		{"OPTIONS", "/healthz", 405},
		{"GET", "/", 404},
		{"GET", "/.git/config", 404},
		{"GET", "/admin", 404},
		{"POST", "/nothing", 404},
		{"GET", "/unsubscribe/", 404},
	}
	for _, tt := range tests {
		if r := do(t, s, tt.method, tt.target, nil, nil); r.code != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.target, r.code, tt.want)
		}
	}
}

// TestAccessLog: one line per request, with the route and status, and never
// a query string or an unsubscribe token.
func TestAccessLog(t *testing.T) {
	s, logs := newTest(t, Options{Unsubscribe: func(context.Context, string) error { return nil }})
	get(t, s, "/advisories/?secret-query=QUERYCANARY")
	get(t, s, "/unsubscribe/TOKENCANARY")
	body, hdr := form("List-Unsubscribe=One-Click")
	do(t, s, "POST", "/unsubscribe/TOKENCANARY2?x=QUERYCANARY", body, hdr)
	get(t, s, "/.well-known/openpgpkey/hu/"+WKDHash("security@example.test")+"?l=QUERYCANARY")
	do(t, s, "PUT", "/unsubscribe/TOKENCANARY3", nil, nil)
	get(t, s, "/unsubscribe/TOKENCANARY4/extra")
	out := logs.String()
	for _, bad := range []string{"QUERYCANARY", "TOKENCANARY", "secret-query"} {
		if strings.Contains(out, bad) {
			t.Errorf("access log contains %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{`path=/advisories/ route=advisories status=200`, `path=/unsubscribe/{token} route=unsubscribe status=200`, "route=wkd status=404"} {
		if !strings.Contains(out, want) {
			t.Errorf("access log lacks %q:\n%s", want, out)
		}
	}
}

func TestListenerLimits(t *testing.T) {
	s, _ := newTest(t, Options{})
	if s.srv.ReadHeaderTimeout <= 0 || s.srv.ReadTimeout <= 0 || s.srv.WriteTimeout <= 0 || s.srv.IdleTimeout <= 0 {
		t.Errorf("timeouts not all set: %+v", s.srv)
	}
	if s.srv.MaxHeaderBytes <= 0 || s.srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d", s.srv.MaxHeaderBytes)
	}
}

// TestServeAndShutdown drives the real listener over TCP.
func TestServeAndShutdown(t *testing.T) {
	s, _ := newTest(t, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	res, err := http.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "ok\n" {
		t.Errorf("GET /healthz = %d %q", res.StatusCode, b)
	}
	res, err = http.Head("http://" + l.Addr().String() + "/advisories/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || len(b) != 0 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD /advisories/ = %d, %d body bytes, %q", res.StatusCode, len(b), res.Header.Get("Content-Type"))
	}
	// Loopback client: /metrics is allowed.
	res, err = http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("GET /metrics from loopback = %d, want 200", res.StatusCode)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve() = %v, want http.ErrServerClosed", err)
	}
}

func TestMetricsAccess(t *testing.T) {
	s, _ := newTest(t, Options{MetricsFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"allowed network", map[string]string{"RemoteAddr": "10.1.2.3:4000"}, 200},
		{"other network", map[string]string{"RemoteAddr": "192.0.2.1:4000"}, 404},
		{"loopback not in the list", map[string]string{"RemoteAddr": "127.0.0.1:4000"}, 404},
		{"through a proxy", map[string]string{"RemoteAddr": "10.1.2.3:4000", "X-Forwarded-For": "203.0.113.9"}, 404},
		{"Forwarded header", map[string]string{"RemoteAddr": "10.1.2.3:4000", "Forwarded": "for=203.0.113.9"}, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, s, "GET", "/metrics", nil, tt.hdr); r.code != tt.want {
				t.Errorf("GET /metrics = %d, want %d", r.code, tt.want)
			}
		})
	}
	// Default: loopback only, IPv4 and IPv6.
	d, _ := newTest(t, Options{})
	for addr, want := range map[string]int{"127.0.0.1:1": 200, "[::1]:1": 200, "192.0.2.1:1": 404, "[2001:db8::1]:1": 404} {
		if r := do(t, d, "GET", "/metrics", nil, map[string]string{"RemoteAddr": addr}); r.code != want {
			t.Errorf("default: GET /metrics from %s = %d, want %d", addr, r.code, want)
		}
	}
}
