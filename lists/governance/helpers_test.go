package governance

import (
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Monday 2026-11-23 09:00 UTC: the fake clock.
var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func fpr(c byte) string { return strings.Repeat(string(c), 40) }

var file = []lists.Member{
	{Email: "alice@ex.org", Name: "Alice", Roles: []string{"src"}, Fingerprint: fpr('A')},
	{Email: "bob@ex.org", Roles: []string{"src"}, Fingerprint: fpr('B')},
	{Email: "dave@ex.org", Roles: []string{"src"}, Fingerprint: fpr('D')},
	{Email: "ann@ex.org", Roles: []string{"associate"}, Fingerprint: fpr('C')},
	{Email: "security@old-distro.test", Roles: []string{"distributor"}, Fingerprint: fpr('E')},
}

var cfg = Config{Quorum: 2, File: file}

// key is a usable key for addr.
func key(c byte, addr string) KeyVerdict {
	return KeyVerdict{Fingerprint: fpr(c), UserIDs: []string{"Someone <" + addr + ">"}, Algorithm: "ed25519", Created: t0.AddDate(-1, 0, 0),
		Expires: t0.AddDate(1, 0, 0), Armored: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n" + fpr(c) + "\n-----END PGP PUBLIC KEY BLOCK-----"}
}

// signer is the signature of the file member with key c, made at.
func signer(c byte, at time.Time) workflow.Signer {
	return workflow.Signer{Fingerprint: fpr(c), SignedAt: at}
}

const applicationText = `Hello,

we would like to join.

Alias: security@new-distro.test
Product: New Distro
Vouched-By: security@old-distro.test
Maintained: releases every month since 2019,
  see https://new-distro.test/releases
Users: 40,000 installs outside our company
Record: https://new-distro.test/security
Not-A-Rebuild: our own kernel and packaging
Community: we maintain two upstream packages
Embargo: we accept the embargo and its terms
Contributes: we review patches and report test results

-- 
New Distro security team
`

func submission() Submission {
	return Submission{From: "Person@New-Distro.test", Text: applicationText, Keys: []KeyVerdict{key('1', "security@new-distro.test")}, Signed: true,
		MessageID: "app-1@new-distro.test", RootMsg: "root-1@ex.org"}
}

// apply runs text as the member with key c at now, failing on error.
func apply(t *testing.T, st State, text string, c byte, now time.Time, thread string, keys ...KeyVerdict) Result {
	t.Helper()
	r, err := Apply(st, Request{Text: text, Signer: signer(c, now), Thread: thread, Keys: keys, MessageID: "m@ex.org", RootMsg: "root@ex.org"}, now, cfg)
	if err != nil {
		t.Fatalf("Apply(%q) by %c: %v\n%s", text, c, err, r.Receipt.Text())
	}
	return r
}

func kinds(as []Action) []string {
	var out []string
	for _, a := range as {
		s := a.Kind()
		if m, ok := a.(Mail); ok {
			switch {
			case m.ToSRC:
				s += "→src"
			case m.CCSRC:
				s += "→" + m.To + "+src"
			default:
				s += "→" + m.To
			}
		}
		out = append(out, s)
	}
	return out
}

func findMail(as []Action, template string) (Mail, bool) {
	for _, a := range as {
		if m, ok := a.(Mail); ok && m.Template == template {
			return m, true
		}
	}
	return Mail{}, false
}

func member(st State, addr string) (Entry, bool) { return lookup(Effective(file, st), addr) }
