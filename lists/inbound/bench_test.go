package inbound

import (
	"testing"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/workflow"
)

// BenchmarkOpen measures opening a signed and encrypted Thunderbird reply
// once, against the path the daemon took before: parse, IsEncrypted,
// Decrypt, parse the decrypted entity, parse the signed entity again for
// the commands, parse the commands.
func BenchmarkOpen(b *testing.B) {
	f := newFixture(b)
	g, list := f.g, f.list
	raw := mail(g.encryptPGPMIME(list.Fingerprint(), f.alice, "enc", f.tbPart(tbAboveQuote, "Re: x")), outer("...")...)
	o := Options{ListKey: list, Members: f.members}

	b.Run("once", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := Open(raw, o)
			if err != nil || !m.Signature().OK() || !m.HasCommands() {
				b.Fatal(err)
			}
		}
	})
	b.Run("before", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := message.Parse(raw, o.Limits); err != nil {
				b.Fatal(err)
			}
			if !keys.IsEncrypted(raw) {
				b.Fatal("not encrypted")
			}
			d, err := keys.Decrypt(raw, list, f.members, keys.Options{})
			if err != nil || d.Signature == nil {
				b.Fatal(err)
			}
			if _, err := message.Parse(d.Inner, o.Limits); err != nil {
				b.Fatal(err)
			}
			in, err := message.Parse(d.Signature.Entity, o.Limits)
			if err != nil {
				b.Fatal(err)
			}
			if cmds, err := workflow.Parse(in.Text); err != nil || len(cmds) == 0 {
				b.Fatal(err)
			}
		}
	})
}
