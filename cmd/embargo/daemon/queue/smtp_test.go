package queue

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sessionServer is a go-smtp server that counts sessions and messages, and
// can drop its connections or answer 421 to the next MAIL.
type sessionServer struct {
	srv      *smtp.Server
	addr     string
	sessions atomic.Int32
	msgs     atomic.Int32
	next421  atomic.Bool
	mu       sync.Mutex
	conns    []*smtp.Conn
}

func newSessionServer(t *testing.T) *sessionServer {
	s := &sessionServer{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.sessions.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		return &countSession{s: s}, nil
	}))
	s.srv.Domain = "sink.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	s.addr = l.Addr().String()
	return s
}

// dropAll closes every connection, as a relay restarting or timing out does.
func (s *sessionServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Conn().Close()
	}
	s.conns = nil
}

type countSession struct{ s *sessionServer }

func (c *countSession) Reset() {}
func (c *countSession) Logout() error {
	return nil
}
func (c *countSession) Mail(string, *smtp.MailOptions) error {
	if c.s.next421.CompareAndSwap(true, false) {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "closing"}
	}
	return nil
}
func (c *countSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (c *countSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	c.s.msgs.Add(1)
	return nil
}

func testRelay(t *testing.T, addr string) *smtpRelay {
	t.Helper()
	r, err := NewRelay("smtp://"+addr, RelayOptions{HeloName: "embargo.test", CommandTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r.(*smtpRelay)
}

// TestSMTPRelayReusesConnections: consecutive messages share one session,
// up to maxUses messages each; an idle connection is closed after idleTime.
func TestSMTPRelayReusesConnections(t *testing.T) {
	s := newSessionServer(t)
	r := testRelay(t, s.addr)
	r.maxUses = 4
	for i := range 10 {
		m := testMsg(i)
		if err := r.Send(t.Context(), m.From, m.To, m.Data); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n, m := s.sessions.Load(), s.msgs.Load(); n != 3 || m != 10 {
		t.Errorf("%d sessions for %d messages, want 3 for 10 (4 a connection)", n, m)
	}

	r.idleTime = 20 * time.Millisecond
	m := testMsg(11)
	if err := r.Send(t.Context(), m.From, m.To, m.Data); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the idle connection closed", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.idle) == 0
	})
	before := s.sessions.Load()
	if err := r.Send(t.Context(), m.From, m.To, m.Data); err != nil {
		t.Fatal(err)
	}
	if s.sessions.Load() != before+1 {
		t.Error("a connection idle past idleTime was used again")
	}
}

// TestSMTPRelayStaleConnection: a cached connection the relay dropped, or
// that gets 421 to MAIL, is replaced by a fresh one and the message is sent
// once, not failed and not doubled.
func TestSMTPRelayStaleConnection(t *testing.T) {
	s := newSessionServer(t)
	r := testRelay(t, s.addr)
	m := testMsg(1)
	send := func() {
		t.Helper()
		if err := r.Send(context.Background(), m.From, m.To, m.Data); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	send()
	s.dropAll()
	time.Sleep(10 * time.Millisecond)
	send()
	s.next421.Store(true)
	send()
	if n, msgs := s.sessions.Load(), s.msgs.Load(); n != 3 || msgs != 3 {
		t.Errorf("%d sessions, %d messages; want 3 and 3", n, msgs)
	}
	// A fresh connection that gets 421 is not retried: the relay means it.
	r.CloseIdle()
	s.next421.Store(true)
	if err := r.Send(context.Background(), m.From, m.To, m.Data); err == nil || IsPermanent(err) {
		t.Errorf("421 on a fresh connection: %v, want a temporary error", err)
	}
	if msgs := s.msgs.Load(); msgs != 3 {
		t.Errorf("%d messages, want 3", msgs)
	}
}
