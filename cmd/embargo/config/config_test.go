package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/smtpd"
)

func TestEmbeddedDefaultIsValid(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatalf("embedded default: %v", err)
	}
	if cfg.SMTP.Listen != "127.0.0.1:2525" || cfg.Domain != "example.test" || cfg.DataDir != "./embargo-data" {
		t.Errorf("default = %q %q %q, want 127.0.0.1:2525 example.test ./embargo-data", cfg.SMTP.Listen, cfg.Domain, cfg.DataDir)
	}
	for name, want := range map[string]string{"security": "security@example.test", "distributors": "distributors@example.test", "announce": "announce@example.test"} {
		if got := cfg.Lists[name].Address; got != want {
			t.Errorf("list %s = %q, want %q", name, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	base := "domain = \"example.org\"\n"
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error
	}{
		{"unknown top-level key", base + "dat_dir = \"/x\"\n", []string{"line 2", `unknown key "dat_dir"`}},
		{"unknown nested key", base + "[smtp]\nlisten = \"0.0.0.0:25\"\nmax_msg = 3\n", []string{"line 4", `"smtp.max_msg"`}},
		{"unknown member key", base + "[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\nfingerprnt = \"x\"\n", []string{"line 5", "fingerprnt"}},
		{"missing domain", "[smtp]\nlisten = \"127.0.0.1:25\"\n", []string{"domain is missing"}},
		{"bad listen", base + "[smtp]\nlisten = \"nope\"\n", []string{"smtp.listen", "HOST:PORT"}},
		{"bad relay scheme", base + "[relay]\nurl = \"http://x:1\"\n", []string{"relay.url", "unknown scheme"}},
		{"relay credentials in clear", base + "[relay]\nurl = \"smtp://u:p@host:25\"\n", []string{"smtp+starttls"}},
		{"plaintext to another host", base + "[relay]\nurl = \"smtp://mail.example.org:25\"\n", []string{"only for an MTA on this host"}},
		{"relative maildir", base + "[relay]\nurl = \"maildir://outbox\"\n", []string{"absolute path"}},
		{"bad member address", base + "[[members]]\nemail = \"not-an-address\"\nroles = [\"src\"]\n", []string{"not-an-address"}},
		{"unknown role", base + "[[members]]\nemail = \"a@example.org\"\nroles = [\"admin\"]\n", []string{`unknown role "admin"`, "src, associate"}},
		{"short fingerprint", base + "[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\nfingerprint = \"ABCD\"\n", []string{"40 hex digits"}},
		{"duplicate member", base + "[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n[[members]]\nemail = \"A@example.org\"\nroles = [\"src\"]\n", []string{"listed twice"}},
		{"unknown list", base + "[lists.secrity]\naddress = \"s@example.org\"\n", []string{"[lists.secrity]: unknown list"}},
		{"same address twice", base + "[lists.security]\naddress = \"x@example.org\"\n[lists.announce]\naddress = \"x@example.org\"\n", []string{"also the address"}},
		{"plaintext distributors", base + "[lists.distributors]\nencryption = \"optional\"\n", []string{`must be "required"`}},
		{"bad holiday", "domain = \"example.org\"\nholidays = [\"25/12/2026\"]\n", []string{"holidays", "25/12/2026"}},
		{"syntax error", base + "[smtp\n", []string{"line 2"}},
		{"quorum above the SRC", base + "[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n[[members]]\nemail = \"d@example.org\"\nroles = [\"distributor\"]\n",
			[]string{"governance.quorum 2 is more than the 1 member(s)", "a@example.org", "set quorum = 1"}},
		{"quorum 3 of 2", base + "[governance]\nquorum = 3\n[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n[[members]]\nemail = \"b@example.org\"\nroles = [\"src\"]\n",
			[]string{"governance.quorum 3 is more than the 2 member(s)", "a@example.org, b@example.org"}},
		{"negative quorum", base + "[governance]\nquorum = -1\n", []string{"governance.quorum -1 must be at least 1"}},
		{"lazy consensus too long", base + "[governance]\nlazy_consensus_days = 400\n", []string{"governance.lazy_consensus_days 400 is out of range"}},
		{"unknown governance key", base + "[governance]\nquorom = 2\n", []string{"governance.quorom"}},
		{"authserv-id with a space", base + "[intake]\ntrusted_authserv_ids = [\"mx.example.org 1\"]\n", []string{"intake.trusted_authserv_ids", `"mx.example.org 1" is not an authserv-id`}},
		{"empty authserv-id", base + "[intake]\ntrusted_authserv_ids = [\"\"]\n", []string{"intake.trusted_authserv_ids"}},
		{"unknown verify", base + "[intake]\nverify = \"dkim\"\n", []string{`intake.verify = "dkim"`, `"off"`, `"own"`}},
		{"own authserv-id with a semicolon", base + "[intake]\nverify = \"own\"\nauthserv_id = \"mx;x\"\n", []string{"intake.authserv_id", `"mx;x" is not an authserv-id`}},
		{"own authserv-id trusted", base + "[intake]\nverify = \"own\"\ntrusted_authserv_ids = [\"Example.org\"]\n", []string{"intake.trusted_authserv_ids names \"Example.org\"", "embargo's own authserv-id"}},
		{"negative sender limit", base + "[intake]\nnew_incidents_per_sender_per_hour = -1\n", []string{"intake.new_incidents_per_sender_per_hour = -1", "0 for no limit"}},
		{"negative free-space reserve", base + "[smtp]\nmin_free_bytes = -1\n", []string{"smtp.min_free_bytes -1 is negative", "0 for no check"}},
		{"negative data rate", base + "[smtp]\nmin_data_rate = -1\n", []string{"smtp.min_data_rate -1 is negative", "default 500", "0 for no minimum"}},
		{"in-flight budget below the message size", base + "[smtp]\nmax_inflight_bytes = 1048576\nmax_message_bytes = 2097152\n", []string{"smtp.max_inflight_bytes 1048576 is less than smtp.max_message_bytes (2097152)", "never get through"}},
		{"negative in-flight budget", base + "[smtp]\nmax_inflight_bytes = -1\n", []string{"smtp.max_inflight_bytes -1 is less than"}},
		{"negative client limit", base + "[intake]\nnew_incidents_per_client_per_hour = -5\n", []string{"intake.new_incidents_per_client_per_hour = -5"}},
		{"negative acknowledgements per sender", base + "[intake]\nacks_per_sender_per_day = -2\n", []string{"intake.acks_per_sender_per_day = -2", "e.g. 1"}},
		{"negative acknowledgement cap", base + "[intake]\nacks_per_day = -1\n", []string{"intake.acks_per_day = -1", "0 for no cap"}},
		{"unknown commands key", base + "[commands]\nrequire_encryptoin = true\n", []string{"line 3", "commands.require_encryptoin"}},
		{"require_encryption not a boolean", base + "[commands]\nrequire_encryption = \"yes\"\n", []string{"line 3", "require_encryption"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want one mentioning %q", tt.toml, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigIssueExample(t *testing.T) {
	// The schema of the foundation issue, verbatim but for relay.url: its
	// smtp://127.0.0.1:25 with listen 0.0.0.0:25 is our own listener, a loop
	// the check refuses (TestRelayLoopConfig).
	const example = `
domain   = "example.org"
data_dir = "/var/lib/embargo"
keys_dir = "/etc/embargo/keys"   # members' armored public keys, *.asc

[smtp]
listen            = "0.0.0.0:25"
max_message_bytes = 10485760

[relay]
url = "smtp+starttls://user:pass@smtp.example.net:587"      # or maildir:///path

[lists.security]
address = "security@example.org"
[lists.distributors]
address = "distributors@example.org"
[lists.announce]
address = "security-announce@example.org"

[[members]]
email       = "alice@example.org"
name        = "Alice Example"
roles       = ["src"]             # src, associate, release-manager, distributor
fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567"

[[members]]
email       = "bob@example.org"
roles       = ["src"]
fingerprint = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
`
	cfg, err := Parse([]byte(example), "example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lists["announce"].Address != "security-announce@example.org" || cfg.Members[0].Fingerprint != "0123456789ABCDEF0123456789ABCDEF01234567" {
		t.Errorf("parsed %+v", cfg)
	}
}

// TestGovernanceDefaults: quorum 2 and five days unless set; a file
// without SRC members yet (embargo init) is not refused for its quorum.
func TestGovernanceDefaults(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Governance; g.Quorum != 2 || g.LazyConsensusDays != 5 || g.LazyConsensus() != 5*24*time.Hour {
		t.Errorf("defaults %+v", g)
	}
	cfg, err = Parse([]byte("domain = \"example.org\"\n[governance]\nquorum = 1\nlazy_consensus_days = 7\n[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n"), "t.toml")
	if err != nil || cfg.Governance.Quorum != 1 || cfg.Governance.LazyConsensusDays != 7 {
		t.Errorf("set: %+v, %v", cfg, err)
	}
	if cfg, err := Load(""); err != nil || cfg.Governance.Quorum != 1 {
		t.Errorf("the development default (one member) must set quorum 1: %v", err)
	}
}

// TestCommandsRequireEncryption: [commands] require_encryption is off
// unless set (members whose client only signs keep working), and parses
// when set; the development default leaves it off.
func TestCommandsRequireEncryption(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Commands.RequireEncryption {
		t.Error("require_encryption is on by default, want off")
	}
	for _, v := range []bool{true, false} {
		cfg, err = Parse([]byte(fmt.Sprintf("domain = \"example.org\"\n[commands]\nrequire_encryption = %t\n", v)), "t.toml")
		if err != nil {
			t.Fatalf("require_encryption = %t: %v", v, err)
		}
		if cfg.Commands.RequireEncryption != v {
			t.Errorf("require_encryption = %t: parsed %+v", v, cfg.Commands)
		}
	}
	if cfg, err := Load(""); err != nil {
		t.Error(err)
	} else if cfg.Commands.RequireEncryption {
		t.Error("the development default turns require_encryption on")
	}
}

// TestCommandsRequireBinding: [commands] require_binding is off unless
// set, parses when set, refuses a value that is not a boolean, and the
// development default leaves it off.
func TestCommandsRequireBinding(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Commands.RequireBinding {
		t.Error("require_binding is on by default, want off")
	}
	for _, v := range []bool{true, false} {
		cfg, err = Parse([]byte(fmt.Sprintf("domain = \"example.org\"\n[commands]\nrequire_binding = %t\n", v)), "t.toml")
		if err != nil {
			t.Fatalf("require_binding = %t: %v", v, err)
		}
		if cfg.Commands.RequireBinding != v || cfg.Commands.RequireEncryption {
			t.Errorf("require_binding = %t: parsed %+v", v, cfg.Commands)
		}
	}
	if _, err := Parse([]byte("domain = \"example.org\"\n[commands]\nrequire_binding = \"yes\"\n"), "t.toml"); err == nil ||
		!strings.Contains(err.Error(), "require_binding") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("require_binding = \"yes\": %v, want an error naming the key and line 3", err)
	}
	if cfg, err := Load(""); err != nil {
		t.Error(err)
	} else if cfg.Commands.RequireBinding {
		t.Error("the development default turns require_binding on")
	}
}

// TestIntakeLimits: unset, the limits take their defaults; 0 turns one off
// (it is not "unset").
func TestIntakeLimits(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if s, c := cfg.Intake.NewPerSender(), cfg.Intake.NewPerClient(); s != DefaultNewIncidentsPerSender || c != DefaultNewIncidentsPerClient {
		t.Errorf("defaults: %d per sender, %d per client", s, c)
	}
	cfg, err = Parse([]byte("domain = \"example.org\"\n[intake]\nnew_incidents_per_sender_per_hour = 3\nnew_incidents_per_client_per_hour = 0\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if s, c := cfg.Intake.NewPerSender(), cfg.Intake.NewPerClient(); s != 3 || c != 0 {
		t.Errorf("set: %d per sender, %d per client; want 3 and 0 (off)", s, c)
	}
}

// TestAckCap: unset, acks_per_day is DefaultAcksPerDay; 0 turns the cap
// off (it is not "unset"); a number is taken as given.
func TestAckCap(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want int
	}{{"", DefaultAcksPerDay}, {"[intake]\nacks_per_day = 0\n", 0}, {"[intake]\nacks_per_day = 3\n", 3}} {
		cfg, err := Parse([]byte("domain = \"example.org\"\n"+tt.toml), "t.toml")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if got := cfg.Intake.AckCap(); got != tt.want {
			t.Errorf("%q: acks_per_day %d, want %d", tt.toml, got, tt.want)
		}
	}
}

// TestMinFreeBytes: unset, smtp.min_free_bytes is smtpd's default; 0 turns
// the check off, and `embargo check` warns about that and about a reserve
// below 1.5 × max_message_bytes.
func TestMinFreeBytes(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want int64
		warn string // a substring of one warning; "" for none about min_free_bytes
	}{
		{"", smtpd.DefaultMinFreeBytes, ""},
		{"[smtp]\nmin_free_bytes = 0\n", 0, "no free-space check"},
		{"[smtp]\nmin_free_bytes = 1048576\n", 1 << 20, "less than 1.5 × smtp.max_message_bytes (15728640)"},
		{"[smtp]\nmin_free_bytes = 1048576\nmax_message_bytes = 65536\n", 1 << 20, ""},
	} {
		cfg, err := Parse([]byte("domain = \"example.org\"\n"+tt.toml), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.SMTP.MinFree(); got != tt.want {
			t.Errorf("%q: MinFree() = %d, want %d", tt.toml, got, tt.want)
		}
		var warns []string
		for _, w := range cfg.Report().Warnings {
			if strings.Contains(w, "min_free_bytes") {
				warns = append(warns, w)
			}
		}
		if tt.warn == "" && len(warns) > 0 || tt.warn != "" && (len(warns) != 1 || !strings.Contains(warns[0], tt.warn)) {
			t.Errorf("%q: warnings %q, want one containing %q", tt.toml, warns, tt.warn)
		}
	}
}

// TestMinDataRate: unset, smtp.min_data_rate is smtpd's default (500 bytes/s,
// as Postfix); 0 turns the minimum off, which smtpd spells -1, and `embargo
// check` warns about it; the listener options carry the value (the daemon
// builds the LMTP listener's from the same ServerOptions).
func TestMinDataRate(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want int64 // MinDataRate()
		opt  int64 // ServerOptions().MinDataRate: smtpd takes 0 for its default, < 0 for off
		warn bool
	}{
		{"", 500, 500, false},
		{"[smtp]\nmin_data_rate = 0\n", 0, -1, true},
		{"[smtp]\nmin_data_rate = 2000\n", 2000, 2000, false},
	} {
		cfg, err := Parse([]byte("domain = \"example.org\"\n"+tt.toml), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.SMTP.MinDataRate(); got != tt.want {
			t.Errorf("%q: MinDataRate() = %d, want %d", tt.toml, got, tt.want)
		}
		if got := cfg.SMTP.ServerOptions().MinDataRate; got != tt.opt {
			t.Errorf("%q: ServerOptions().MinDataRate = %d, want %d", tt.toml, got, tt.opt)
		}
		warned := false
		for _, w := range cfg.Report().Warnings {
			warned = warned || strings.Contains(w, "smtp.min_data_rate = 0")
		}
		if warned != tt.warn {
			t.Errorf("%q: warned about min_data_rate = %v, want %v", tt.toml, warned, tt.warn)
		}
	}
}

// TestHolidaysTyped: holidays and the on-call start are dates once decoded;
// a bad one names its line and the key.
func TestHolidaysTyped(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\nholidays = [\"2026-12-24\", \"2026-12-25\"]\n"+
		"[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n[oncall]\nrotation = [\"A@example.org\"]\nstart = \"2026-01-05\"\n[governance]\nquorum = 1\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{time.Date(2026, 12, 24, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 25, 0, 0, 0, 0, time.UTC)}
	got := cfg.HolidayTimes()
	if len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) || got[0].Location() != time.UTC {
		t.Errorf("HolidayTimes() = %v, want %v", got, want)
	}
	if s := cfg.OnCall.Start.String(); s != "2026-01-05" || cfg.OnCall.Rotation[0] != "a@example.org" {
		t.Errorf("oncall = %+v", cfg.OnCall)
	}
	_, err = Parse([]byte("domain = \"example.org\"\n\nholidays = [\"2026-12-24\", \"2026-13-01\"]\n"), "t.toml")
	if err == nil || !strings.Contains(err.Error(), `line 3, column 27: holidays: "2026-13-01" is not a date like "2026-12-25"`) {
		t.Errorf("bad holiday: %v", err)
	}
}

// TestSMTPDefaultsAreSmtpd's: the configuration's defaults are the
// listener's own, so the two cannot drift apart.
func TestSMTPDefaultsAreSmtpds(t *testing.T) {
	cfg, err := Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.SMTP.ServerOptions()
	if o.MaxMessageBytes != smtpd.DefaultMaxMessageBytes || o.MaxRecipients != smtpd.DefaultMaxRecipients ||
		o.MaxLineLength != smtpd.DefaultMaxLineLength || o.ReadTimeout != smtpd.DefaultReadTimeout ||
		o.WriteTimeout != smtpd.DefaultWriteTimeout || o.MaxConnections != smtpd.DefaultMaxConnections ||
		o.MaxConnectionsPerIP != smtpd.DefaultMaxConnectionsPerIP || o.SessionLifetime != smtpd.DefaultSessionLifetime ||
		o.MaxErrors != smtpd.DefaultMaxErrors || o.MinDataRate != smtpd.DefaultMinDataRate {
		t.Errorf("ServerOptions() = %+v, want smtpd's defaults", o)
	}
}

// TestOnCallConfig: [oncall] names SRC members once each.
func TestOnCallConfig(t *testing.T) {
	base := "domain = \"ex.test\"\n[[members]]\nemail = \"alice@ex.test\"\nroles = [\"src\"]\n[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n" +
		"[[members]]\nemail = \"dist@vendor.test\"\nroles = [\"distributor\"]\n"
	for _, tt := range []struct{ oncall, want string }{
		{"rotation = [\"alice@ex.test\", \"BOB@ex.test\"]\nstart = \"2026-11-23\"\n", ""},
		{"rotation = [\"dist@vendor.test\"]\n", `"dist@vendor.test" is not a member with the role "src"`},
		{"rotation = [\"alice@ex.test\", \"alice@ex.test\"]\n", "listed twice"},
		{"rotation = [\"alice@ex.test\"]\nstart = \"monday\"\n", `oncall.start: "monday" is not a date`},
	} {
		cfg, err := Parse([]byte(base+"[oncall]\n"+tt.oncall), "t.toml")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.oncall, err)
		case tt.want == "":
			if r := cfg.OnCall.Rotation; len(r) != 2 || r[1] != "bob@ex.test" || cfg.OnCall.Start.String() != "2026-11-23" {
				t.Errorf("%q: oncall = %+v", tt.oncall, cfg.OnCall)
			}
		case err == nil || !strings.Contains(err.Error(), tt.want):
			t.Errorf("%q: error %v, want %q", tt.oncall, err, tt.want)
		}
	}
}

func TestHTTPConfig(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"valid", "[http]\nlisten = \"127.0.0.1:8025\"\nbase_url = \"https://security.example.org\"\nmetrics_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n", ""},
		{"bad listen", "[http]\nlisten = \"8025\"\n", "http.listen"},
		{"base url with a path", "[http]\nlisten = \"127.0.0.1:8025\"\nbase_url = \"https://example.org/sec\"\n", "http.base_url"},
		{"base url scheme", "[http]\nbase_url = \"ftp://example.org\"\n", "http.base_url"},
		{"metrics_from", "[http]\nmetrics_from = [\"nonsense\"]\n", "http.metrics_from"},
		{"unknown key", "[http]\nlisten = \"127.0.0.1:8025\"\nport = 1\n", "unknown key \"http.port\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte("domain = \"ex.test\"\n"+tt.toml), "test.toml")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse() = %v, want nil", err)
				}
				if p := Prefixes(cfg.HTTP.MetricsFrom); len(p) != 2 || p[0].String() != "10.0.0.0/8" || p[1].String() != "192.0.2.7/32" {
					t.Errorf("metrics_from = %v", p)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	// The development default has HTTP on.
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "127.0.0.1:8025" || !cfg.IsEmbeddedDefault() {
		t.Errorf("default http.listen = %q, want 127.0.0.1:8025", cfg.HTTP.Listen)
	}
}

// TestOneClickConfig: lists.announce.one_click defaults to on exactly when
// http.base_url is an https origin, may be turned off, and is refused where
// it cannot work, with a problem that names both keys.
func TestOneClickConfig(t *testing.T) {
	const https = "[http]\nbase_url = \"https://security.ex.test\"\n"
	tests := []struct {
		name, toml string
		want       bool
		err        []string
	}{
		{"no base_url: off", "", false, nil},
		{"https base_url: on", https, true, nil},
		{"http base_url: off", "[http]\nbase_url = \"http://127.0.0.1:8025\"\n", false, nil},
		{"explicit off", https + "[lists.announce]\none_click = false\n", false, nil},
		{"explicit on", https + "[lists.announce]\none_click = true\n", true, nil},
		{"on without base_url", "[lists.announce]\none_click = true\n", false, []string{"lists.announce.one_click = true needs http.base_url, the public https origin"}},
		{"on with an http base_url", "[http]\nbase_url = \"http://security.ex.test\"\n[lists.announce]\none_click = true\n", false,
			[]string{"lists.announce.one_click", "http.base_url", "RFC 8058"}},
		{"on another list", https + "[lists.security]\none_click = true\n", false, []string{"lists.security.one_click", "only the announce list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte("domain = \"ex.test\"\n"+tt.toml), "test.toml")
			if tt.err != nil {
				if err == nil {
					t.Fatalf("Parse() = nil, want an error naming %q", tt.err)
				}
				for _, w := range tt.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Parse() = %v, want it to name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			if got := cfg.OneClick(); got != tt.want {
				t.Errorf("OneClick() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRelayLoopConfig: a relay URL that leads back to our own SMTP or LMTP
// listener is refused, naming both keys (docs/threat-model.md B9); one on
// another port or host passes.
func TestRelayLoopConfig(t *testing.T) {
	conf := func(smtp, lmtp, relay string) string {
		s := "domain = \"example.org\"\n[smtp]\nlisten = \"" + smtp + "\"\n"
		if lmtp != "" {
			s += "[lmtp]\nlisten = \"" + lmtp + "\"\n"
		}
		return s + "[relay]\nurl = \"" + relay + "\"\n"
	}
	tests := []struct {
		name, smtp, lmtp, relay string
		key                     string // "" when it passes
	}{
		{"same address", "127.0.0.1:2525", "", "smtp://127.0.0.1:2525", "smtp.listen"},
		{"localhost for a loopback listener", "127.0.0.1:2525", "", "smtp://localhost:2525", "smtp.listen"},
		{"wildcard listener, loopback relay", "0.0.0.0:25", "", "smtp://127.0.0.1:25", "smtp.listen"},
		{"IPv6 wildcard, IPv6 loopback", "[::]:25", "", "smtp://[::1]:25", "smtp.listen"},
		{"no host, localhost", ":2525", "", "smtp://localhost:2525", "smtp.listen"},
		{"same host name over TLS", "mx.example.org:587", "", "smtp+starttls://u:p@mx.example.org:587", "smtp.listen"},
		{"LMTP port", "127.0.0.1:2525", "127.0.0.1:8024", "smtp://127.0.0.1:8024", "lmtp.listen"},
		{"LMTP wildcard", "127.0.0.1:2525", "0.0.0.0:8024", "smtp://localhost:8024", "lmtp.listen"},
		{"different port", "127.0.0.1:2525", "127.0.0.1:8024", "smtp://127.0.0.1:25", ""},
		{"other loopback address", "127.0.0.1:25", "", "smtp://127.0.0.2:25", ""},
		{"other host, same port", "0.0.0.0:587", "", "smtp+starttls://smtp.provider.example:587", ""},
		{"LMTP on a socket", "127.0.0.1:2525", "unix:/run/embargo/lmtp.sock", "smtp://127.0.0.1:25", ""},
		{"port 0", "127.0.0.1:0", "", "smtp://127.0.0.1:0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(conf(tt.smtp, tt.lmtp, tt.relay)), "test.toml")
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Parse = %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse = nil, want the relay loop refused")
			}
			for _, w := range []string{"relay.url", tt.key, "mail would loop"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), ":p@") {
				t.Errorf("Parse error = %q repeats the password", err)
			}
		})
	}
}

// TestIntakeVerify: off by default; "own" turns embargo's own checks on,
// under authserv_id or, unset, the domain.
func TestIntakeVerify(t *testing.T) {
	for _, tt := range []struct {
		toml string
		own  bool
		id   string
	}{
		{"", false, "example.org"},
		{"[intake]\nverify = \"off\"\n", false, "example.org"},
		{"[intake]\nverify = \"own\"\n", true, "example.org"},
		{"[intake]\nverify = \"own\"\nauthserv_id = \"mx.example.org\"\ntrusted_authserv_ids = [\"relay.example.org\"]\n", true, "mx.example.org"},
	} {
		cfg, err := Parse([]byte("domain = \"example.org\"\n"+tt.toml), "t.toml")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if cfg.Intake.OwnVerification() != tt.own || cfg.OwnAuthservID() != tt.id {
			t.Errorf("%q: own %v as %q; want %v as %q", tt.toml, cfg.Intake.OwnVerification(), cfg.OwnAuthservID(), tt.own, tt.id)
		}
	}
}

// TestMaxInflightBytes: unset (or 0, which is not "off"), smtp.max_inflight_bytes
// is the larger of 48 MiB and 4 × max_message_bytes, and the listener options
// carry it (docs/threat-model.md C1).
func TestMaxInflightBytes(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want int64
	}{
		{"", 48 << 20},
		{"[smtp]\nmax_inflight_bytes = 0\n", 48 << 20},
		{"[smtp]\nmax_message_bytes = 33554432\n", 128 << 20},
		{"[smtp]\nmax_inflight_bytes = 20971520\n", 20 << 20},
		{"[smtp]\nmax_inflight_bytes = 10485760\n", 10 << 20},
	} {
		cfg, err := Parse([]byte("domain = \"example.org\"\n"+tt.toml), "t.toml")
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if got := cfg.SMTP.MaxInflightBytes; got != tt.want {
			t.Errorf("%q: max_inflight_bytes = %d, want %d", tt.toml, got, tt.want)
		}
		if got := cfg.SMTP.ServerOptions().MaxInflightBytes; got != tt.want {
			t.Errorf("%q: ServerOptions().MaxInflightBytes = %d, want %d", tt.toml, got, tt.want)
		}
	}
}
