package senderauth

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"
)

// Resolver is every DNS lookup sender authentication makes (SPF, DKIM keys,
// DMARC policies). *net.Resolver satisfies it; tests give Static.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// The bounds of one message's lookups. The client waits for our reply to
// its final dot while we look (RFC 5321 §4.5.3.2.6 gives it 10 minutes,
// smtpd's write timeout less), so the whole of a message's DNS time is
// bounded; what does not answer in time is a temperror, which never
// authenticates.
const (
	// DefaultBudget is all the DNS time one message may take.
	DefaultBudget = 5 * time.Second
	// queryTimeout bounds one lookup, so that one slow name server leaves
	// time for the others.
	queryTimeout = 2 * time.Second
	// maxQueries bounds the lookups of one message: SPF's 10 DNS
	// mechanisms each with up to 10 MX or PTR names (RFC 7208 §4.6.4), 5
	// DKIM signatures, 2 DMARC policies, with room to spare.
	maxQueries = 150
)

// errBudget is a lookup refused because the message's budget is spent.
var errBudget = errors.New("senderauth: DNS budget for this message spent")

// budget is a Resolver bounded for one message: each lookup by
// queryTimeout and the message's context deadline, all of them by
// maxQueries. Every failure is a *net.DNSError (the SPF library and
// go-msgauth tell temporary from permanent failures by that type alone):
// not found stays not found, anything else is temporary.
type budget struct {
	r        Resolver
	perQuery time.Duration // queryTimeout unless a test says otherwise

	mu      sync.Mutex
	queries int
	spent   bool // a lookup ran out of time or count: a temperror somewhere
}

func (b *budget) begin(ctx context.Context, name string) (context.Context, context.CancelFunc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ctx.Err() != nil || b.queries >= maxQueries {
		b.spent = true
		return nil, nil, &net.DNSError{Err: errBudget.Error(), Name: name, IsTimeout: true, IsTemporary: true}
	}
	b.queries++
	c, cancel := context.WithTimeout(ctx, b.perQuery)
	return c, cancel, nil
}

// exhausted reports whether a lookup was refused or timed out.
func (b *budget) exhausted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent
}

// fail turns any lookup error into a *net.DNSError: not found as the
// resolver said, anything else temporary.
func (b *budget) fail(ctx context.Context, name string, err error) error {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return &net.DNSError{Err: de.Err, Name: name, IsNotFound: true}
	}
	timeout := ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (de != nil && de.IsTimeout)
	if timeout {
		b.mu.Lock()
		b.spent = true
		b.mu.Unlock()
	}
	msg := "lookup failed"
	if de != nil {
		msg = de.Err
	}
	return &net.DNSError{Err: msg, Name: name, IsTimeout: timeout, IsTemporary: true}
}

func (b *budget) LookupTXT(ctx context.Context, name string) ([]string, error) {
	c, cancel, err := b.begin(ctx, name)
	if err != nil {
		return nil, err
	}
	defer cancel()
	v, err := b.r.LookupTXT(c, name)
	if err != nil {
		return nil, b.fail(c, name, err)
	}
	return v, nil
}

func (b *budget) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	c, cancel, err := b.begin(ctx, name)
	if err != nil {
		return nil, err
	}
	defer cancel()
	v, err := b.r.LookupMX(c, name)
	if err != nil {
		return nil, b.fail(c, name, err)
	}
	return v, nil
}

func (b *budget) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	c, cancel, err := b.begin(ctx, host)
	if err != nil {
		return nil, err
	}
	defer cancel()
	v, err := b.r.LookupIPAddr(c, host)
	if err != nil {
		return nil, b.fail(c, host, err)
	}
	return v, nil
}

func (b *budget) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	c, cancel, err := b.begin(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer cancel()
	v, err := b.r.LookupAddr(c, addr)
	if err != nil {
		return nil, b.fail(c, addr, err)
	}
	return v, nil
}

// Static is a Resolver answering from fixed records, for tests and the
// drill: no network. Names are matched without case and without a final
// dot. A name in Slow waits for the context (a name server that never
// answers); a name in Fail answers a temporary failure.
type Static struct {
	TXT  map[string][]string
	MX   map[string][]*net.MX
	IP   map[string][]net.IPAddr
	PTR  map[string][]string
	Slow map[string]bool
	Fail map[string]bool

	mu      sync.Mutex
	Queries []string // every name asked, in order
}

func key(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// ask records the query and answers for Slow and Fail; ok false means the
// records decide.
func (s *Static) ask(ctx context.Context, name string) (bool, error) {
	k := key(name)
	s.mu.Lock()
	s.Queries = append(s.Queries, k)
	s.mu.Unlock()
	switch {
	case s.Slow[k]:
		<-ctx.Done()
		return true, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true}
	case s.Fail[k]:
		return true, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return false, nil
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (s *Static) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if done, err := s.ask(ctx, name); done {
		return nil, err
	}
	if v, ok := s.TXT[key(name)]; ok {
		return v, nil
	}
	return nil, notFound(name)
}

func (s *Static) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if done, err := s.ask(ctx, name); done {
		return nil, err
	}
	if v, ok := s.MX[key(name)]; ok {
		return v, nil
	}
	return nil, notFound(name)
}

func (s *Static) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if done, err := s.ask(ctx, host); done {
		return nil, err
	}
	if v, ok := s.IP[key(host)]; ok {
		return v, nil
	}
	return nil, notFound(host)
}

func (s *Static) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if done, err := s.ask(ctx, addr); done {
		return nil, err
	}
	if v, ok := s.PTR[key(addr)]; ok {
		return v, nil
	}
	return nil, notFound(addr)
}

// Asked is the names asked so far.
func (s *Static) Asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.Queries...)
}
