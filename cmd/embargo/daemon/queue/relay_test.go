package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// syncBuffer collects the recorder's raw dialogue.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestSMTPRelayNullSender(t *testing.T) {
	var dialogue syncBuffer
	rec := queuetest.New(t, queuetest.Options{Debug: &dialogue})
	relay := smtpRelayTo(t, rec)
	m := testMsg(1)
	if err := relay.Send(t.Context(), "", m.To, m.Data); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := rec.WaitFor(1, 5*time.Second)
	if msgs[0].From != "" {
		t.Errorf("envelope sender = %q, want the null sender", msgs[0].From)
	}
	// RFC 5321 §4.5.5: the null reverse-path is literally <>.
	if !strings.Contains(dialogue.String(), "MAIL FROM:<>") {
		t.Errorf("dialogue has no MAIL FROM:<>:\n%s", dialogue.String())
	}
	if msgs[0].Helo != "embargo.test" {
		t.Errorf("EHLO name = %q, want embargo.test", msgs[0].Helo)
	}
}

func TestSMTPRelayDSN(t *testing.T) {
	tests := []struct {
		name       string
		dsn        bool
		wantReturn string
	}{
		{"DSN advertised", true, "HDRS"},
		{"no DSN", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := queuetest.New(t, queuetest.Options{DSN: tt.dsn})
			m := testMsg(1)
			if err := smtpRelayTo(t, rec).Send(t.Context(), m.From, m.To, m.Data); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if got := rec.WaitFor(1, 5*time.Second)[0].Return; got != tt.wantReturn {
				t.Errorf("RET = %q, want %q", got, tt.wantReturn)
			}
		})
	}
}

func TestSMTPRelayTLS(t *testing.T) {
	users := map[string]string{"embargo": "s3cret"}
	tests := []struct {
		name      string
		server    queuetest.Options
		scheme    string // the relay URL's scheme, when it differs from the server's mode
		user      string
		password  string
		trust     bool
		wantSent  bool
		wantInErr string
	}{
		{name: "STARTTLS with AUTH", server: queuetest.Options{TLS: queuetest.StartTLS, Users: users},
			user: "embargo", password: "s3cret", trust: true, wantSent: true},
		{name: "STARTTLS without AUTH", server: queuetest.Options{TLS: queuetest.StartTLS},
			trust: true, wantSent: true},
		{name: "implicit TLS with AUTH", server: queuetest.Options{TLS: queuetest.ImplicitTLS, Users: users},
			user: "embargo", password: "s3cret", trust: true, wantSent: true},
		{name: "STARTTLS not offered", server: queuetest.Options{}, scheme: "smtp+starttls",
			trust: true, wantInErr: "STARTTLS"},
		{name: "self-signed certificate", server: queuetest.Options{TLS: queuetest.StartTLS},
			wantInErr: "certificate"},
		{name: "wrong-name certificate", server: queuetest.Options{TLS: queuetest.StartTLS, CertHost: "wrong.test"},
			trust: true, wantInErr: "certificate"},
		{name: "implicit TLS, self-signed", server: queuetest.Options{TLS: queuetest.ImplicitTLS},
			wantInErr: "certificate"},
		{name: "wrong password", server: queuetest.Options{TLS: queuetest.StartTLS, Users: users},
			user: "embargo", password: "guess", trust: true, wantInErr: "AUTH"},
		{name: "AUTH not offered", server: queuetest.Options{TLS: queuetest.StartTLS},
			user: "embargo", password: "s3cret", trust: true, wantInErr: "AUTH PLAIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := queuetest.New(t, tt.server)
			url := rec.URL(tt.user, tt.password)
			if tt.scheme != "" {
				url = tt.scheme + url[strings.Index(url, ":"):]
			}
			opts := RelayOptions{HeloName: "embargo.test", CommandTimeout: 5 * time.Second}
			if tt.trust {
				opts.RootCAs = rec.RootCAs()
			}
			relay, err := NewRelay(url, opts)
			if err != nil {
				t.Fatalf("NewRelay: %v", err)
			}
			m := testMsg(1)
			err = relay.Send(t.Context(), m.From, m.To, m.Data)
			if tt.wantSent {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				got := rec.WaitFor(1, 5*time.Second)[0]
				if !got.TLS || got.User != tt.user || got.Helo != "embargo.test" {
					t.Errorf("session: TLS %v, user %q, EHLO %q; want TLS, %q, embargo.test", got.TLS, got.User, got.Helo, tt.user)
				}
				if !bytes.Equal(got.Data, m.Data) {
					t.Errorf("data differs")
				}
				return
			}
			if err == nil {
				t.Fatal("Send = nil, want an error")
			}
			if IsPermanent(err) {
				t.Errorf("Send = %v, permanent; want temporary (keep the row queued)", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("Send = %v, want it to mention %q", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
			if n := len(rec.Messages()); n != 0 {
				t.Errorf("server received %d messages, want 0", n)
			}
		})
	}
}

// A relay without STARTTLS must leave the row queued, not failed, and send
// nothing (docs/threat-model.md B6).
func TestWorkerKeepsRowQueuedWhenTLSFails(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	relay, err := NewRelay("smtp+starttls://"+rec.Addr(), RelayOptions{CommandTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hook := &hookRecorder{}
	w := start(t, db, relay, Options{Failed: hook.Failed})
	var ids []uint64
	if err := db.Update(func(tx *bolt.Tx) error {
		var err error
		ids, err = enqueue(tx, time.Now(), []Msg{testMsg(1)})
		tx.OnCommit(w.Kick)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var r Row
	waitUntil(t, "a deferred attempt", func() bool {
		r, _ = getRow(t, db, ids[0])
		return r.Attempts == 1 && r.State == StateQueued
	})
	if !strings.Contains(r.LastError, "STARTTLS") {
		t.Errorf("LastError = %q, want it to mention STARTTLS", r.LastError)
	}
	if n := len(hook.Calls()); n != 0 {
		t.Errorf("hook called %d times, want 0", n)
	}
	if n := len(rec.Messages()); n != 0 {
		t.Errorf("server received %d messages, want 0", n)
	}
}

func TestSMTPRelayRecipientRefusals(t *testing.T) {
	const ok, perm, temp = "ok@src.test", "perm@src.test", "temp@src.test"
	tests := []struct {
		name     string
		to       []string
		wantSent []string
		wantPerm []string
		wantTemp []string
	}{
		{"all accepted", []string{ok}, []string{ok}, nil, nil},
		{"one permanent, one accepted", []string{perm, ok}, []string{ok}, []string{perm}, nil},
		{"one temporary, one accepted", []string{ok, temp}, []string{ok}, nil, []string{temp}},
		{"all refused", []string{perm, temp}, nil, []string{perm}, []string{temp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := queuetest.NewRecorder(t)
			rec.FailRcpt(perm, 550)
			rec.FailRcpt(temp, 450)
			m := testMsg(1)
			err := smtpRelayTo(t, rec).Send(t.Context(), m.From, tt.to, m.Data)
			var gotPerm, gotTemp []string
			var rcptErr *RcptError
			switch {
			case err == nil:
			case errors.As(err, &rcptErr):
				for _, rcpt := range tt.to {
					if e, refused := rcptErr.Failed[rcpt]; refused && IsPermanent(e) {
						gotPerm = append(gotPerm, rcpt)
					} else if refused {
						gotTemp = append(gotTemp, rcpt)
					}
				}
			default:
				t.Fatalf("Send = %v, want nil or *RcptError", err)
			}
			if !slices.Equal(gotPerm, tt.wantPerm) || !slices.Equal(gotTemp, tt.wantTemp) {
				t.Errorf("refused permanently %q, temporarily %q; want %q, %q", gotPerm, gotTemp, tt.wantPerm, tt.wantTemp)
			}
			msgs := rec.Messages()
			if len(tt.wantSent) == 0 {
				if len(msgs) != 0 {
					t.Errorf("DATA sent with no accepted recipient")
				}
				return
			}
			if len(msgs) != 1 || !slices.Equal(msgs[0].To, tt.wantSent) {
				t.Errorf("delivered %v, want one message to %q", msgs, tt.wantSent)
			}
		})
	}
}

func TestSMTPRelayDataRefused(t *testing.T) {
	tests := []struct {
		code     int
		wantPerm bool
	}{
		{554, true},
		{552, true},
		{451, false},
		{421, false},
	}
	for _, tt := range tests {
		rec := queuetest.NewRecorder(t)
		rec.FailData(tt.code)
		m := testMsg(1)
		err := smtpRelayTo(t, rec).Send(t.Context(), m.From, m.To, m.Data)
		if err == nil || IsPermanent(err) != tt.wantPerm {
			t.Errorf("Send with %d after DATA = %v, want permanent %v", tt.code, err, tt.wantPerm)
		}
	}
}

func TestSMTPRelayNonASCIIAddressNeedsSMTPUTF8(t *testing.T) {
	m := testMsg(1)
	for _, utf8 := range []bool{false, true} {
		rec := queuetest.New(t, queuetest.Options{SMTPUTF8: utf8})
		err := smtpRelayTo(t, rec).Send(t.Context(), m.From, []string{"jürgen@src.test"}, m.Data)
		if utf8 && err != nil {
			t.Errorf("SMTPUTF8 offered: Send = %v, want nil", err)
		}
		if !utf8 && !IsPermanent(err) {
			t.Errorf("SMTPUTF8 not offered: Send = %v, want a permanent error", err)
		}
	}
}

// A relay that accepts the connection and then says nothing must not hold a
// delivery past its context.
func TestSMTPRelayCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	for _, scheme := range []string{"smtp", "smtp+starttls"} {
		relay, err := NewRelay(scheme+"://"+ln.Addr().String(), RelayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		m := testMsg(1)
		begin := time.Now()
		err = relay.Send(ctx, m.From, m.To, m.Data)
		cancel()
		if err == nil || IsPermanent(err) {
			t.Errorf("%s: Send = %v, want a temporary error", scheme, err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("%s: Send returned after %v, want soon after the cancel", scheme, d)
		}
	}
}

func TestNewRelay(t *testing.T) {
	abs := filepath.Join(t.TempDir(), "outbox")
	tests := []struct {
		url     string
		wantErr string // "" for success
	}{
		{"smtp://127.0.0.1:25", ""},
		{"smtp://localhost:2525", ""},
		{"smtp://[::1]:25", ""},
		{"smtp://127.0.0.1", ""},
		{"smtp+starttls://user:pa%40ss@mail.example.org:587", ""},
		{"smtp+starttls://mail.example.org", ""},
		{"smtps://user:pass@mail.example.org:465", ""},
		{"maildir://" + abs, ""},
		{"smtp://mail.example.org:25", "loopback"},
		{"smtp://user:s3cret@127.0.0.1:25", "credentials"},
		{"smtp+starttls://user:s3cret@mail.example.org:587?tls=off", "query"},
		{"smtp+starttls://:s3cret@mail.example.org:587", "user"},
		{"smtp+starttls://mail.example.org:587/path", "path"},
		{"smtps://", "host"},
		{"maildir://relative/path", "absolute"},
		{"maildir:relative", "opaque"},
		{"lmtp://127.0.0.1:24", "unknown scheme"},
		{"smtps://user:s3cret@mail.example.org:465#frag", "fragment"},
		{"smtps://user:s3cret@[::1:465", "parse"},
	}
	for _, tt := range tests {
		_, err := NewRelay(tt.url, RelayOptions{})
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("NewRelay(%q) = %v, want nil", tt.url, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("NewRelay(%q) = %v, want an error about %q", tt.url, err, tt.wantErr)
		case err != nil && strings.Contains(err.Error(), "s3cret"):
			t.Errorf("NewRelay(%q) = %v: the error shows the password", tt.url, err)
		}
	}
}

func TestCheckData(t *testing.T) {
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{"canonical", "A: b\r\n\r\nbody\r\n", true},
		{"no final CRLF", "A: b\r\n\r\nbody", true},
		{"dot line", "A: b\r\n\r\n.\r\n..\r\n", true},
		{"empty", "", false},
		{"bare LF", "A: b\n\r\nbody\r\n", false},
		{"bare CR", "A: b\r\n\r\nbo\rdy\r\n", false},
		{"CR CR LF", "A: b\r\r\n", false},
		{"LF CR", "A: b\n\r", false},
		{"final CR", "A: b\r", false},
		{"smuggling", "A: b\r\n\r\nx\r\n.\rMAIL FROM:<a@b>\r\n", false},
	}
	for _, tt := range tests {
		err := checkData([]byte(tt.data))
		if (err == nil) != tt.ok {
			t.Errorf("checkData(%q) = %v, want ok %v", tt.data, err, tt.ok)
		}
		if err != nil && !IsPermanent(err) {
			t.Errorf("checkData(%q) = %v, want a permanent error", tt.data, err)
		}
	}
}

// TestCheckDataFirstBareByte compares checkData with the byte-by-byte
// definition on every string of up to 7 bytes over {a, CR, LF}: the same
// verdict and the same offset named.
func TestCheckDataFirstBareByte(t *testing.T) {
	ref := func(data []byte) string {
		for i := 0; i < len(data); i++ {
			switch data[i] {
			case '\r':
				if i+1 == len(data) || data[i+1] != '\n' {
					return fmt.Sprintf("bare CR at byte %d ", i)
				}
				i++
			case '\n':
				return fmt.Sprintf("bare LF at byte %d ", i)
			}
		}
		return ""
	}
	alphabet := []byte{'a', '\r', '\n'}
	var walk func(b []byte)
	walk = func(b []byte) {
		if len(b) > 0 {
			want := ref(b)
			err := checkData(b)
			switch {
			case want == "" && err != nil:
				t.Errorf("checkData(%q) = %v, want nil", b, err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("checkData(%q) = %v, want %q", b, err, want)
			}
		}
		if len(b) == 7 {
			return
		}
		for _, c := range alphabet {
			walk(append(b[:len(b):len(b)], c))
		}
	}
	walk(nil)
}
