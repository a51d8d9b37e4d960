package pipeline

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// TLSMode says how a connection is secured.
type TLSMode int

const (
	NoTLS       TLSMode = iota // plain SMTP: loopback only (a local MTA)
	StartTLS                   // STARTTLS required (RFC 3207), never a fallback to plaintext
	ImplicitTLS                // TLS from the first byte (RFC 8314)
)

// Config says where and how to connect. ParseURL builds one from the
// relay URL of the configuration.
type Config struct {
	Addr       string // host:port
	ServerName string // the name verified against the relay's certificate
	TLS        TLSMode
	// User and Password, when User is set, authenticate with AUTH PLAIN
	// (RFC 4954), only ever over TLS.
	User, Password string
	// HeloName is the name given in EHLO. Default: the host name.
	HeloName string
	// Instance is the instance token our own listeners announce in the
	// first line of their EHLO reply (smtpd.InstanceToken). A relay whose
	// EHLO reply carries it is our own listener, and Dial fails with
	// ErrLoop (docs/threat-model.md B9). "" checks nothing.
	Instance string
	// RootCAs verifies the relay's certificate; nil means the system roots.
	// Verification itself is never turned off (docs/threat-model.md B6).
	RootCAs *x509.CertPool
	// DialTimeout bounds the TCP connect, the TLS handshake and the
	// greeting. Default 30 s.
	DialTimeout time.Duration
	// CommandTimeout bounds the wait for each reply to a command;
	// DataTimeout the wait for the reply to the final dot and each write.
	// Defaults 5 and 10 minutes (RFC 5321 §4.5.3.2).
	CommandTimeout, DataTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.HeloName == "" {
		c.HeloName, _ = os.Hostname()
		if c.HeloName == "" || strings.ContainsAny(c.HeloName, " \r\n") {
			c.HeloName = "localhost"
		}
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 30 * time.Second
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 5 * time.Minute
	}
	if c.DataTimeout <= 0 {
		c.DataTimeout = 10 * time.Minute
	}
	return c
}

func (c Config) tlsConfig() *tls.Config {
	return &tls.Config{ServerName: c.ServerName, RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12}
}

// ErrLoop is Dial's error when the relay turns out to be this process's own
// listener (Config.Instance): whatever it took would come back to us.
var ErrLoop = errors.New("the relay is this embargo's own listener: mail would loop")

// ErrNotSMTP is ParseURL's answer for a relay URL of another scheme
// (maildir://): the fan-out then goes through the queue's relay.
var ErrNotSMTP = errors.New("pipeline: not an SMTP relay URL")

// ParseURL reads a relay URL; the queue's NewRelay reads its SMTP schemes
// with it too, so that one [relay] url serves both:
//
//	smtp://host:port                   plain SMTP, only to a loopback address
//	smtp+starttls://user:pass@host:587 STARTTLS required, AUTH PLAIN after it
//	smtps://user:pass@host:465         implicit TLS, otherwise the same
//
// Any other scheme gives ErrNotSMTP. Error messages never contain the
// password.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, errors.New("pipeline: relay URL does not parse") // url's error repeats the password
	}
	switch u.Scheme {
	case "smtp", "smtp+starttls", "smtps":
	default:
		return Config{}, fmt.Errorf("%w: scheme %q", ErrNotSMTP, u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return Config{}, fmt.Errorf("pipeline: relay URL %s: path, query or fragment not allowed", u.Redacted())
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Config{}, fmt.Errorf("pipeline: relay URL %s: host missing", u.Redacted())
	}
	c := Config{ServerName: host}
	switch u.Scheme {
	case "smtp":
		if u.User != nil {
			return Config{}, fmt.Errorf("pipeline: relay URL %s: credentials need smtp+starttls:// or smtps://", u.Redacted())
		}
		if !isLoopback(host) {
			// docs/threat-model.md B6: never plaintext across a network.
			return Config{}, fmt.Errorf("pipeline: relay URL %s: smtp:// is for a local MTA on loopback; use smtp+starttls:// or smtps://", u.Redacted())
		}
		port = cmpOr(port, "25")
	case "smtp+starttls":
		c.TLS, port = StartTLS, cmpOr(port, "587")
	case "smtps":
		c.TLS, port = ImplicitTLS, cmpOr(port, "465")
	}
	c.Addr = net.JoinHostPort(host, port)
	if u.User != nil {
		c.User = u.User.Username()
		c.Password, _ = u.User.Password()
		if c.User == "" {
			return Config{}, fmt.Errorf("pipeline: relay URL %s: empty user name", u.Redacted())
		}
	}
	return c, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
