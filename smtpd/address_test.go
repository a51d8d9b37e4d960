package smtpd

import (
	"strings"
	"testing"
)

func TestParseRecipient(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = refused
	}{
		{"security@ex.org", "security@ex.org"},
		{"SECURITY@EX.ORG", "SECURITY@ex.org"},
		{"first.last+tag@sub.ex.org", "first.last+tag@sub.ex.org"},
		{"a#$&'*+-/=?^_`{|}~z@ex.org", "a#$&'*+-/=?^_`{|}~z@ex.org"},
		{"x@a-b.ex-1.org", "x@a-b.ex-1.org"},
		{"x@ex.o1", "x@ex.o1"},

		// docs/threat-model.md B3, as go-smtp hands them over.
		{"security@ex.org@evil.com", ""}, // from <"security@ex.org"@evil.com> and <security@ex.org@evil.com>
		{"security%evil.com@ex.org", ""},
		{"evil.com!security@ex.org", ""},
		{"security@ex.org.", ""},
		{"security@[192.0.2.1]", ""},
		{"security@[IPv6:2001:db8::1]", ""},
		{"security@192.0.2.1", ""},
		{"\u0455ecurity@ex.org", ""},                     // Cyrillic dze
		{"security@\u0435x.org", ""},                     // Cyrillic ie
		{"secur\u200bity@ex.org", ""},                    // zero-width space
		{"security@ex.org\u202e", ""},                    // bidi override
		{"security\xff@ex.org", ""},                      // invalid UTF-8
		{"security@xn--x-1.org", "security@xn--x-1.org"}, // A-labels are plain LDH

		// Plain syntax.
		{"", ""},
		{"@ex.org", ""},
		{"security@", ""},
		{"security", ""},
		{"security@localhost", ""},
		{".security@ex.org", ""},
		{"security.@ex.org", ""},
		{"sec..urity@ex.org", ""},
		{"sec urity@ex.org", ""},
		{"sec\"urity@ex.org", ""},
		{"sec\\urity@ex.org", ""},
		{"sec(urity)@ex.org", ""},
		{"security@ex..org", ""},
		{"security@.ex.org", ""},
		{"security@-ex.org", ""},
		{"security@ex-.org", ""},
		{"security@ex_1.org", ""},
		{"security@ex.org:25", ""},
		{"security\r\n@ex.org", ""},
		{"security\x00@ex.org", ""},
		{strings.Repeat("a", 64) + "@ex.org", strings.Repeat("a", 64) + "@ex.org"},
		{strings.Repeat("a", 65) + "@ex.org", ""},
		{"a@" + strings.Repeat("b", 63) + ".org", "a@" + strings.Repeat("b", 63) + ".org"},
		{"a@" + strings.Repeat("b", 64) + ".org", ""},
		{"a@" + strings.Repeat("b.", 125) + "org", ""}, // 255 octets: over the 254 limit
	}
	for _, tc := range tests {
		got, err := parseRecipient(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseRecipient(%q) = %q, want refusal", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRecipient(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSender(t *testing.T) {
	tests := []struct {
		in       string
		smtputf8 bool
		want     string
		ok       bool
	}{
		{"", false, "", true},
		{"a@b.test", false, "a@b.test", true},
		{"A@B.Test", false, "A@b.test", true},
		{"bounce+x=y%z!w@lists.ex.org", false, "bounce+x=y%z!w@lists.ex.org", true},
		{"a@[192.0.2.1]", false, "a@[192.0.2.1]", true},
		{"a@[IPv6:2001:db8::1]", false, "a@[IPv6:2001:db8::1]", true},
		{"j\u00fcrgen@b\u00fccher.test", true, "j\u00fcrgen@b\u00fccher.test", true},

		{"j\u00fcrgen@b.test", false, "", false},
		{"a\u202e@b.test", true, "", false},
		{"a@b\u200b.test", true, "", false},
		{"a@b", false, "", false},
		{"a b@c.test", false, "", false},
		{"a@b@c.test", false, "", false},
		{"a@[300.0.0.1]", false, "", false},
		{"a@[IPv6:192.0.2.1]", false, "", false},
		{"a@[192.0.2.1", false, "", false},
		{"a@b.test\r\n", false, "", false},
	}
	for _, tc := range tests {
		got, err := parseSender(tc.in, tc.smtputf8)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSender(%q, %v) = %q, %v, want %q, ok %v", tc.in, tc.smtputf8, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"security@ex.org", "security@ex.org@evil.com", "\u0455ecurity@ex.org", "a.b@c-d.e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseRecipient(in)
		if err != nil {
			return
		}
		// Whatever is accepted is plain ASCII dot-atom@ldh with one @ and survives a
		// second pass unchanged.
		if !isASCII(got) || strings.Count(got, "@") != 1 || strings.ContainsAny(got, "%!\"[] \r\n\\") {
			t.Fatalf("parseRecipient(%q) = %q: not a plain address", in, got)
		}
		if again, err := parseRecipient(got); err != nil || again != got {
			t.Fatalf("parseRecipient(%q) = %q, %v; not stable", got, again, err)
		}
	})
}
