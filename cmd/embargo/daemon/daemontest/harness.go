// Package daemontest runs the real daemon in-process for tests, as
// net/http/httptest runs a server: on loopback, on a real bbolt file in a
// temporary directory, with a recording relay (queuetest) that receives what
// it sends (docs/threat-model.md §2.2). It also holds the tests' SMTP client
// helpers and a throw-away GnuPG (gpg.go).
package daemontest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// Harness is a daemon under test.
type Harness struct {
	T    testing.TB
	Dir  string // the data directory
	TOML string // the configuration
	Opts daemon.Options
	Rec  *queuetest.Recorder // what the daemon sent; nil with Config.Relay
	D    *daemon.Daemon      // nil while stopped
	Logs *SyncBuffer         // the daemon's log, at debug level

	dkim *queuetest.DKIMKey // the DKIM key of the last start, if any
}

// DefaultMembers are the committee and a distributor of most tests.
const DefaultMembers = `[[members]]
email = "alice@ex.test"
name  = "Alice"
roles = ["src"]
[[members]]
email = "bob@ex.test"
name  = "Bob"
roles = ["src"]
[[members]]
email = "dist@vendor.test"
roles = ["distributor"]
`

// Config varies the configuration: top-level keys, the members (empty:
// DefaultMembers), and text appended inside [smtp] and after it. Relay, when
// set, replaces the recording relay's URL.
type Config struct {
	Top, Members, Extra string
	Relay               string
}

// New starts a daemon on o; its zero timing knobs are made short for tests
// (queue backoff 20 ms, announcement delay after "embargo lifted" 300 ms).
// The daemon stops when the test ends.
func New(t testing.TB, c Config, o daemon.Options) *Harness {
	t.Helper()
	h := &Harness{T: t, Dir: t.TempDir(), Opts: o, Logs: &SyncBuffer{}}
	relay := c.Relay
	if relay == "" {
		h.Rec = queuetest.NewRecorder(t)
		relay = h.Rec.Addr()
	}
	members := c.Members
	if members == "" {
		members = DefaultMembers
	}
	// Top-level keys must come before the first table.
	h.TOML = fmt.Sprintf("data_dir = %q\n", h.Dir) + c.Top + "domain = \"ex.test\"\n" + members +
		"[smtp]\nlisten = \"127.0.0.1:0\"\n" + c.Extra +
		fmt.Sprintf("\n[relay]\nurl = \"smtp://%s\"\n", relay)
	if h.Opts.MinBackoff == 0 {
		h.Opts.MinBackoff = 20 * time.Millisecond
	}
	if h.Opts.LiftGrace == 0 {
		h.Opts.LiftGrace = 300 * time.Millisecond
	}
	if h.Opts.Logger == nil {
		h.Opts.Logger = daemon.NewLogger("debug", h.Logs)
	}
	if h.Rec != nil {
		// Registered before the stop, so it runs after it: the rules see
		// the configuration the test ended with.
		t.Cleanup(h.expect)
	}
	h.Start()
	t.Cleanup(func() {
		if h.D != nil {
			h.D.Stop(context.Background())
		}
	})
	return h
}

// expect gives the recording relay the policy of the configuration (Expect).
func (h *Harness) expect() { h.Expect(h.Rec) }

// Expect gives rec the policy of the harness's configuration, for the
// rules it checks on every message (queuetest.Rule): the domain, the DKIM
// key, the committee, and the envelope senders whose mail is always
// encrypted: the distributors list's (README "Lists": distributors is always
// "required") and the security list's when it is "required". A test's own
// opt-outs (Rec.Allow) still apply. The harness's own recording relay
// gets it when the test ends; a test that points a copy of the
// configuration at a relay of its own gives it the same rules.
func (h *Harness) Expect(rec *queuetest.Recorder) {
	cfg, err := config.Parse([]byte(h.TOML), "harness.toml")
	if err == nil {
		err = cfg.Resolve()
	}
	if err != nil {
		h.T.Errorf("harness: configuration for the relay's checks: %v", err)
		return
	}
	p := queuetest.Policy{Domain: cfg.Domain, Encrypted: []string{"distributors+bounces-"}}
	if l, ok := cfg.Lists["security"]; ok && l.Encryption == "required" {
		p.Encrypted = append(p.Encrypted, "security+bounces-")
	}
	for _, m := range cfg.Members {
		if m.Has("src") {
			p.Committee = append(p.Committee, m.Email)
		}
	}
	if cfg.DKIM.Selector != "" && h.dkim != nil {
		p.DKIM = h.dkim
	}
	rec.Expect(p)
}

// Config parses the harness's configuration.
func (h *Harness) Config() *config.Config {
	h.T.Helper()
	cfg, err := config.Parse([]byte(h.TOML), "harness.toml")
	if err != nil {
		h.T.Fatalf("harness config: %v\n%s", err, h.TOML)
	}
	if err := cfg.Resolve(); err != nil {
		h.T.Fatal(err)
	}
	return cfg
}

// Start starts the daemon (again, after Stop) on the same store.
func (h *Harness) Start() {
	h.T.Helper()
	cfg := h.Config()
	d := daemon.New(cfg, h.Opts)
	if err := d.Start(context.Background()); err != nil {
		h.T.Fatalf("start daemon: %v", err)
	}
	h.D = d
	if cfg.DKIM.Selector != "" {
		// Read now, as the daemon did: a test may spoil the file later.
		k, _, err := daemon.LoadDKIMKey(cfg, false)
		if err != nil {
			h.T.Fatalf("harness: the DKIM key the daemon started with: %v", err)
		}
		h.dkim = &queuetest.DKIMKey{Selector: cfg.DKIM.Selector, Public: k.Public()}
	}
}

// Stop stops the daemon.
func (h *Harness) Stop() {
	h.T.Helper()
	if err := h.D.Stop(context.Background()); err != nil {
		h.T.Fatalf("stop daemon: %v", err)
	}
	h.D = nil
}

// Addr is where the daemon's SMTP listener is.
func (h *Harness) Addr() string { return h.D.Addr().String() }

// Send delivers raw (LF line ends are converted to CRLF) with a real SMTP
// client.
func (h *Harness) Send(from string, to []string, raw string) error {
	h.T.Helper()
	return SendSMTP(h.Addr(), from, to, []byte(strings.ReplaceAll(raw, "\n", "\r\n")))
}

// MustSend is Send, failing the test on a refusal.
func (h *Harness) MustSend(from string, to []string, raw string) {
	h.T.Helper()
	if err := h.Send(from, to, raw); err != nil {
		h.T.Fatalf("send from %s: %v", from, err)
	}
}

// WaitMail waits until the relay holds n messages and returns them.
func (h *Harness) WaitMail(n int) []queuetest.Message {
	h.T.Helper()
	msgs := h.Rec.WaitFor(n, 10*time.Second)
	if len(msgs) < n {
		h.T.Fatalf("relay got %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// Settle waits briefly and asserts that the relay holds exactly n messages.
func (h *Harness) Settle(n int) []queuetest.Message {
	h.T.Helper()
	h.WaitMail(n)
	time.Sleep(150 * time.Millisecond)
	msgs := h.Rec.Messages()
	if len(msgs) != n {
		h.T.Fatalf("relay got %d messages, want exactly %d:\n%s", len(msgs), n, Summary(msgs))
	}
	return msgs
}

// ConfigFile writes the configuration to a file, for the command line.
func (h *Harness) ConfigFile() string {
	h.T.Helper()
	p := filepath.Join(h.T.TempDir(), "embargo.toml")
	WriteFile(h.T, p, h.TOML)
	return p
}

// Summary lists messages by recipients and subject.
func Summary(msgs []queuetest.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		hd := Header(nil, m)
		fmt.Fprintf(&b, "  %v  %q\n", m.To, hd.Get("Subject"))
	}
	return b.String()
}

// Header parses an outbound message's header; t may be nil to ignore errors.
func Header(t testing.TB, m queuetest.Message) mail.Header {
	r, err := mail.CreateReader(bytes.NewReader(m.Data))
	if err != nil {
		if t != nil {
			t.Fatalf("outbound message does not parse: %v", err)
		}
		return mail.Header{}
	}
	return r.Header
}

// Body returns the decoded text of an outbound message's first part.
func Body(t testing.TB, m queuetest.Message) string {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(p.Body)
	return string(b)
}

// To returns the messages sent to addr.
func To(msgs []queuetest.Message, addr string) []queuetest.Message {
	var out []queuetest.Message
	for _, m := range msgs {
		for _, r := range m.To {
			if strings.EqualFold(r, addr) {
				out = append(out, m)
			}
		}
	}
	return out
}

// SyncBuffer collects log output from many goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WriteFile writes a file with mode 0600, making its directory.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ReadFile reads a file, failing the test on an error.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// On points the harness at a subtest, so that its helpers fail that test;
// the function it returns points it back.
func (h *Harness) On(t testing.TB) func() {
	parent := h.T
	h.T = t
	return func() { h.T = parent }
}

// Report is a plain report to security@ex.test with a unique Message-ID.
func Report(from, subject, text string) string {
	return fmt.Sprintf("From: Reporter <%s>\nTo: security@ex.test\nSubject: %s\nMessage-ID: <%d.%s>\nDate: Mon, 23 Nov 2026 09:00:00 +0000\n\n%s\n",
		from, subject, time.Now().UnixNano(), from, text)
}

// MustContain fails the test for each of subs that s lacks.
func MustContain(t testing.TB, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

// WaitFor polls cond for up to 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitForWithin(t, 10*time.Second, what, cond)
}

// WaitForWithin is WaitFor with its own limit, for a peer whose pace is not
// ours (a real Postfix retrying a deferred recipient on a loaded machine).
func WaitForWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartErr starts a daemon that should refuse to start, and returns why.
func StartErr(t testing.TB, cfg *config.Config, o daemon.Options) error {
	t.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	d := daemon.New(cfg, o)
	err := d.Start(context.Background())
	if err == nil {
		d.Stop(context.Background())
	}
	return err
}
