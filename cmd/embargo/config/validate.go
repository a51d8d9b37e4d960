package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/embargo-project/embargo/smtpd"
)

var (
	ldhDomain   = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
	dotAtom     = regexp.MustCompile(`^[A-Za-z0-9!#$&'*+/=?^_` + "`" + `{|}~-]+(\.[A-Za-z0-9!#$&'*+/=?^_` + "`" + `{|}~-]+)*$`)
	fingerprint = regexp.MustCompile(`^([0-9A-F]{40}|[0-9A-F]{64})$`)
	dnsLabels   = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

// ValidDomain reports whether d is a domain name of letters, digits, hyphens
// and dots, with at least two labels.
func ValidDomain(d string) bool { return ldhDomain.MatchString(d) }

// validAddress is the strict form of docs/threat-model.md B3: one @, a
// dot-atom local part, an LDH domain.
func validAddress(a string) bool {
	local, domain, ok := strings.Cut(a, "@")
	return ok && dotAtom.MatchString(local) && ldhDomain.MatchString(domain) && !strings.Contains(local, "%")
}

// problems collects sentences for an operator.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Problems lists everything wrong with c, each with how to fix it; nil when
// c is valid. Parse and Load return them as an *Error.
func (c *Config) Problems() []string {
	var p problems
	if c.Domain == "" {
		p.add(`domain is missing: set domain = "example.org" (the domain of the list addresses)`)
	} else if !ldhDomain.MatchString(c.Domain) {
		p.add("domain %q is not a valid domain name: use letters, digits, hyphens and dots, e.g. \"example.org\"", c.Domain)
	}
	c.validateSMTP(&p)
	if c.Relay.URL != "" {
		if _, err := ParseRelayURL(c.Relay.URL); err != nil {
			p.add("relay.url: %v", err)
		}
		c.validateRelayLoop(&p)
	}
	c.validateLists(&p)
	for i, ch := range c.Channels {
		if !validAddress(strings.ToLower(ch.Address)) {
			p.add("channels[%d]: address %q is not a plain address like \"oss-security@lists.openwall.com\"", i, ch.Address)
		}
		if strings.ContainsAny(ch.SubjectTag, "\r\n") {
			p.add("channels[%d]: subject_tag must be one line", i)
		}
	}
	c.validateMembers(&p)
	c.validateGovernance(&p)
	c.validateOnCall(&p)
	for _, id := range c.Intake.TrustedAuthservIDs {
		if id == "" || strings.ContainsAny(id, " \t\r\n;()\"=") {
			p.add("intake.trusted_authserv_ids: %q is not an authserv-id: give the name the MTA writes first in its Authentication-Results fields, e.g. \"mx.example.org\"", id)
		}
	}
	c.validateVerify(&p)
	for _, l := range []struct {
		key string
		v   *int
	}{{"new_incidents_per_sender_per_hour", c.Intake.NewIncidentsPerSenderPerHour}, {"new_incidents_per_client_per_hour", c.Intake.NewIncidentsPerClientPerHour}} {
		if l.v != nil && *l.v < 0 {
			p.add("intake.%s = %d: give a number of new incidents per hour, or 0 for no limit", l.key, *l.v)
		}
	}
	if v := c.Intake.AcksPerSenderPerDay; v < 0 {
		// A negative limit would hold back every acknowledgement, silently.
		p.add("intake.acks_per_sender_per_day = %d: give the acknowledgements to one address in 24 hours, e.g. 1", v)
	}
	if v := c.Intake.AcksPerDay; v != nil && *v < 0 {
		p.add("intake.acks_per_day = %d: give the acknowledgements to all addresses together in 24 hours, e.g. %d, or 0 for no cap", *v, DefaultAcksPerDay)
	}
	c.validateLMTP(&p)
	c.validateDKIM(&p)
	c.validateHTTP(&p)
	c.validateRecords(&p)
	return p
}

func (c *Config) validateSMTP(p *problems) {
	s := c.SMTP
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		p.add("smtp.listen %q is not HOST:PORT, e.g. \"0.0.0.0:25\"", s.Listen)
	}
	if s.MaxMessageBytes < 1024 {
		p.add("smtp.max_message_bytes %d is too small: use at least 1024 (default 10485760)", s.MaxMessageBytes)
	}
	if s.MaxInflightBytes < s.MaxMessageBytes {
		// Also a negative value: there is no "off" (docs/threat-model.md C1).
		p.add("smtp.max_inflight_bytes %d is less than smtp.max_message_bytes (%d): a message of the largest size could never get through; give at least that, or leave it out for the larger of %d and %d × max_message_bytes",
			s.MaxInflightBytes, s.MaxMessageBytes, smtpd.DefaultMaxInflightBytes, smtpd.DefaultInflightMessages)
	}
	if s.MaxRecipients < 1 || s.MaxRecipients > 1000 {
		p.add("smtp.max_recipients %d is out of range 1–1000 (default 10)", s.MaxRecipients)
	}
	if s.MinFree() < 0 {
		p.add("smtp.min_free_bytes %d is negative: give the bytes data_dir's file system keeps free (default %d), or 0 for no check", s.MinFree(), smtpd.DefaultMinFreeBytes)
	}
	if s.MinDataRate() < 0 {
		p.add("smtp.min_data_rate %d is negative: give the bytes per second a DATA or BDAT transfer must average after its first %v (default %d), or 0 for no minimum", s.MinDataRate(), smtpd.DefaultDataRateGrace, smtpd.DefaultMinDataRate)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		p.add("smtp.tls_cert and smtp.tls_key go together: set both (PEM files) to offer STARTTLS, or neither")
	}
}

func (c *Config) validateLists(p *problems) {
	names := ListNames()
	for name := range c.Lists {
		if !slices.Contains(names, name) {
			p.add("[lists.%s]: unknown list; the lists are %s", name, strings.Join(names, ", "))
		}
	}
	seen := map[string]string{}
	for _, name := range names {
		l := c.Lists[name]
		if !validAddress(l.Address) {
			p.add("lists.%s.address %q is not a plain address like \"%s@example.org\"", name, l.Address, name)
		} else if other, dup := seen[l.Address]; dup {
			p.add("lists.%s.address %q is also the address of list %s: each list needs its own", name, l.Address, other)
		}
		if strings.Contains(strings.SplitN(l.Address, "@", 2)[0], "+") {
			p.add("lists.%s.address %q must not contain '+': embargo uses sub-addresses like %s+subscribe@", name, l.Address, name)
		}
		seen[l.Address] = name
		if strings.ContainsAny(l.OuterSubject, "\r\n") || len(l.OuterSubject) > 200 {
			p.add("lists.%s.outer_subject must be one line of at most 200 characters", name)
		}
		if l.Encryption != "optional" && l.Encryption != "required" {
			p.add("lists.%s.encryption %q must be \"optional\" or \"required\"", name, l.Encryption)
		}
		if l.OneClick != nil && name != Announce {
			p.add("lists.%s.one_click: only the announce list has one-click unsubscribe; remove the key", name)
		}
	}
	if oc := c.Lists[Announce].OneClick; oc != nil && *oc {
		switch base := c.HTTP.BaseURL; {
		case base == "":
			p.add(`lists.announce.one_click = true needs http.base_url, the public https origin of the unsubscribe links (e.g. "https://security.example.org"): set http.base_url, or one_click = false`)
		case !strings.HasPrefix(base, "https://"):
			p.add("lists.announce.one_click = true needs an https http.base_url (RFC 8058 §3.1), not %q: put a TLS reverse proxy in front and name its https origin, or set one_click = false", base)
		}
	}
	if c.Lists[Distributors].Encryption != "required" {
		p.add(`lists.distributors.encryption must be "required": embargoed notices never leave in plaintext`)
	}
}

func (c *Config) validateMembers(p *problems) {
	roles := Roles()
	members := map[string]bool{}
	for i, m := range c.Members {
		where := fmt.Sprintf("members[%d]", i)
		if m.Email != "" {
			where = fmt.Sprintf("member %s", m.Email)
		}
		if !validAddress(m.Email) {
			p.add("%s: email %q is not a plain address like \"alice@example.org\"", where, m.Email)
		}
		if members[m.Email] {
			p.add("%s: listed twice; merge the two [[members]] entries and list all roles in one", where)
		}
		members[m.Email] = true
		if len(m.Roles) == 0 {
			p.add("%s: roles is empty; give one or more of %s", where, strings.Join(roles, ", "))
		}
		for _, r := range m.Roles {
			if !slices.Contains(roles, r) {
				p.add("%s: unknown role %q; the roles are %s", where, r, strings.Join(roles, ", "))
			}
		}
		if m.Fingerprint != "" && !fingerprint.MatchString(m.Fingerprint) {
			p.add("%s: fingerprint %q must be the full primary key fingerprint, 40 hex digits (v4) or 64 (v6): see `gpg --with-colons --fingerprint %s`", where, m.Fingerprint, m.Email)
		}
	}
}

// validateGovernance checks [governance] against the file's committee: a
// quorum no committee can reach would make every roster change and every
// irreversible command impossible. A file without any SRC member yet (what
// `embargo init` writes) is left to the report's warning.
func (c *Config) validateGovernance(p *problems) {
	g := c.Governance
	var src []string
	for _, m := range c.Members {
		if m.Has("src") {
			src = append(src, m.Email)
		}
	}
	switch {
	case g.Quorum < 1:
		p.add("governance.quorum %d must be at least 1 (1 turns the two-person rule off; default 2)", g.Quorum)
	case len(src) > 0 && g.Quorum > len(src):
		p.add("governance.quorum %d is more than the %d member(s) with the role \"src\" (%s): no change could ever pass; add SRC members or set quorum = %d",
			g.Quorum, len(src), strings.Join(src, ", "), len(src))
	}
	if g.LazyConsensusDays < 1 || g.LazyConsensusDays > MaxLazyConsensusDays {
		p.add("governance.lazy_consensus_days %d is out of range 1–%d (default %d)", g.LazyConsensusDays, MaxLazyConsensusDays, DefaultLazyConsensusDays)
	}
}

func (c *Config) validateOnCall(p *problems) {
	seen := map[string]bool{}
	for _, a := range c.OnCall.Rotation {
		m, ok := c.Member(a)
		switch {
		case !ok || !m.Has("src"):
			p.add("oncall.rotation: %q is not a member with the role \"src\": list [[members]] emails with roles = [\"src\"]", a)
		case seen[a]:
			p.add("oncall.rotation: %q is listed twice; each member takes one week of the rotation", a)
		}
		seen[a] = true
	}
}

func (c *Config) validateLMTP(p *problems) {
	l := c.LMTP.Listen
	if l == "" {
		return
	}
	network, addr := c.LMTP.Addr()
	if network == "unix" {
		if !filepath.IsAbs(addr) {
			p.add("lmtp.listen %q: a unix socket needs an absolute path, e.g. \"unix:/run/embargo/lmtp.sock\"", l)
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add("lmtp.listen %q is neither \"unix:/path/to/socket\" nor HOST:PORT, e.g. \"127.0.0.1:8024\"", l)
		return
	}
	if l == c.SMTP.Listen && port != "0" {
		p.add("lmtp.listen %q is also smtp.listen: give LMTP its own port (Mailman 3 uses 8024)", l)
	}
}

func (c *Config) validateDKIM(p *problems) {
	d := c.DKIM
	if d.Selector == "" {
		if d.KeyFile != "" {
			p.add(`dkim.key_file is set but dkim.selector is not: set selector = "embargo" to sign, or remove the [dkim] table`)
		}
		return
	}
	if !dnsLabels.MatchString(d.Selector) {
		p.add("dkim.selector %q is not a DNS label: use letters, digits and hyphens, e.g. \"embargo\" or \"embargo2026\"", d.Selector)
	}
	if d.KeyFile != "" && !filepath.IsAbs(d.KeyFile) {
		p.add("dkim.key_file %q must be an absolute path", d.KeyFile)
	}
}

func (c *Config) validateHTTP(p *problems) {
	h := c.HTTP
	if h.Listen != "" {
		if _, _, err := net.SplitHostPort(h.Listen); err != nil {
			p.add("http.listen %q is not HOST:PORT, e.g. \"127.0.0.1:8025\" (or leave it empty to turn HTTP off)", h.Listen)
		}
	}
	if h.BaseURL != "" {
		u, err := url.Parse(h.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
			p.add("http.base_url %q must be an origin like \"https://security.example.org\": scheme and host, no path", h.BaseURL)
		}
	}
}

// validateVerify checks [intake] verify and authserv_id.
func (c *Config) validateVerify(p *problems) {
	switch c.Intake.Verify {
	case "", VerifyOff, VerifyOwn:
	default:
		p.add("intake.verify = %q: give \"off\" (believe only trusted_authserv_ids) or \"own\" (embargo checks DKIM, SPF and DMARC itself, when it is the MX)", c.Intake.Verify)
	}
	id := c.Intake.AuthservID
	if id != "" && strings.ContainsAny(id, " \t\r\n;()\"=\\") {
		p.add("intake.authserv_id: %q is not an authserv-id: give a host name such as \"mx.example.org\" (default: the domain)", id)
	}
	if !c.Intake.OwnVerification() {
		return
	}
	own := c.OwnAuthservID()
	for _, t := range c.Intake.TrustedAuthservIDs {
		if strings.EqualFold(strings.TrimSuffix(t, "."), strings.TrimSuffix(own, ".")) {
			p.add("intake.trusted_authserv_ids names %q, which is also embargo's own authserv-id (intake.authserv_id, default the domain): a field under that name could then come from either; give embargo's own results another name", t)
		}
	}
}
