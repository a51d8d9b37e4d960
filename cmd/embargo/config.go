package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// defaultConfig is the development default that `embargo serve` runs with no
// flags: loopback only, a Maildir instead of a relay, one demo committee member.
//
//go:embed default.toml
var defaultConfig []byte

// Config is the whole configuration file. Unknown keys are errors (DESIGN.md §5).
type Config struct {
	Domain       string `toml:"domain"`
	DataDir      string `toml:"data_dir"`
	KeysDir      string `toml:"keys_dir"`
	TemplatesDir string `toml:"templates_dir"`
	LogLevel     string `toml:"log_level"`
	// KeyPassphraseFile holds the passphrase that protects the list keys'
	// secret parts; the environment variable EMBARGO_KEY_PASSPHRASE is read
	// when it is empty. No passphrase means the keys rest unprotected (0600).
	KeyPassphraseFile string `toml:"key_passphrase_file"`
	// Holidays are dates (YYYY-MM-DD, UTC) that are no working day and no
	// disclosure slot.
	Holidays []string `toml:"holidays"`

	SMTP   SMTPConfig            `toml:"smtp"`
	Relay  RelayConfig           `toml:"relay"`
	Intake IntakeConfig          `toml:"intake"`
	Lists  map[string]ListConfig `toml:"lists"`
	OnCall OnCallConfig          `toml:"oncall"` // tick.go
	LMTP   LMTPConfig            `toml:"lmtp"`   // lmtp.go
	DKIM   DKIMConfig            `toml:"dkim"`   // dkim.go
	HTTP   HTTPConfig            `toml:"http"`   // web.go

	Members []MemberConfig `toml:"members"`

	// Channels are outside lists (oss-security…) that get their own copy of
	// every advisory at T (process.md §7.4).
	Channels []ChannelConfig `toml:"channels"`

	source string // file name, or "embedded default"
}

// SMTPConfig sets the inbound listener. Zero values take Postfix-like defaults
// (docs/threats.md §4).
type SMTPConfig struct {
	Listen                 string `toml:"listen"`
	MaxMessageBytes        int64  `toml:"max_message_bytes"`
	MaxRecipients          int    `toml:"max_recipients"`
	MaxLineLength          int    `toml:"max_line_length"`
	ReadTimeoutMinutes     int    `toml:"read_timeout_minutes"`
	WriteTimeoutMinutes    int    `toml:"write_timeout_minutes"`
	MaxConnections         int    `toml:"max_connections"`
	MaxConnectionsPerIP    int    `toml:"max_connections_per_ip"`
	SessionLifetimeMinutes int    `toml:"session_lifetime_minutes"`
	MaxErrors              int    `toml:"max_errors"`
	// TLSCert and TLSKey are PEM files; set, they enable STARTTLS (tls.go).
	// SIGHUP reloads them.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
}

// RelayConfig says where outbound mail goes.
type RelayConfig struct {
	// URL is smtp://host:port, smtp+starttls://user:pass@host:587,
	// smtps://user:pass@host:465 or maildir:///path. Empty means a Maildir in
	// <data_dir>/outbox.
	URL                string `toml:"url"`
	QueueLifetimeHours int    `toml:"queue_lifetime_hours"`
	Helo               string `toml:"helo"`
}

// IntakeConfig tunes security@.
type IntakeConfig struct {
	// AcksPerSenderPerDay caps acknowledgements to one address (threats.md B8:
	// forged reports must not turn embargo into a spam cannon). Default 1.
	AcksPerSenderPerDay int `toml:"acks_per_sender_per_day"`
}

// ListConfig is one of the three lists.
type ListConfig struct {
	Address    string `toml:"address"`
	Encryption string `toml:"encryption"` // "optional" (default for security) or "required"
	// OuterSubject is the Subject relays see on encrypted mail; the real one
	// travels inside the encryption (threats.md D7).
	OuterSubject string `toml:"outer_subject"`
}

// ChannelConfig is one outside list.
type ChannelConfig struct {
	Address    string `toml:"address"`
	SubjectTag string `toml:"subject_tag"` // default "[<domain>]"
}

// MemberConfig is a person and their pinned key.
type MemberConfig struct {
	Email       string   `toml:"email"`
	Name        string   `toml:"name"`
	Roles       []string `toml:"roles"`
	Fingerprint string   `toml:"fingerprint"`
}

// The roles a member can hold.
var knownRoles = []string{"src", "associate", "release-manager", "distributor"}

// The lists embargo runs.
var knownLists = []string{"security", "distributors", "announce"}

// ConfigError lists every problem found, so an operator fixes them in one pass.
type ConfigError struct {
	Source   string
	Problems []string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.Source, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// LoadConfig reads a TOML file; with path "" it reads the embedded default.
func LoadConfig(path string) (*Config, error) {
	data, source := defaultConfig, "embedded default"
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		source = path
	}
	return ParseConfig(data, source)
}

// ParseConfig decodes and validates a configuration.
func ParseConfig(data []byte, source string) (*Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, &ConfigError{Source: source, Problems: tomlProblems(err)}
	}
	c.source = source
	c.applyDefaults()
	if probs := c.validate(); len(probs) > 0 {
		return nil, &ConfigError{Source: source, Problems: probs}
	}
	return &c, nil
}

func tomlProblems(err error) []string {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var out []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			out = append(out, fmt.Sprintf("line %d: unknown key %q: remove it or check its spelling against contrib/embargo.toml", row, strings.Join(e.Key(), ".")))
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return []string{fmt.Sprintf("line %d, column %d: %s", row, col, de.Error())}
	}
	return []string{err.Error()}
}

func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./embargo-data"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	s := &c.SMTP
	if s.Listen == "" {
		s.Listen = "127.0.0.1:2525"
	}
	if s.MaxMessageBytes == 0 {
		s.MaxMessageBytes = 10 << 20
	}
	if s.MaxRecipients == 0 {
		s.MaxRecipients = 10
	}
	if s.MaxLineLength == 0 {
		s.MaxLineLength = 2000
	}
	if s.ReadTimeoutMinutes == 0 {
		s.ReadTimeoutMinutes = 5
	}
	if s.WriteTimeoutMinutes == 0 {
		s.WriteTimeoutMinutes = 5
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = 100
	}
	if s.MaxConnectionsPerIP == 0 {
		s.MaxConnectionsPerIP = 10
	}
	if s.SessionLifetimeMinutes == 0 {
		s.SessionLifetimeMinutes = 10
	}
	if s.MaxErrors == 0 {
		s.MaxErrors = 20
	}
	if c.Relay.QueueLifetimeHours == 0 {
		c.Relay.QueueLifetimeHours = 5 * 24
	}
	if c.Intake.AcksPerSenderPerDay == 0 {
		c.Intake.AcksPerSenderPerDay = 1
	}
	if c.Lists == nil {
		c.Lists = map[string]ListConfig{}
	}
	for _, name := range knownLists {
		l := c.Lists[name]
		if l.Address == "" && c.Domain != "" {
			local := name
			if name == "announce" {
				local = "announce"
			}
			l.Address = local + "@" + c.Domain
		}
		l.Address = strings.ToLower(l.Address)
		if l.OuterSubject == "" {
			l.OuterSubject = "Encrypted message"
		}
		if l.Encryption == "" {
			l.Encryption = "optional"
			if name == "distributors" {
				l.Encryption = "required" // the openwall model: never plaintext (process.md §8)
			}
		}
		c.Lists[name] = l
	}
	for i := range c.Members {
		c.Members[i].Email = strings.ToLower(strings.TrimSpace(c.Members[i].Email))
		c.Members[i].Fingerprint = strings.ToUpper(strings.ReplaceAll(c.Members[i].Fingerprint, " ", ""))
	}
}

var (
	ldhDomain   = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
	dotAtom     = regexp.MustCompile(`^[A-Za-z0-9!#$&'*+/=?^_` + "`" + `{|}~-]+(\.[A-Za-z0-9!#$&'*+/=?^_` + "`" + `{|}~-]+)*$`)
	fingerprint = regexp.MustCompile(`^([0-9A-F]{40}|[0-9A-F]{64})$`)
)

// validAddress is the strict form of threats.md B3: one @, a dot-atom local part,
// an LDH domain.
func validAddress(a string) bool {
	local, domain, ok := strings.Cut(a, "@")
	return ok && dotAtom.MatchString(local) && ldhDomain.MatchString(domain) && !strings.Contains(local, "%")
}

func (c *Config) validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if c.Domain == "" {
		add(`domain is missing: set domain = "example.org" (the domain of the list addresses)`)
	} else if !ldhDomain.MatchString(c.Domain) {
		add("domain %q is not a valid domain name: use letters, digits, hyphens and dots, e.g. \"example.org\"", c.Domain)
	}
	if _, _, err := net.SplitHostPort(c.SMTP.Listen); err != nil {
		add("smtp.listen %q is not HOST:PORT, e.g. \"0.0.0.0:25\"", c.SMTP.Listen)
	}
	if c.SMTP.MaxMessageBytes < 1024 {
		add("smtp.max_message_bytes %d is too small: use at least 1024 (default 10485760)", c.SMTP.MaxMessageBytes)
	}
	if c.SMTP.MaxRecipients < 1 || c.SMTP.MaxRecipients > 1000 {
		add("smtp.max_recipients %d is out of range 1–1000 (default 10)", c.SMTP.MaxRecipients)
	}
	if c.Relay.URL != "" {
		if _, err := parseRelayURL(c.Relay.URL); err != nil {
			add("relay.url: %v", err)
		}
	}
	for name := range c.Lists {
		if !slices.Contains(knownLists, name) {
			add("[lists.%s]: unknown list; the lists are %s", name, strings.Join(knownLists, ", "))
		}
	}
	seen := map[string]string{}
	for _, name := range knownLists {
		l := c.Lists[name]
		if !validAddress(l.Address) {
			add("lists.%s.address %q is not a plain address like \"%s@example.org\"", name, l.Address, name)
		} else if other, dup := seen[l.Address]; dup {
			add("lists.%s.address %q is also the address of list %s: each list needs its own", name, l.Address, other)
		}
		if strings.Contains(strings.SplitN(l.Address, "@", 2)[0], "+") {
			add("lists.%s.address %q must not contain '+': embargo uses sub-addresses like %s+subscribe@", name, l.Address, name)
		}
		seen[l.Address] = name
		if strings.ContainsAny(l.OuterSubject, "\r\n") || len(l.OuterSubject) > 200 {
			add("lists.%s.outer_subject must be one line of at most 200 characters", name)
		}
		if l.Encryption != "optional" && l.Encryption != "required" {
			add("lists.%s.encryption %q must be \"optional\" or \"required\"", name, l.Encryption)
		}
	}
	if c.Lists["distributors"].Encryption != "required" {
		add(`lists.distributors.encryption must be "required": embargoed notices never leave in plaintext`)
	}
	for i, ch := range c.Channels {
		if !validAddress(strings.ToLower(ch.Address)) {
			add("channels[%d]: address %q is not a plain address like \"oss-security@lists.openwall.com\"", i, ch.Address)
		}
		if strings.ContainsAny(ch.SubjectTag, "\r\n") {
			add("channels[%d]: subject_tag must be one line", i)
		}
	}
	for _, h := range c.Holidays {
		if _, err := time.Parse(time.DateOnly, h); err != nil {
			add("holidays: %q is not a date like \"2026-12-25\"", h)
		}
	}
	members := map[string]bool{}
	for i, m := range c.Members {
		where := fmt.Sprintf("members[%d]", i)
		if m.Email != "" {
			where = fmt.Sprintf("member %s", m.Email)
		}
		if !validAddress(m.Email) {
			add("%s: email %q is not a plain address like \"alice@example.org\"", where, m.Email)
		}
		if members[m.Email] {
			add("%s: listed twice; merge the two [[members]] entries and list all roles in one", where)
		}
		members[m.Email] = true
		if len(m.Roles) == 0 {
			add("%s: roles is empty; give one or more of %s", where, strings.Join(knownRoles, ", "))
		}
		for _, r := range m.Roles {
			if !slices.Contains(knownRoles, r) {
				add("%s: unknown role %q; the roles are %s", where, r, strings.Join(knownRoles, ", "))
			}
		}
		if m.Fingerprint != "" && !fingerprint.MatchString(m.Fingerprint) {
			add("%s: fingerprint %q must be the full primary key fingerprint, 40 hex digits (v4) or 64 (v6): see `gpg --with-colons --fingerprint %s`", where, m.Fingerprint, m.Email)
		}
	}
	p = append(p, c.validateTLS()...)
	p = append(p, c.validateOnCall()...)
	p = append(p, c.validateLMTP()...)
	p = append(p, c.validateDKIM()...)
	p = append(p, c.validateHTTP()...)
	return p
}

// Resolve turns relative directories into absolute ones after flag overrides.
func (c *Config) Resolve() error {
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if c.KeysDir != "" {
		if c.KeysDir, err = filepath.Abs(c.KeysDir); err != nil {
			return err
		}
	}
	return nil
}

// relayTarget is a parsed relay URL.
type relayTarget struct {
	URL     string
	Maildir string // set for maildir:
}

func parseRelayURL(raw string) (relayTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return relayTarget{}, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch u.Scheme {
	case "maildir":
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return relayTarget{}, fmt.Errorf("%q: a Maildir relay needs an absolute path, e.g. maildir:///var/lib/embargo/outbox", raw)
		}
		return relayTarget{URL: raw, Maildir: u.Path}, nil
	case "smtp", "smtp+starttls", "smtps":
		if u.Hostname() == "" || u.Port() == "" {
			return relayTarget{}, fmt.Errorf("%q needs a host and a port, e.g. smtp://127.0.0.1:25", raw)
		}
		if u.Scheme == "smtp" && u.User != nil {
			return relayTarget{}, fmt.Errorf("%q: credentials over plain smtp:// would travel unencrypted; use smtp+starttls:// or smtps://", raw)
		}
		if u.Scheme == "smtp" && !isLoopbackHost(u.Hostname()) {
			// threats.md B6: embargo never sends over plaintext to another host.
			return relayTarget{}, fmt.Errorf("%q: plain smtp:// is only for an MTA on this host (127.0.0.1, ::1, localhost); use smtp+starttls:// or smtps:// for %s", raw, u.Hostname())
		}
		return relayTarget{URL: raw}, nil
	default:
		return relayTarget{}, fmt.Errorf("%q: unknown scheme %q; use smtp://, smtp+starttls://, smtps:// or maildir://", raw, u.Scheme)
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// HolidayDates returns the holidays as UTC midnights.
func (c *Config) HolidayDates() []time.Time {
	var out []time.Time
	for _, h := range c.Holidays {
		if t, err := time.Parse(time.DateOnly, h); err == nil {
			out = append(out, t.UTC())
		}
	}
	return out
}

// Member roles.
func (m MemberConfig) Has(role string) bool { return slices.Contains(m.Roles, role) }
