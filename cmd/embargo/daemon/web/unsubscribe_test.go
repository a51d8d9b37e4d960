package web

import (
	"bytes"
	"context"
	"errors"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSubs is a recording subscription store with one known token.
type fakeSubs struct {
	mu      sync.Mutex
	known   map[string]bool
	calls   []string
	removed []string
	err     error
}

func (f *fakeSubs) unsubscribe(_ context.Context, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, token)
	if f.err != nil {
		return f.err
	}
	if !f.known[token] {
		return ErrUnknownToken
	}
	delete(f.known, token)
	f.removed = append(f.removed, token)
	return nil
}

func newSubs() *fakeSubs {
	return &fakeSubs{known: map[string]bool{"known-token": true, "other-known": true}}
}

// TestUnsubscribeGetNeverActs: link scanners and previews fetch with GET
// (and HEAD); none of them may unsubscribe anyone.
func TestUnsubscribeGetNeverActs(t *testing.T) {
	subs := newSubs()
	s, _ := newTest(t, Options{Unsubscribe: subs.unsubscribe})
	for _, method := range []string{"GET", "HEAD"} {
		for _, target := range []string{"/unsubscribe/known-token", "/unsubscribe/known-token?List-Unsubscribe=One-Click", "/unsubscribe/unknown"} {
			r := do(t, s, method, target, nil, nil)
			if r.code != 200 {
				t.Errorf("%s %s = %d, want 200", method, target, r.code)
			}
			if method == "GET" && (!strings.Contains(r.body, `<form method="post">`) ||
				!strings.Contains(r.body, `name="List-Unsubscribe" value="One-Click"`)) {
				t.Errorf("GET %s: no confirm form:\n%s", target, r.body)
			}
			if got := r.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("%s %s: Cache-Control = %q, want no-store", method, target, got)
			}
		}
	}
	if len(subs.calls) != 0 {
		t.Errorf("GET/HEAD called Unsubscribe %d times: %q", len(subs.calls), subs.calls)
	}
	// The GET page is the same for a known and an unknown token.
	a, b := get(t, s, "/unsubscribe/known-token"), get(t, s, "/unsubscribe/unknown")
	if a.body != b.body {
		t.Errorf("GET page differs between a known and an unknown token")
	}
}

func TestUnsubscribePost(t *testing.T) {
	multipartBody := func() (*bytes.Buffer, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		_ = mw.WriteField("List-Unsubscribe", "One-Click")
		mw.Close()
		return &b, mw.FormDataContentType()
	}
	tests := []struct {
		name        string
		token       string
		body        func() (*bytes.Buffer, string)
		wantCode    int
		wantRemoved []string
		wantCalls   int
	}{
		{"urlencoded", "known-token", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString("List-Unsubscribe=One-Click"), "application/x-www-form-urlencoded"
		}, 200, []string{"known-token"}, 1},
		{"multipart (RFC 8058 §3.1)", "known-token", multipartBody, 200, []string{"known-token"}, 1},
		{"unknown token", "nope", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString("List-Unsubscribe=One-Click"), "application/x-www-form-urlencoded"
		}, 200, nil, 1},
		{"malformed token is never looked up", "bad%20token", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString("List-Unsubscribe=One-Click"), "application/x-www-form-urlencoded"
		}, 200, nil, 0},
		{"no one-click body", "known-token", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString(""), "application/x-www-form-urlencoded"
		}, 400, nil, 0},
		{"wrong value", "known-token", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString("List-Unsubscribe=Yes"), "application/x-www-form-urlencoded"
		}, 400, nil, 0},
		{"oversized body", "known-token", func() (*bytes.Buffer, string) {
			return bytes.NewBufferString("List-Unsubscribe=One-Click&x=" + strings.Repeat("a", 10000)), "application/x-www-form-urlencoded"
		}, 400, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subs := newSubs()
			s, _ := newTest(t, Options{Unsubscribe: subs.unsubscribe})
			body, ct := tt.body()
			r := do(t, s, "POST", "/unsubscribe/"+tt.token, body, map[string]string{"Content-Type": ct})
			if r.code != tt.wantCode {
				t.Errorf("POST = %d, want %d\n%s", r.code, tt.wantCode, r.body)
			}
			if len(subs.calls) != tt.wantCalls {
				t.Errorf("Unsubscribe called %d times, want %d", len(subs.calls), tt.wantCalls)
			}
			if strings.Join(subs.removed, ",") != strings.Join(tt.wantRemoved, ",") {
				t.Errorf("removed %q, want %q", subs.removed, tt.wantRemoved)
			}
		})
	}
}

// TestUnsubscribeUniform: a known token, an unknown token and a malformed
// token get byte-identical answers (status, headers but Date, body), none
// sooner than the minimum duration.
func TestUnsubscribeUniform(t *testing.T) {
	subs := newSubs()
	const minDur = 30 * time.Millisecond
	s, _ := newTest(t, Options{Unsubscribe: subs.unsubscribe, UnsubscribeMinDuration: minDur})
	var first *result
	for _, token := range []string{"known-token", "never-issued", "x", strings.Repeat("A", 300), "other-known"} {
		body, hdr := form("List-Unsubscribe=One-Click")
		start := time.Now()
		r := do(t, s, "POST", "/unsubscribe/"+token, body, hdr)
		if el := time.Since(start); el < minDur {
			t.Errorf("token %.10q answered after %v, before the minimum %v", token, el, minDur)
		}
		r.header.Del("Date")
		if first == nil {
			first = &r
			continue
		}
		if r.code != first.code || r.body != first.body || !equalHeaders(r.header, first.header) {
			t.Errorf("token %.10q: answer differs:\n%d %v %q\nvs\n%d %v %q", token, r.code, r.header, r.body, first.code, first.header, first.body)
		}
	}
	if first.code != 200 {
		t.Errorf("POST = %d, want 200", first.code)
	}
	if len(subs.removed) != 2 {
		t.Errorf("removed %q, want both known tokens", subs.removed)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if strings.Join(a.Values(k), "\n") != strings.Join(b.Values(k), "\n") {
			return false
		}
	}
	return true
}

func TestUnsubscribeStoreUnavailable(t *testing.T) {
	subs := newSubs()
	subs.err = errors.New("subscriptions: not available")
	s, logs := newTest(t, Options{Unsubscribe: subs.unsubscribe})
	body, hdr := form("List-Unsubscribe=One-Click")
	if r := do(t, s, "POST", "/unsubscribe/known-token", body, hdr); r.code != http.StatusServiceUnavailable {
		t.Errorf("POST with a failing store = %d, want 503", r.code)
	}
	if !strings.Contains(logs.String(), "not available") || strings.Contains(logs.String(), "known-token") {
		t.Errorf("log must name the error and not the token:\n%s", logs)
	}
	// No function at all: the same 503.
	n, _ := newTest(t, Options{})
	body, hdr = form("List-Unsubscribe=One-Click")
	if r := do(t, n, "POST", "/unsubscribe/known-token", body, hdr); r.code != http.StatusServiceUnavailable {
		t.Errorf("POST without Unsubscribe = %d, want 503", r.code)
	}
}
