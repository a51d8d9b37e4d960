// Package config is embargo's configuration: its types, the defaults (with
// the embedded development default that `embargo serve` runs with no flags),
// decoding with go-toml/v2 (unknown keys are errors that name their line),
// validation, and what `embargo check` reports.
//
// It holds no global state: Load returns a fresh *Config each time, so that
// a running daemon can read the file again and swap what it uses.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/embargo-project/embargo/smtpd"
)

// defaultTOML is the development default: loopback only, a Maildir instead
// of a relay, one demo committee member.
//
//go:embed default.toml
var defaultTOML []byte

// EmbeddedSource is the Source of the configuration Load reads without a path.
const EmbeddedSource = "embedded default"

// Config is the whole configuration file. Unknown keys are errors
// (docs/design.md §5).
type Config struct {
	Domain string `toml:"domain"`
	// Project is the project's name in every text: the advisories, their
	// pages and feeds, the records, the mail's display names ("Kubernetes").
	// Default: the domain.
	Project      string `toml:"project"`
	DataDir      string `toml:"data_dir"`
	KeysDir      string `toml:"keys_dir"`
	TemplatesDir string `toml:"templates_dir"`
	LogLevel     string `toml:"log_level"`
	// KeyPassphraseFile holds the passphrase that protects the list keys'
	// secret parts; the environment variable EMBARGO_KEY_PASSPHRASE is read
	// when it is empty. No passphrase means the keys rest unprotected (0600).
	KeyPassphraseFile string `toml:"key_passphrase_file"`
	// Holidays are days (UTC) that are no working day and no disclosure slot.
	Holidays []Date `toml:"holidays"`

	SMTP   SMTP            `toml:"smtp"`
	Relay  Relay           `toml:"relay"`
	Intake Intake          `toml:"intake"`
	Lists  map[string]List `toml:"lists"`
	OnCall OnCall          `toml:"oncall"`
	LMTP   LMTP            `toml:"lmtp"`
	DKIM   DKIM            `toml:"dkim"`
	HTTP   HTTP            `toml:"http"`
	CVE    CVE             `toml:"cve"`
	OSV    OSV             `toml:"osv"`

	Governance Governance `toml:"governance"`
	Commands   Commands   `toml:"commands"`

	Members []Member `toml:"members"`

	// Channels are outside lists (oss-security…) that get their own copy of
	// every advisory at T (docs/process.md §7.4).
	Channels []Channel `toml:"channels"`

	// Source is the file name, or EmbeddedSource.
	Source string `toml:"-"`
}

// SMTP sets the inbound listener. Zero values take smtpd's defaults, which
// follow Postfix's (docs/threat-model.md §4).
type SMTP struct {
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
	// MinFreeBytes is the free space the file system of data_dir keeps in
	// reserve: below it, or below 1.5 × the SIZE= a client announces, MAIL
	// is answered 452 4.3.1 over SMTP and LMTP (Postfix's queue_minfree).
	// Unset: smtpd.DefaultMinFreeBytes (64 MiB); 0: no check.
	MinFreeBytes *int64 `toml:"min_free_bytes"`
	// MaxInflightBytes caps the message bytes all SMTP and LMTP sessions
	// hold in memory at once (docs/threat-model.md C1): beyond it, a SIZE=
	// at MAIL that does not fit and a message that outgrows what is left get
	// 452 4.3.1 and the client retries later. At least max_message_bytes.
	// Unset (or 0): smtpd.DefaultInflightBytes, the larger of 48 MiB and 4 ×
	// max_message_bytes; there is no "off", since without it the sessions
	// together can take the daemon past its memory.
	MaxInflightBytes int64 `toml:"max_inflight_bytes"`
	// MinDataRateBytes is the least average rate, in bytes per second, of a
	// DATA or BDAT transfer after its first 10 seconds; below it the client
	// gets 421 4.4.2 and the connection closes, over SMTP and LMTP
	// (docs/threat-model.md B7; Postfix's smtpd_min_data_rate). Unset:
	// smtpd.DefaultMinDataRate (500); 0: no minimum.
	MinDataRateBytes *int64 `toml:"min_data_rate"`
	// TLSCert and TLSKey are PEM files; set, they enable STARTTLS. SIGHUP
	// reloads them.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
}

// Relay says where outbound mail goes.
type Relay struct {
	// URL is smtp://host:port, smtp+starttls://user:pass@host:587,
	// smtps://user:pass@host:465 or maildir:///path. Empty means a Maildir in
	// <data_dir>/outbox.
	URL                string `toml:"url"`
	QueueLifetimeHours int    `toml:"queue_lifetime_hours"`
	Helo               string `toml:"helo"`
}

// Intake tunes security@.
type Intake struct {
	// AcksPerSenderPerDay caps acknowledgements to one address
	// (docs/threat-model.md B8: forged reports must not turn embargo into a
	// spam cannon). Default 1.
	AcksPerSenderPerDay int `toml:"acks_per_sender_per_day"`
	// AcksPerDay caps acknowledgements to all addresses together in 24
	// hours (docs/threat-model.md B8): a flood forging a new sender for
	// each report passes the per-address limit with every one. Beyond it a
	// report is still taken and copied to the committee; only the
	// acknowledgement is not sent, and the SRC is told once. Unset:
	// DefaultAcksPerDay; 0: no cap.
	AcksPerDay *int `toml:"acks_per_day"`
	// TrustedAuthservIDs are the authserv-ids (RFC 8601 §2.2) of the MTA
	// in front of embargo whose Authentication-Results fields are believed:
	// a reporter key arriving after the report is pinned by itself only
	// from mail whose From domain that MTA found DKIM-, SPF- or
	// DMARC-aligned (docs/threat-model.md D5). That MTA must remove such
	// fields bearing its own authserv-id from the mail it receives (RFC
	// 8601 §5). Default none: nothing is believed.
	TrustedAuthservIDs []string `toml:"trusted_authserv_ids"`
	// Verify is who authenticates senders for embargo: "off" (the
	// default: only a trusted MTA's Authentication-Results, above) or
	// "own", where embargo is the MX itself: at arrival on the SMTP
	// listener it checks DKIM (RFC 6376), SPF (RFC 7208) for the client's
	// address and DMARC (RFC 7489) itself, and a DMARC pass or an aligned
	// DKIM or SPF pass counts as a trusted MTA's would
	// (cmd/embargo/daemon/senderauth). Never over LMTP, which has no
	// client address: the MTA in front checks there.
	Verify string `toml:"verify"`
	// AuthservID names embargo's own results (RFC 8601 §2.2) in the
	// Authentication-Results field it adds to the archived message; fields
	// claiming it are removed from incoming mail (RFC 8601 §5). Default:
	// the domain. Must not be one of TrustedAuthservIDs.
	AuthservID string `toml:"authserv_id"`
	// NewIncidentsPerSenderPerHour and NewIncidentsPerClientPerHour are
	// the intake limits (docs/threat-model.md B7): how many new incidents
	// one envelope sender, and one SMTP client address, may open in an
	// hour; beyond, a report is refused with 450 4.7.1 and the sender's
	// MTA tries again later. Mail into an existing incident and reports
	// from committee members are never limited. The per-client limit does
	// not apply over LMTP (the client is the MTA in front, whose own rate
	// limits apply); behind an MTA relaying over SMTP, set it to 0. Unset:
	// DefaultNewIncidentsPerSender and DefaultNewIncidentsPerClient; 0: no
	// limit.
	NewIncidentsPerSenderPerHour *int `toml:"new_incidents_per_sender_per_hour"`
	NewIncidentsPerClientPerHour *int `toml:"new_incidents_per_client_per_hour"`
}

// The intake limits' defaults: far above what a project ever gets from one
// reporter or one mail server in an hour, far below a flood.
const (
	DefaultNewIncidentsPerSender = 10
	DefaultNewIncidentsPerClient = 30
)

// DefaultAcksPerDay is acks_per_day unset. Real reports come a few a
// day even to a large project's security team, and a public bug brings at
// most a few dozen: 200 holds no real reporter back outside a flood. In a
// flood of forged senders it bounds the acknowledgements to 200 a day,
// where the intake limits alone let each client address of a botnet open
// 30 incidents an hour (DefaultNewIncidentsPerClient), each acknowledged
// to a different stranger.
const DefaultAcksPerDay = 200

// AckCap is acks_per_day, its default if unset; 0: no cap.
func (i Intake) AckCap() int { return orDefaultPtr(i.AcksPerDay, DefaultAcksPerDay) }

// The values of [intake] verify.
const (
	VerifyOff = "off"
	VerifyOwn = "own"
)

// OwnVerification reports whether embargo checks senders itself
// ([intake] verify = "own").
func (i Intake) OwnVerification() bool { return i.Verify == VerifyOwn }

// OwnAuthservID is authserv_id, or the domain when it is unset.
func (c *Config) OwnAuthservID() string {
	if c.Intake.AuthservID != "" {
		return c.Intake.AuthservID
	}
	return c.Domain
}

// NewPerSender is new_incidents_per_sender_per_hour, its default if unset.
func (i Intake) NewPerSender() int {
	return orDefaultPtr(i.NewIncidentsPerSenderPerHour, DefaultNewIncidentsPerSender)
}

// NewPerClient is new_incidents_per_client_per_hour, its default if unset.
func (i Intake) NewPerClient() int {
	return orDefaultPtr(i.NewIncidentsPerClientPerHour, DefaultNewIncidentsPerClient)
}

// MinFree is smtp.min_free_bytes, its default if unset; 0 turns the check off.
func (s SMTP) MinFree() int64 {
	return orDefaultPtr(s.MinFreeBytes, smtpd.DefaultMinFreeBytes)
}

// MinDataRate is smtp.min_data_rate, its default if unset; 0 turns the
// minimum off.
func (s SMTP) MinDataRate() int64 {
	return orDefaultPtr(s.MinDataRateBytes, smtpd.DefaultMinDataRate)
}

func orDefaultPtr[T int | int64](v *T, def T) T {
	if v == nil {
		return def
	}
	return *v
}

// List is one of the three lists.
type List struct {
	Address    string `toml:"address"`
	Encryption string `toml:"encryption"` // "optional" (default for security) or "required"
	// OuterSubject is the Subject relays see on encrypted mail; the real one
	// travels inside the encryption (docs/threat-model.md D7).
	OuterSubject string `toml:"outer_subject"`
	// OneClick (announce only) gives every copy of a release its own RFC
	// 8058 one-click List-Unsubscribe URI under http.base_url, which the
	// large mailbox providers require of bulk senders. Default: on when
	// http.base_url is an https origin (RFC 8058 §3.1 wants HTTPS); see
	// Config.OneClick.
	OneClick *bool `toml:"one_click"`
}

// OneClick reports whether the announce list sends per-subscriber RFC 8058
// one-click unsubscribe URIs: lists.announce.one_click, by default on when
// http.base_url is an https origin.
func (c *Config) OneClick() bool {
	if v := c.Lists[Announce].OneClick; v != nil {
		return *v
	}
	return strings.HasPrefix(c.HTTP.BaseURL, "https://")
}

// Governance is [governance]: the roster by signed mail and the two-person
// rule (docs/design.md §1; docs/process.md §5).
type Governance struct {
	// Quorum is how many distinct SRC members must sign a roster change
	// (/member, /admit on a distributor application) and an irreversible
	// command (/disclose now, /embargo-break, /public). Default 2; 1 turns
	// the two-person rule off (a committee of one). It may not exceed the
	// number of members with the role src.
	Quorum int `toml:"quorum"`
	// LazyConsensusDays is how long a proposal stays open: a distributor
	// application with at least one approval and no /deny passes after it,
	// a /member change without its quorum lapses. Default 5.
	LazyConsensusDays int `toml:"lazy_consensus_days"`
}

// Governance defaults.
const (
	DefaultQuorum            = 2
	DefaultLazyConsensusDays = 5
	MaxLazyConsensusDays     = 60
)

// LazyConsensus is LazyConsensusDays as a duration.
func (g Governance) LazyConsensus() time.Duration {
	return time.Duration(g.LazyConsensusDays) * 24 * time.Hour
}

// Commands is [commands]: what a member's command message must be, beyond
// signed by their pinned key (docs/threat-model.md E1, E3).
type Commands struct {
	// RequireEncryption refuses every command message (incident, roster,
	// proposal and /oncall commands) that is not encrypted to the security
	// list's key as well as signed: nothing is applied and the member is told
	// how to send it again. Embargoed text then never crosses a relay in
	// clear, and another daemon, with another key, cannot read a command
	// meant for this one. Default false: members whose client only signs
	// keep working. SIGHUP applies a change.
	RequireEncryption bool `toml:"require_encryption"`
	// RequireBinding refuses every signed command message whose signed
	// text does not name this list (its address, or any +detail form of
	// it) and, for an incident's or a proposal's commands, the incident
	// (SEC-…) or proposal (GOV-…) ID: a command signed for another
	// incident, or for another project's list where the same member sits,
	// applies nothing here. A reply quoting embargo's mail names both.
	// Nothing is applied and the member is told what the text must name.
	// Default false. SIGHUP applies a change (docs/threat-model.md E3).
	RequireBinding bool `toml:"require_binding"`
}

// Channel is one outside list.
type Channel struct {
	Address    string `toml:"address"`
	SubjectTag string `toml:"subject_tag"` // default "[<project>]"
}

// Member is a person and their pinned key.
type Member struct {
	Email       string   `toml:"email"`
	Name        string   `toml:"name"`
	Roles       []string `toml:"roles"`
	Fingerprint string   `toml:"fingerprint"`
}

// Has reports whether the member holds role.
func (m Member) Has(role string) bool { return slices.Contains(m.Roles, role) }

// OnCall is [oncall]: the rotation of SRC members, one week each from
// Monday 00:00 UTC.
type OnCall struct {
	Rotation []string `toml:"rotation"` // SRC members' addresses, in order
	// Start is a day in the week of the first member's shift; zero counts
	// weeks from 1970-01-05.
	Start Date `toml:"start"`
}

// LMTP is the LMTP listener (RFC 2033) for running behind an MTA such as
// Postfix, as Mailman 3 does: the MTA takes mail from the Internet (TLS,
// rate limits, SPF and DMARC checks, its own queue) and hands the list
// addresses to embargo, which answers per recipient.
type LMTP struct {
	// Listen is "unix:/run/embargo/lmtp.sock" or "127.0.0.1:8024". Empty: no
	// LMTP listener.
	Listen string `toml:"listen"`
}

// Addr splits Listen into a network and an address.
func (l LMTP) Addr() (network, addr string) {
	if p, ok := strings.CutPrefix(l.Listen, "unix:"); ok {
		return "unix", p
	}
	return "tcp", l.Listen
}

// DKIM turns on DKIM signing of outbound mail (RFC 6376) for the list
// domain. Signing is on when Selector is set.
type DKIM struct {
	// Selector names the key in DNS: <selector>._domainkey.<domain>.
	Selector string `toml:"selector"`
	// KeyFile is the PEM private key (RSA of at least 2048 bits, or Ed25519;
	// PKCS #1 or PKCS #8), mode 0600. Default <data_dir>/keys/dkim.key, which
	// embargo generates (RSA-2048) at the first start if it does not exist.
	KeyFile string `toml:"key_file"`
}

// HTTP is the optional HTTP listener: /healthz, /metrics, WKD, RFC 8058
// one-click unsubscribe and the published advisories. An empty listen turns
// it off.
type HTTP struct {
	Listen string `toml:"listen"` // e.g. "127.0.0.1:8025"
	// BaseURL is the public origin that feeds link to, e.g.
	// "https://security.example.org" behind a reverse proxy. Default:
	// http://<the address listened on>.
	BaseURL string `toml:"base_url"`
	// MetricsFrom lists the networks that may read /metrics. Empty: loopback
	// only. Never through a proxy.
	MetricsFrom []Network `toml:"metrics_from"`
}

// CVE is [cve]: the CNA that assigns the project's CVE IDs, as the CVE JSON 5
// draft of the release names it (docs/process.md §7.9).
type CVE struct {
	// OrgID is the CNA's organisation UUID (CVE Services: `cve org`), the
	// draft's assignerOrgId and providerMetadata.orgId, which the CVE schema
	// requires.
	OrgID string `toml:"org_id"`
	// ShortName is the CNA's short name (2–32 characters).
	ShortName string `toml:"short_name"`
	// Vendor and Product name the affected product. Default: project.
	Vendor  string `toml:"vendor"`
	Product string `toml:"product"`
}

// OSV is [osv]: the OSV records the advisory archive publishes.
type OSV struct {
	// IDPrefix starts every record's id. Default "x_" + the domain's first
	// label upper-cased + "-" ("x_EXAMPLE-"): OSV's form for a local
	// database; a prefix OSV registered for the project (KUBE-) also works.
	IDPrefix string `toml:"id_prefix"`
	// Ecosystem and Package name the package the project ships through
	// ("Go", "k8s.io/kubernetes"), so that scanners match the records to
	// what is installed. Empty: the records name no package.
	Ecosystem string `toml:"ecosystem"`
	Package   string `toml:"package"`
}

// The lists embargo runs.
const (
	Security     = "security"
	Distributors = "distributors"
	Announce     = "announce"
)

// ListNames are the lists embargo runs, in the order they are reported.
func ListNames() []string { return []string{Security, Distributors, Announce} }

// Roles are the roles a member can hold.
func Roles() []string { return []string{"src", "associate", "release-manager", "distributor"} }

// Error lists every problem found, so that an operator fixes them in one pass.
type Error struct {
	Source   string
	Problems []string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.Source, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// Load reads and validates a TOML file; with path "" it reads the embedded
// development default. A configuration that does not validate is an *Error.
func Load(path string) (*Config, error) {
	data, source := defaultTOML, EmbeddedSource
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		source = path
	}
	return Parse(data, source)
}

// Parse decodes, completes with the defaults and validates a configuration.
func Parse(data []byte, source string) (*Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, &Error{Source: source, Problems: tomlProblems(err)}
	}
	c.Source = source
	if err := c.Complete(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Complete applies the defaults to a configuration built in code (as the
// drill builds its own) and validates it.
func (c *Config) Complete() error {
	c.applyDefaults()
	if probs := c.Problems(); len(probs) > 0 {
		return &Error{Source: c.Source, Problems: probs}
	}
	return nil
}

// IsEmbeddedDefault reports whether c is the development default.
func (c *Config) IsEmbeddedDefault() bool { return c.Source == EmbeddedSource }

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
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return []string{fmt.Sprintf("line %d, column %d: %s", row, col, msg)}
	}
	return []string{err.Error()}
}

// Resolve turns relative directories into absolute ones, after the command
// line's overrides.
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

// HolidayTimes returns the holidays as UTC midnights.
func (c *Config) HolidayTimes() []time.Time {
	out := make([]time.Time, 0, len(c.Holidays))
	for _, h := range c.Holidays {
		out = append(out, h.Time)
	}
	return out
}

// Member returns the member with the address addr.
func (c *Config) Member(addr string) (Member, bool) {
	for _, m := range c.Members {
		if m.Email == addr {
			return m, true
		}
	}
	return Member{}, false
}

// ListKeyPath is where a list's secret key lives: inside the data directory,
// which is 0700 and holds nothing else readable by others
// (docs/threat-model.md D10).
func (c *Config) ListKeyPath(list string) string {
	return filepath.Join(c.DataDir, "keys", list+".key.asc")
}

// DKIMKeyPath is where the DKIM key lives; "" when signing is off.
func (c *Config) DKIMKeyPath() string {
	if c.DKIM.Selector == "" {
		return ""
	}
	if c.DKIM.KeyFile != "" {
		return c.DKIM.KeyFile
	}
	return filepath.Join(c.DataDir, "keys", "dkim.key")
}
