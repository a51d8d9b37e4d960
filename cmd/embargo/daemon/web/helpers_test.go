package web

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// syncBuffer collects log output from handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testKey is an armored public key (the keys package's golden list key).
func testKey(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/security.asc")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newTest builds a Server with test defaults: fixed clock, a log buffer, the
// test key for security@example.test, and a tiny unsubscribe delay.
func newTest(t *testing.T, o Options) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Now == nil {
		o.Now = fixedNow
	}
	if o.Keys == nil {
		o.Keys = map[string][]byte{"security@example.test": testKey(t)}
	}
	if o.UnsubscribeMinDuration == 0 {
		o.UnsubscribeMinDuration = 20 * time.Millisecond
	}
	if o.BaseURL == "" {
		o.BaseURL = "https://security.example.test"
	}
	if o.Project == "" {
		o.Project = "Example"
	}
	return New(o), logs
}

// result is a finished response with its body read.
type result struct {
	code   int
	header http.Header
	body   string
}

// do runs one request through the handler in process. remote defaults to a
// documentation address (not loopback).
func do(t *testing.T, s *Server, method, target string, body io.Reader, hdr map[string]string) result {
	t.Helper()
	req := httptest.NewRequestWithContext(context.Background(), method, target, body)
	for k, v := range hdr {
		if k == "RemoteAddr" {
			req.RemoteAddr = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return result{code: res.StatusCode, header: res.Header, body: string(b)}
}

func get(t *testing.T, s *Server, target string) result {
	t.Helper()
	return do(t, s, http.MethodGet, target, nil, nil)
}

func form(body string) (io.Reader, map[string]string) {
	return strings.NewReader(body), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
}
