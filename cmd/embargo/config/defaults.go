package config

import (
	"strings"
	"time"

	"github.com/embargo-project/embargo/smtpd"
)

// The defaults that are not smtpd's.
const (
	DefaultDataDir            = "./embargo-data"
	DefaultSMTPListen         = "127.0.0.1:2525"
	DefaultQueueLifetimeHours = 5 * 24
	DefaultOuterSubject       = "Encrypted message"
)

// applyDefaults fills the zero values. The SMTP limits are smtpd's own
// defaults, so that the file and the listener cannot disagree.
func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	c.applyRecordDefaults()
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	s := &c.SMTP
	if s.Listen == "" {
		s.Listen = DefaultSMTPListen
	}
	orDefault(&s.MaxMessageBytes, smtpd.DefaultMaxMessageBytes)
	orDefault(&s.MaxRecipients, smtpd.DefaultMaxRecipients)
	orDefault(&s.MaxLineLength, smtpd.DefaultMaxLineLength)
	orDefault(&s.ReadTimeoutMinutes, int(smtpd.DefaultReadTimeout/time.Minute))
	orDefault(&s.WriteTimeoutMinutes, int(smtpd.DefaultWriteTimeout/time.Minute))
	orDefault(&s.MaxConnections, smtpd.DefaultMaxConnections)
	orDefault(&s.MaxConnectionsPerIP, smtpd.DefaultMaxConnectionsPerIP)
	orDefault(&s.SessionLifetimeMinutes, int(smtpd.DefaultSessionLifetime/time.Minute))
	orDefault(&s.MaxErrors, smtpd.DefaultMaxErrors)
	orDefault(&s.MaxInflightBytes, smtpd.DefaultInflightBytes(s.MaxMessageBytes))
	orDefault(&c.Relay.QueueLifetimeHours, DefaultQueueLifetimeHours)
	orDefault(&c.Intake.AcksPerSenderPerDay, 1)
	orDefault(&c.Governance.Quorum, DefaultQuorum)
	orDefault(&c.Governance.LazyConsensusDays, DefaultLazyConsensusDays)
	if c.Lists == nil {
		c.Lists = map[string]List{}
	}
	for _, name := range ListNames() {
		l := c.Lists[name]
		if l.Address == "" && c.Domain != "" {
			l.Address = name + "@" + c.Domain
		}
		l.Address = strings.ToLower(l.Address)
		if l.OuterSubject == "" {
			l.OuterSubject = DefaultOuterSubject
		}
		if l.Encryption == "" {
			l.Encryption = "optional"
			if name == Distributors {
				l.Encryption = "required" // the openwall model: never plaintext (docs/process.md §8)
			}
		}
		c.Lists[name] = l
	}
	for i := range c.Members {
		c.Members[i].Email = strings.ToLower(strings.TrimSpace(c.Members[i].Email))
		c.Members[i].Fingerprint = strings.ToUpper(strings.ReplaceAll(c.Members[i].Fingerprint, " ", ""))
	}
	for i, a := range c.OnCall.Rotation {
		c.OnCall.Rotation[i] = strings.ToLower(strings.TrimSpace(a))
	}
}

// applyRecordDefaults names the project and fills the record keys from it
// (record.Project.WithDefaults holds the rules).
func (c *Config) applyRecordDefaults() {
	p := c.RecordProject().WithDefaults()
	c.Project = p.Name
	c.CVE.Vendor, c.CVE.Product = p.Vendor, p.Product
	c.OSV.IDPrefix = p.IDPrefix
}

func orDefault[T int | int64](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// ServerOptions are the listener's limits as smtpd takes them; the caller
// adds the domain, TLS and the LMTP switch.
func (s SMTP) ServerOptions() smtpd.Options {
	rate := s.MinDataRate()
	if rate == 0 {
		rate = -1 // smtpd's "off"; its zero is the default
	}
	return smtpd.Options{
		MaxMessageBytes:     s.MaxMessageBytes,
		MaxRecipients:       s.MaxRecipients,
		MaxLineLength:       s.MaxLineLength,
		ReadTimeout:         time.Duration(s.ReadTimeoutMinutes) * time.Minute,
		WriteTimeout:        time.Duration(s.WriteTimeoutMinutes) * time.Minute,
		MaxConnections:      s.MaxConnections,
		MaxConnectionsPerIP: s.MaxConnectionsPerIP,
		SessionLifetime:     time.Duration(s.SessionLifetimeMinutes) * time.Minute,
		MaxErrors:           s.MaxErrors,
		MinDataRate:         rate,
		MaxInflightBytes:    s.MaxInflightBytes,
	}
}
