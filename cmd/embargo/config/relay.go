package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// RelayTarget is a parsed relay URL.
type RelayTarget struct {
	URL     string
	Maildir string // set for maildir:
}

// ParseRelayURL checks a relay URL: a known scheme, a host and port, and no
// credentials or other hosts over plain SMTP.
func ParseRelayURL(raw string) (RelayTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return RelayTarget{}, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch u.Scheme {
	case "maildir":
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return RelayTarget{}, fmt.Errorf("%q: a Maildir relay needs an absolute path, e.g. maildir:///var/lib/embargo/outbox", raw)
		}
		return RelayTarget{URL: raw, Maildir: u.Path}, nil
	case "smtp", "smtp+starttls", "smtps":
		if u.Hostname() == "" || u.Port() == "" {
			return RelayTarget{}, fmt.Errorf("%q needs a host and a port, e.g. smtp://127.0.0.1:25", raw)
		}
		if u.Scheme == "smtp" && u.User != nil {
			return RelayTarget{}, fmt.Errorf("%q: credentials over plain smtp:// would travel unencrypted; use smtp+starttls:// or smtps://", raw)
		}
		if u.Scheme == "smtp" && !IsLoopbackHost(u.Hostname()) {
			// docs/threat-model.md B6: embargo never sends over plaintext to another host.
			return RelayTarget{}, fmt.Errorf("%q: plain smtp:// is only for an MTA on this host (127.0.0.1, ::1, localhost); use smtp+starttls:// or smtps:// for %s", raw, u.Hostname())
		}
		return RelayTarget{URL: raw}, nil
	default:
		return RelayTarget{}, fmt.Errorf("%q: unknown scheme %q; use smtp://, smtp+starttls://, smtps:// or maildir://", raw, u.Scheme)
	}
}

// IsLoopbackHost reports whether h names this host: localhost or a loopback
// address.
func IsLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// RelayURL is where outbound mail goes: relay.url, or the Maildir
// <data_dir>/outbox.
func (c *Config) RelayURL() string {
	if c.Relay.URL == "" {
		return "maildir://" + filepath.Join(c.DataDir, "outbox")
	}
	return c.Relay.URL
}

// RelayName is RelayURL without credentials, for logs.
func (c *Config) RelayName() string {
	u := c.RelayURL()
	if t, err := ParseRelayURL(u); err == nil && t.Maildir == "" {
		if i := strings.Index(u, "@"); i >= 0 {
			scheme, _, _ := strings.Cut(u, "://")
			return scheme + "://" + u[i+1:]
		}
	}
	return u
}

// RelayHost is the host of an SMTP relay, without credentials or port; ""
// for a Maildir.
func (c *Config) RelayHost() string {
	t, err := ParseRelayURL(c.RelayURL())
	if err != nil || t.Maildir != "" {
		return ""
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// Helo is the name embargo gives itself to relays: relay.helo or the domain.
func (c *Config) Helo() string {
	if c.Relay.Helo != "" {
		return c.Relay.Helo
	}
	return c.Domain
}

// validateRelayLoop refuses a relay URL that leads back to one of our own
// listeners (docs/threat-model.md B9): every copy would come back to us, or
// be refused by ourselves, and stay queued until it expires. Decided from
// the file alone, without DNS: the same port, and the same host, or a
// listener on a wildcard address with the relay on a loopback address.
// Delivery catches what this cannot see (a relay that forwards back to us)
// by the instance token in our EHLO reply (smtpd.InstanceToken).
func (c *Config) validateRelayLoop(p *problems) {
	t, err := ParseRelayURL(c.Relay.URL)
	if c.Relay.URL == "" || err != nil || t.Maildir != "" {
		return
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return
	}
	host, port := u.Hostname(), u.Port()
	listeners := []struct{ key, addr string }{{"smtp.listen", c.SMTP.Listen}}
	if network, addr := c.LMTP.Addr(); c.LMTP.Listen != "" && network == "tcp" {
		listeners = append(listeners, struct{ key, addr string }{"lmtp.listen", addr})
	}
	for _, l := range listeners {
		lhost, lport, err := net.SplitHostPort(l.addr)
		if err != nil || !samePort(lport, port) || !sameHost(lhost, host) {
			continue
		}
		p.add("relay.url %q leads back to embargo's own listener (%s = %q): mail would loop; point relay.url at the MTA that sends mail out, on another port", c.RelayName(), l.key, l.addr)
	}
}

// samePort compares two ports as numbers ("025" is 25); port 0 (any free
// port, tests) never matches.
func samePort(a, b string) bool {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	return errA == nil && errB == nil && x == y && x != 0
}

// sameHost reports whether a relay host reaches a listener bound to
// listen: the same name or address, any loopback name when the listener
// takes a wildcard address (0.0.0.0, ::, or none), and localhost for a
// listener on a loopback address.
func sameHost(listen, relay string) bool {
	if strings.EqualFold(listen, relay) {
		return true
	}
	if ip := net.ParseIP(listen); listen == "" || (ip != nil && ip.IsUnspecified()) {
		return IsLoopbackHost(relay)
	}
	lip, rip := net.ParseIP(listen), net.ParseIP(relay)
	if lip != nil && rip != nil {
		return lip.Equal(rip)
	}
	// localhost resolves to 127.0.0.1 or ::1 (RFC 6761 §6.3).
	return IsLoopbackHost(listen) && IsLoopbackHost(relay) && (lip == nil || rip == nil)
}
