package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// harness runs the real daemon in-process on loopback with a recording relay
// (docs/threats.md §2.2) and a real bbolt file in a temporary directory.
type harness struct {
	t    *testing.T
	dir  string
	toml string
	so   startOptions
	rec  *queuetest.Recorder
	d    *daemon
	logs *syncBuffer
}

// defaultMembers are the committee and a distributor of most tests.
const defaultMembers = `[[members]]
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

// baseTOML ends inside [smtp], so a test's extra text may start with smtp
// keys and go on with other tables.
const baseTOML = "domain = \"ex.test\"\n" + defaultMembers + "[smtp]\nlisten = \"127.0.0.1:0\"\n"

// harnessConfig varies the configuration: top-level keys, the members (empty:
// defaultMembers), and text appended inside [smtp] and after it.
type harnessConfig struct {
	top, members, extra string
}

func newHarness(t *testing.T, extra string, so startOptions) *harness {
	t.Helper()
	return newHarnessConfig(t, harnessConfig{extra: extra}, so)
}

func newHarnessConfig(t *testing.T, hc harnessConfig, so startOptions) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), so: so, logs: &syncBuffer{}}
	h.rec = queuetest.NewRecorder(t)
	// Top-level keys must come before the first table.
	members := hc.members
	if members == "" {
		members = defaultMembers
	}
	h.toml = fmt.Sprintf("data_dir = %q\n", h.dir) + hc.top + "domain = \"ex.test\"\n" + members +
		"[smtp]\nlisten = \"127.0.0.1:0\"\n" + hc.extra +
		fmt.Sprintf("\n[relay]\nurl = \"smtp://%s\"\n", h.rec.Addr())
	if h.so.backoff == 0 {
		h.so.backoff = 20 * time.Millisecond
	}
	if h.so.liftGrace == 0 {
		h.so.liftGrace = 300 * time.Millisecond
	}
	h.start()
	t.Cleanup(func() {
		if h.d != nil {
			h.d.Stop()
		}
	})
	return h
}

func (h *harness) config() *config.Config {
	h.t.Helper()
	cfg, err := config.Parse([]byte(h.toml), "harness.toml")
	if err != nil {
		h.t.Fatalf("harness config: %v\n%s", err, h.toml)
	}
	if err := cfg.Resolve(); err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

func (h *harness) start() {
	h.t.Helper()
	d, err := startWith(context.Background(), h.config(), newLogger("debug", h.logs), h.so)
	if err != nil {
		h.t.Fatalf("start daemon: %v", err)
	}
	h.d = d
}

func (h *harness) stop() {
	h.t.Helper()
	if err := h.d.Stop(); err != nil {
		h.t.Fatalf("stop daemon: %v", err)
	}
	h.d = nil
}

func (h *harness) addr() string { return h.d.addr.String() }

// send delivers raw (LF line ends are converted to CRLF) with a real SMTP client.
func (h *harness) send(from string, to []string, raw string) error {
	h.t.Helper()
	return sendSMTP(h.addr(), from, to, []byte(strings.ReplaceAll(raw, "\n", "\r\n")))
}

// sendSMTP is the drill's client (drill.go): one real SMTP transaction.
func sendSMTP(addr, from string, to []string, data []byte) error {
	return drillSend(addr, from, to, data)
}

// code returns the SMTP reply code of err, 0 for nil, -1 for a non-SMTP error.
func code(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return -1, err.Error()
}

func (h *harness) mustSend(from string, to []string, raw string) {
	h.t.Helper()
	if err := h.send(from, to, raw); err != nil {
		h.t.Fatalf("send from %s: %v", from, err)
	}
}

// waitMail waits until the relay holds n messages and returns them.
func (h *harness) waitMail(n int) []queuetest.Message {
	h.t.Helper()
	msgs := h.rec.WaitFor(n, 10*time.Second)
	if len(msgs) < n {
		h.t.Fatalf("relay got %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// settle waits briefly and asserts that the relay holds exactly n messages.
func (h *harness) settle(n int) []queuetest.Message {
	h.t.Helper()
	h.waitMail(n)
	time.Sleep(150 * time.Millisecond)
	msgs := h.rec.Messages()
	if len(msgs) != n {
		h.t.Fatalf("relay got %d messages, want exactly %d:\n%s", len(msgs), n, summary(msgs))
	}
	return msgs
}

func summary(msgs []queuetest.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		hd := header(nil, m)
		fmt.Fprintf(&b, "  %v  %q\n", m.To, hd.Get("Subject"))
	}
	return b.String()
}

// header parses an outbound message's header.
func header(t *testing.T, m queuetest.Message) mail.Header {
	r, err := mail.CreateReader(bytes.NewReader(m.Data))
	if err != nil {
		if t != nil {
			t.Fatalf("outbound message does not parse: %v", err)
		}
		return mail.Header{}
	}
	return r.Header
}

// body returns the decoded text of an outbound message's first part.
func body(t *testing.T, m queuetest.Message) string {
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

// to returns the messages sent to addr.
func to(msgs []queuetest.Message, addr string) []queuetest.Message {
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

// syncBuffer collects log output from many goroutines.
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

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func report(from, subject, text string) string {
	return fmt.Sprintf("From: Reporter <%s>\nTo: security@ex.test\nSubject: %s\nMessage-ID: <%d.%s>\nDate: Mon, 23 Nov 2026 09:00:00 +0000\n\n%s\n",
		from, subject, time.Now().UnixNano(), from, text)
}

func dialRaw(addr string) (*smtp.Client, error) { return smtp.Dial(addr) }

// sendRawSMTP speaks SMTP by hand so the DATA bytes reach the server exactly as
// given (dot-stuffing aside); replies come back as *smtp.SMTPError.
func sendRawSMTP(addr, from string, to []string, data []byte) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	expect := func(want int) error {
		c, msg, err := tp.ReadResponse(want)
		if err != nil {
			if c == 0 {
				return err
			}
			se := &smtp.SMTPError{Code: c, Message: msg}
			if f := strings.Fields(msg); len(f) > 0 {
				var a, b, cc int
				if n, _ := fmt.Sscanf(f[0], "%d.%d.%d", &a, &b, &cc); n == 3 {
					se.EnhancedCode = smtp.EnhancedCode{a, b, cc}
				}
			}
			return se
		}
		return nil
	}
	if err := expect(220); err != nil {
		return err
	}
	steps := []struct {
		cmd  string
		want int
	}{{"EHLO client.test", 250}, {"MAIL FROM:<" + from + ">", 250}}
	for _, r := range to {
		steps = append(steps, struct {
			cmd  string
			want int
		}{"RCPT TO:<" + r + ">", 250})
	}
	steps = append(steps, struct {
		cmd  string
		want int
	}{"DATA", 354})
	for _, st := range steps {
		if err := tp.PrintfLine("%s", st.cmd); err != nil {
			return err
		}
		if err := expect(st.want); err != nil {
			return err
		}
	}
	body := bytes.ReplaceAll(data, []byte("\r\n."), []byte("\r\n.."))
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		body = append(body, '\r', '\n')
	}
	if _, err := conn.Write(append(body, []byte(".\r\n")...)); err != nil {
		return err
	}
	if err := expect(250); err != nil {
		return err
	}
	tp.PrintfLine("QUIT")
	return nil
}

// configFile writes the harness configuration to a file, for CLI commands.
func (h *harness) configFile() string {
	h.t.Helper()
	p := filepath.Join(h.t.TempDir(), "embargo.toml")
	writeFile(h.t, p, h.toml)
	return p
}
