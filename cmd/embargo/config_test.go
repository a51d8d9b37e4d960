package main

import (
	"strings"
	"testing"
)

func TestEmbeddedDefaultIsValid(t *testing.T) {
	cfg, err := LoadConfig("")
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("ParseConfig(%q) = nil error, want one mentioning %q", tt.toml, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseConfig error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigIssueExample(t *testing.T) {
	// The schema of the foundation issue, verbatim.
	const example = `
domain   = "example.org"
data_dir = "/var/lib/embargo"
keys_dir = "/etc/embargo/keys"   # members' armored public keys, *.asc

[smtp]
listen            = "0.0.0.0:25"
max_message_bytes = 10485760

[relay]
url = "smtp://127.0.0.1:25"      # smtp+starttls://user:pass@host:587, or maildir:///path

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
`
	cfg, err := ParseConfig([]byte(example), "example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lists["announce"].Address != "security-announce@example.org" || cfg.Members[0].Fingerprint != "0123456789ABCDEF0123456789ABCDEF01234567" {
		t.Errorf("parsed %+v", cfg)
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good.toml"
	bad := dir + "/bad.toml"
	writeFile(t, good, "domain = \"example.org\"\n[[members]]\nemail = \"a@example.org\"\nroles = [\"src\"]\n")
	writeFile(t, bad, "domain = \"example.org\"\nbogus = 1\n")
	var out, errb strings.Builder
	if code := run([]string{"check", "--config", good}, &out, &errb); code != 0 {
		t.Errorf("check good config: exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "configuration is valid") {
		t.Errorf("check output %q", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--config", bad}, &out, &errb); code != 1 {
		t.Errorf("check bad config: exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), `line 2: unknown key "bogus"`) {
		t.Errorf("check bad config stderr = %q", errb.String())
	}
}
