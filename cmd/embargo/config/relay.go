package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
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
